"""Schedules: a hyperparameter as a pure function of the step count.

A schedule is a callable `schedule(count) -> float`, where count is the number
of updates done before this one (0 for the first step, as optax counts). Any
hyperparameter of an optimizer may be a schedule (usually `lr`). They are
evaluated on the host, in float64, once per step, and the value is passed to
the compiled step as a runtime input: a schedule is ordinary Python (any
callable works, user-written ones too), costs well under a microsecond per
step, and neither a schedule nor a change of one ever recompiles the step.

    lr = schedules.warmup(schedules.cosine(1e-3, total_steps=900), steps=100)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

Schedule = Callable[[int], float]
Value = Union[float, Schedule]  # a hyperparameter: a number or a schedule


def value_at(value: Value, count: int) -> float:
    """A hyperparameter's value at step count (a number is constant)."""
    return float(value(count)) if callable(value) else value


def _check_steps(schedule: str, name: str, value) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{schedule} schedule: {name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class step:  # noqa: N801 - a schedule is named like a function
    """init · gamma^⌊count / step_size⌋ (torch's StepLR)."""

    init: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        _check_steps("step", "step_size", self.step_size)

    def __call__(self, count: int) -> float:
        return self.init * self.gamma ** (count // self.step_size)


@dataclass(frozen=True)
class exponential:  # noqa: N801
    """init · gamma^count (torch's ExponentialLR)."""

    init: float
    gamma: float

    def __call__(self, count: int) -> float:
        return self.init * self.gamma ** count


@dataclass(frozen=True)
class cosine:  # noqa: N801
    """final + (init - final) · (1 + cos(π · min(count, total_steps) / total_steps)) / 2
    (torch's CosineAnnealingLR with eta_min=final, held at final after total_steps)."""

    init: float
    total_steps: int
    final: float = 0.0

    def __post_init__(self):
        _check_steps("cosine", "total_steps", self.total_steps)

    def __call__(self, count: int) -> float:
        progress = min(count, self.total_steps) / self.total_steps
        return self.final + (self.init - self.final) * (1 + math.cos(math.pi * progress)) / 2


@dataclass(frozen=True)
class warmup:  # noqa: N801
    """Linear warmup, then `after`: start + (after(0) - start) · count / steps for count <
    steps, then after(count - steps) (a number for `after` is a constant)."""

    after: Value
    steps: int
    start: float = 0.0

    def __post_init__(self):
        _check_steps("warmup", "steps", self.steps)

    def __call__(self, count: int) -> float:
        if count < self.steps:
            return self.start + (value_at(self.after, 0) - self.start) * count / self.steps
        return value_at(self.after, count - self.steps)
