"""How a compiled function's call maps onto the arrays its program takes.

Positional arrays pass as they are. Keyword arguments are bound to the
function's signature (as Python would) and pass as arrays too. Static
arguments (`static_argnums`, `static_argnames`, as in jax.jit) are Python
values the function branches on: they are not inputs of the program but part
of what selects it, so each distinct (hashable) value traces its own program.

`split(args, kwargs)` gives the dynamic arguments as one positional tuple and
the *variant*: which parameters were given by keyword and the static values.
`traced_function(variant)` is the function of the dynamic arguments alone
that the tracer runs; it carries parameter names, so IR inputs read like the
user's code.
"""
from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

from .runtime import ArgumentError


class Variant(NamedTuple):
    positional: int  # how many arguments were given by position (statics among them)
    keywords: tuple[str, ...]  # dynamic arguments given by keyword, in call order
    statics: tuple[tuple[int | str, object], ...]  # (position or name, value)


class CallingConvention:
    def __init__(self, fn: Callable, static_argnums=(), static_argnames=()):
        self.fn = fn
        self.name = getattr(fn, "__name__", "fn")
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin or a callable without one
            self.signature = None
        nums = {static_argnums} if isinstance(static_argnums, int) else set(static_argnums)
        names = {static_argnames} if isinstance(static_argnames, str) else set(static_argnames)
        positional = self._positional_names()
        for n in list(nums):  # each static parameter is static by position and by name
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"{self.name}: static_argnums must be non-negative ints, got {static_argnums!r}")
            if n < len(positional):
                names.add(positional[n])
        for name in list(names):
            if name in positional:
                nums.add(positional.index(name))
            elif self.signature is not None and name not in self.signature.parameters:
                raise ValueError(f"{self.name}: static_argnames names {name!r}, which is no parameter")
        self.static_nums, self.static_names = frozenset(nums), frozenset(names)
        self.statics = bool(nums or names)
        self._traced: dict[Variant, Callable] = {}

    def _positional_names(self) -> list[str]:
        if self.signature is None:
            return []
        P = inspect.Parameter
        return [p.name for p in self.signature.parameters.values()
                if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]

    def split(self, args: tuple, kwargs: dict) -> tuple[tuple, Variant]:
        """(dynamic arguments, variant) of a call."""
        if kwargs:
            if self.signature is None:
                raise ArgumentError(f"{self.name}: keyword arguments need a function with a signature")
            try:
                bound = self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise ArgumentError(f"{self.name}: {exc}") from None
            positional, keywords = bound.args, dict(bound.kwargs)
        else:
            positional, keywords = args, {}
        statics = [(k, a) for k, a in enumerate(positional) if k in self.static_nums]
        statics += [(name, keywords.pop(name)) for name in list(keywords) if name in self.static_names]
        for where, value in statics:
            try:
                hash(value)
            except TypeError:
                raise ArgumentError(f"{self.name}: static argument {where!r} must be hashable, "
                                    f"got {type(value).__name__}") from None
        dynamic = tuple(a for k, a in enumerate(positional) if k not in self.static_nums)
        return dynamic + tuple(keywords.values()), Variant(len(positional), tuple(keywords), tuple(statics))

    @staticmethod
    def positions(dynamic: tuple, variant: Variant | None) -> tuple[list[int | None], int]:
        """(the position among fn's positional arguments of each dynamic argument, None for a
        keyword-only one; how many positional arguments the call has, statics among them)."""
        if variant is None:
            return list(range(len(dynamic))), len(dynamic)
        static = {k for k, _ in variant.statics if isinstance(k, int)}
        kept = [k for k in range(variant.positional) if k not in static]
        return kept + [None] * (len(dynamic) - len(kept)), variant.positional

    def traced_function(self, variant: Variant | None) -> Callable:
        """fn as a function of the dynamic arguments alone (variant None: fn itself)."""
        if variant is None:
            return self.fn
        if variant not in self._traced:
            self._traced[variant] = self._function_of(variant)
        return self._traced[variant]

    def _function_of(self, variant: Variant) -> Callable:
        fn, static = self.fn, dict(variant.statics)
        positions = [k for k in range(variant.positional) if k not in static]

        def call(*dynamic):
            args = list(dynamic[:len(positions)])
            for k in sorted(k for k in static if isinstance(k, int)):
                args.insert(k, static[k])
            keywords = dict(zip(variant.keywords, dynamic[len(positions):]))
            keywords.update({name: v for name, v in static.items() if isinstance(name, str)})
            return fn(*args, **keywords)

        names = self._positional_names()
        P = inspect.Parameter
        call.__signature__ = inspect.Signature(
            [P(names[k] if k < len(names) else f"arg{k}", P.POSITIONAL_ONLY) for k in positions]
            + [P(name, P.POSITIONAL_ONLY) for name in variant.keywords])
        call.__name__ = self.name
        return call
