"""The scaling model (ffcompile/distributed/scaling.py): the ring all-reduce's α–β cost, the
overlap of buckets with the kernels after them, and examples/scaling_study.py's table."""
import importlib.util
import pathlib
import sys

import pytest

from ffcompile.distributed.scaling import Network, Timeline, predict

NET = Network("test", latency=1.0, bandwidth=10.0)


def test_ring_all_reduce_cost():
    assert NET.all_reduce(1, 1000) == 0.0
    assert NET.all_reduce(2, 100) == pytest.approx(2 * 1 * 1.0 + 2 * 0.5 * 100 / 10.0)  # 2 + 10
    assert NET.all_reduce(4, 100) == pytest.approx(2 * 3 * 1.0 + 2 * 0.75 * 100 / 10.0)  # 6 + 15


def test_a_bucket_overlaps_the_kernels_until_its_reader():
    # kernels: 0 backward, 1 collective (starts after 2 s), 2 backward (5 s), 3 update (reads it)
    timeline = Timeline((1.0, 1.0, 5.0, 1.0), {1: 20}, {1: 3})
    hidden = predict(timeline, 2, NET)  # all-reduce 2 + 2 = 4 s, done at 6 s < 7 s: all hidden
    assert hidden.communication == pytest.approx(4.0)
    assert hidden.step == pytest.approx(8.0) and hidden.hidden == pytest.approx(1.0)
    exposed = predict(timeline, 2, Network("slow", 1.0, 1.0))  # 2 + 20 = 22 s: done at 24 s
    assert exposed.step == pytest.approx(24.0 + 1.0)
    assert exposed.exposed == pytest.approx(17.0) and exposed.efficiency == pytest.approx(8.0 / 25.0)


def test_buckets_share_one_link_in_order():
    # two collectives back to back: the second starts when the first is done
    timeline = Timeline((1.0, 0.0, 0.0, 1.0, 1.0), {1: 0, 2: 0}, {1: 3, 2: 4})
    p = predict(timeline, 2, NET)  # each all-reduce 2 s: done at 3 s and 5 s
    assert p.step == pytest.approx(max(3.0 + 1.0, 5.0) + 1.0)


def test_scaling_study_prints_the_table(capsys, tmp_path):
    pytest.importorskip("mpi4py", reason="the study profiles a data-parallel step (pip install 'ffcompile[distributed]')")
    pytest.importorskip("matplotlib", reason="the study draws its plot with matplotlib")
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "scaling_study.py"
    spec = importlib.util.spec_from_file_location("scaling_study", path)
    study = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = study
    spec.loader.exec_module(study)
    study.main(["--model", "digits", "--plot", str(tmp_path / "scaling.png")])
    out = capsys.readouterr().out
    assert "digits: 64 examples per rank" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == study.RANKS
    efficiencies = [float(r[-1].rstrip("%")) for r in rows]
    assert efficiencies == sorted(efficiencies, reverse=True)  # more ranks, more latency to pay
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
