"""The inference table script (ffcompile/bench/infer_table.py) runs end to end and writes the
README's table; no timing is asserted."""
import importlib.util
from pathlib import Path

import pytest

from ffcompile.bench import infer_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_holds_the_generated_table_between_its_markers():
    text = README.read_text()
    start, end = text.index(infer_table.MARKERS[0]), text.index(infer_table.MARKERS[1])
    section = text[start:end]
    assert "| model | batch | ffcompile bound 1 thr | onnxruntime 1 thr |" in section
    for batch in infer_table.BATCHES:
        assert f"| mnist | {batch} |" in section


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime is not installed")
def test_the_script_measures_every_contender_and_writes_between_the_markers(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{infer_table.MARKERS[0]}\nold table\n{infer_table.MARKERS[1]}\nafter\n")
    assert infer_table.main(["--model", "xor", "--batches", "1,3", "--calls", "4", "--rounds", "2",
                             "--readme", str(readme)]) == 0
    printed = capsys.readouterr().out
    written = readme.read_text()
    assert written.startswith(f"before\n{infer_table.MARKERS[0]}\n") and written.endswith(
        f"{infer_table.MARKERS[1]}\nafter\n") and "old table" not in written
    rows = [line for line in written.splitlines() if line.startswith("| xor |")]
    assert [row.split("|")[2].strip() for row in rows] == ["1", "3"] and rows[0] in printed
    for row in rows:  # every contender that is installed ran: a number in every cell but the floor's
        cells = [c.strip().strip("*") for c in row.split("|")[3:-2]]
        assert all(c == "n/a" or float(c) > 0 for c in cells) and cells[:2] != ["n/a", "n/a"]


def test_a_readme_without_the_markers_is_refused(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no section\n")
    with pytest.raises(ValueError, match="INFER_TABLE"):
        infer_table.write_readme(str(readme), "table")
