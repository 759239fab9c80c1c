"""A model of a data-parallel step's time on N ranks: per-kernel compute times (from
`ffcompile profile`), the α–β cost of a ring all-reduce per bucket, and the overlap the
schedule allows (examples/scaling_study.py, docs/distributed.md).

A ring all-reduce of n bytes over N ranks sends 2(N-1) messages of n/N bytes each way:
    T(N, n) = 2 (N-1) α + 2 (N-1)/N · n / bandwidth
(Thakur, Rabenseifner and Gropp 2005; what NCCL and gloo's ring do). The step runs its
kernels in schedule order on one core; a bucket's all-reduce starts when its collective
kernel has run, once the link has finished the bucket before (one link, buckets in
order), and the first kernel that reads the bucket waits until it is done. What the
backward pass does not hide is the waiting.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..passes.schedule import KernelKind, Schedule


@dataclass(frozen=True)
class Network:
    name: str
    latency: float  # α, seconds per message
    bandwidth: float  # bytes per second each way (1/β)

    def all_reduce(self, ranks: int, nbytes: int) -> float:
        """Seconds of a ring all-reduce of nbytes over ranks."""
        if ranks <= 1:
            return 0.0
        return 2 * (ranks - 1) * self.latency + 2 * (ranks - 1) / ranks * nbytes / self.bandwidth


@dataclass(frozen=True)
class Timeline:
    """A step's kernels in schedule order: their seconds, each collective's bucket bytes, and
    the first kernel that reads each collective's bucket."""

    seconds: tuple[float, ...]
    buckets: dict[int, int]  # collective kernel -> bytes
    first_reader: dict[int, int]  # collective kernel -> kernel that waits for it
    overhead: float = 0.0  # seconds per step outside the kernels (the call from Python)

    @staticmethod
    def of(schedule: Schedule, seconds, overhead: float = 0.0) -> "Timeline":
        nodes, kernels = schedule.graph.nodes, schedule.kernels
        buckets = {k: nodes[kernel.body[-1]].type.nbytes for k, kernel in enumerate(kernels)
                   if kernel.kind == KernelKind.COLLECTIVE}
        first_reader = {}
        for c in buckets:
            out = kernels[c].body[-1]
            first_reader[c] = next(k for k in range(c + 1, len(kernels))
                                   if any(schedule.root(j) == out for j in kernels[k].inputs))
        return Timeline(tuple(seconds), buckets, first_reader, overhead)


@dataclass(frozen=True)
class Prediction:
    ranks: int
    compute: float  # seconds of the step without communication: kernels and overhead
    communication: float  # seconds of all the all-reduces, back to back
    step: float  # predicted step: compute plus the waiting the overlap leaves

    @property
    def exposed(self) -> float:
        return self.step - self.compute

    @property
    def efficiency(self) -> float:
        """Weak scaling (each rank's batch fixed): the step without communication over the step."""
        return self.compute / self.step

    @property
    def hidden(self) -> float:
        """Share of the communication the backward pass hides."""
        return min(1.0, max(0.0, 1.0 - self.exposed / self.communication)) if self.communication else 1.0


def predict(timeline: Timeline, ranks: int, network: Network) -> Prediction:
    done_at: dict[int, float] = {}  # collective -> when its all-reduce ends
    waits_for: dict[int, list[int]] = {}  # kernel -> the collectives it is the first reader of
    for c, reader in timeline.first_reader.items():
        waits_for.setdefault(reader, []).append(c)
    clock = link_free = communication = 0.0
    for k, seconds in enumerate(timeline.seconds):
        clock = max([clock, *(done_at[c] for c in waits_for.get(k, ()))])
        clock += seconds
        if k in timeline.buckets:
            cost = network.all_reduce(ranks, timeline.buckets[k])
            link_free = max(clock, link_free) + cost
            done_at[k] = link_free
            communication += cost
    return Prediction(ranks, sum(timeline.seconds) + timeline.overhead, communication,
                      max([clock, *done_at.values()]) + timeline.overhead)
