"""The data-parallel side of a training step: the communicator, the gradient reduction
the trace gets, and the check that every rank compiled the same program."""
from __future__ import annotations

import hashlib
import os
import sys
import time
import traceback

import numpy as np

from ..ir.collectives import register_group
from ..ir.printer import print_graph
from .buckets import DEFAULT_BUCKET_BYTES, reduce_gradients

ABORT_GRACE_SECONDS = 0.5


class ProgramMismatch(RuntimeError):
    """The ranks of a data-parallel job compiled different training steps."""


def world():
    """MPI.COMM_WORLD (mpi4py imported now: ffcompile itself does not need it)."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("data-parallel training needs mpi4py and an MPI library: "
                          "pip install 'ffcompile[distributed]' (mpi4py and the mpich wheel)") from exc
    return MPI.COMM_WORLD


class MPIGroup:
    """An mpi4py communicator as a communication group of the all_reduce op (ir/collectives.py)."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.comm = comm
        self.size, self.rank = comm.Get_size(), comm.Get_rank()
        self._in_place, self._sum, self._max = MPI.IN_PLACE, MPI.SUM, MPI.MAX

    def start(self, buffer):
        return self.comm.Iallreduce(self._in_place, buffer, op=self._sum)

    def wait(self, request) -> None:
        request.Wait()

    def same_everywhere(self, word: np.ndarray) -> bool:
        """Whether every rank passed the same int64 word (one blocking all-reduce of two)."""
        both = np.array([word[0], -word[0]], np.int64)
        self.comm.Allreduce(self._in_place, both, op=self._max)
        return both[0] == -both[1]


_GROUPS: dict[int, MPIGroup] = {}  # id(comm) -> its group, one per communicator


class DataParallel:
    """compile_train_step(..., data_parallel=DataParallel(comm, bucket_bytes)); a bare
    communicator (or True: COMM_WORLD) gets the default bucket size."""

    def __init__(self, comm=None, bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        comm = world() if comm is None or comm is True else comm
        if not hasattr(comm, "Iallreduce"):
            raise TypeError(f"data_parallel: expected an mpi4py communicator (or True for COMM_WORLD), "
                            f"got {type(comm).__name__}")
        if id(comm) not in _GROUPS:
            _GROUPS[id(comm)] = MPIGroup(comm)
        self.comm = comm
        self._group = _GROUPS[id(comm)]
        self.group = register_group(self._group)
        self.bucket_bytes = bucket_bytes
        # id(executable) -> (the executable, its traced program as text, hashed to an int64)
        self._programs: dict[int, tuple[object, str, np.ndarray]] = {}
        abort_on_uncaught_error()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def reduce(self, grads):
        """The gradients (traced) averaged over the ranks: the step's all_reduce ops."""
        return reduce_gradients(grads, self.group, self.bucket_bytes)

    def agree(self, executable, lowered) -> None:
        """Before each call's collectives: raise ProgramMismatch on every rank unless every
        rank runs the same program (one all-reduce of its hash: a rank whose batch changed
        shape alone at step 1,000 is caught too). lowered() gives executable's Lowered,
        traced once per executable; the hash leaves out source locations, so ranks started
        from different directories agree."""
        known = self._programs.get(id(executable))
        if known is None or known[0] is not executable:
            lowered = lowered()
            signature = ", ".join(f"{name}: {t}" for name, t in zip(lowered.names, lowered.graph.input_types))
            text = f"// arguments: {signature}\n" + print_graph(lowered.graph, locs=False)
            digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little", signed=True)
            known = self._programs[id(executable)] = (executable, text, np.array([digest], np.int64))
        if not self._group.same_everywhere(known[2]):
            texts = self.comm.allgather(known[1])
            raise ProgramMismatch(_mismatch_message(texts, self.comm.Get_rank()))


def _mismatch_message(texts: list[str], rank: int) -> str:
    """Where rank 0's program and the first rank whose program differs part: their
    arguments (the text's first line), or the first IR line that differs."""
    first = next(r for r, text in enumerate(texts) if text != texts[0])
    a, b = texts[0].splitlines(), texts[first].splitlines()
    lines = [f"data_parallel: the ranks compiled different training steps (this is rank {rank}); "
             f"no collective of this step ran. Rank 0 and rank {first} differ:"]
    if a[0] != b[0]:
        lines += [f"  rank 0 {a[0][3:]}", f"  rank {first} {b[0][3:]}"]
    else:
        at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        lines += [f"  same argument types, different programs (model, loss or optimizer) at IR line {at}:",
                  f"  rank 0: {a[at] if at < len(a) else '<end>'}",
                  f"  rank {first}: {b[at] if at < len(b) else '<end>'}"]
    return "\n".join(lines)


def abort_on_uncaught_error() -> None:
    """Make an uncaught exception on this rank print its traceback and abort the whole job
    (MPI_Abort on COMM_WORLD, exit code 1) instead of leaving the other ranks waiting in a
    collective (mpi4py's `python -m mpi4py script.py` does the same)."""
    if getattr(sys.excepthook, "ffcompile_aborts", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        if previous is sys.__excepthook__:  # one write: the launcher's proxy forwards it whole
            os.write(2, "".join(traceback.format_exception(kind, value, tb)).encode())
        else:
            previous(kind, value, tb)
            sys.stderr.flush()
        # Abort tears the job down at once: give the proxy time to forward the traceback
        # first (without it, under load the job's stderr was seen cut after "Traceback").
        time.sleep(ABORT_GRACE_SECONDS)
        world().Abort(1)

    hook.ffcompile_aborts = True
    sys.excepthook = hook
