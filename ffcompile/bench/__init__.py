"""The benchmark harness: ffcompile and its peers (hand NumPy, PyTorch, JAX) timed
side by side on zoo workloads or a model file (benchmarks/README.md).

Not imported by `import ffcompile`; `ffcompile bench`, `python -m ffcompile.bench`
and `python -m benchmarks.mlp` run `harness.main` or `harness.run`.
"""
