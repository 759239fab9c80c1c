"""LLVM backend: host target and JIT (target), IR helpers (cgutils), vectorizable math (mathlib)."""
