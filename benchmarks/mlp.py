"""`python -m benchmarks.mlp ...`, the harness's historical entry point: the harness
itself lives in the ffcompile.bench package, so the installed `ffcompile bench`
command can import it."""
import sys

from ffcompile.bench.harness import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks.mlp"))
