"""The data-parallel side of a training step: the communicator, the gradient reduction
the trace gets, and the check that every rank compiled the same program."""
from __future__ import annotations

import hashlib
import sys

from ..ir.collectives import register_group
from .buckets import DEFAULT_BUCKET_BYTES, reduce_gradients


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
        self._in_place, self._sum = MPI.IN_PLACE, MPI.SUM

    def start(self, buffer):
        return self.comm.Iallreduce(self._in_place, buffer, op=self._sum)

    def wait(self, request) -> None:
        request.Wait()


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
        self.group = register_group(_GROUPS[id(comm)])
        self.bucket_bytes = bucket_bytes
        self._agreed: set[int] = set()  # id of each executable whose program every rank shares
        abort_on_uncaught_error()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def reduce(self, grads):
        """The gradients (traced) averaged over the ranks: the step's all_reduce ops."""
        return reduce_gradients(grads, self.group, self.bucket_bytes)

    def agree_once(self, executable, lowered) -> None:
        """Before executable's first collective: raise ProgramMismatch on every rank unless
        every rank compiled the same program. lowered() gives its Lowered (traced on use)."""
        if id(executable) in self._agreed:
            return
        lowered = lowered()
        text = str(lowered.graph)
        digest = hashlib.sha256(text.encode()).hexdigest()
        signature = ", ".join(f"{name}: {t}" for name, t in zip(lowered.names, lowered.graph.input_types))
        everyone = self.comm.allgather((digest, signature))
        if len({d for d, _ in everyone}) > 1:
            texts = self.comm.allgather(text)
            raise ProgramMismatch(_mismatch_message(everyone, texts, self.comm.Get_rank()))
        self._agreed.add(id(executable))


def _mismatch_message(everyone, texts, rank: int) -> str:
    first = next(r for r, (d, _) in enumerate(everyone) if d != everyone[0][0])
    lines = [f"data_parallel: the ranks compiled different training steps (this is rank {rank}); "
             f"no collective ran. Rank 0 and rank {first} differ:"]
    if everyone[0][1] != everyone[first][1]:
        lines += [f"  rank 0 arguments: {everyone[0][1]}", f"  rank {first} arguments: {everyone[first][1]}"]
    else:
        a, b = texts[0].splitlines(), texts[first].splitlines()
        at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        lines += ["  same argument types, different programs (model, loss or optimizer) at IR line "
                  f"{at + 1}:", f"  rank 0:      {a[at] if at < len(a) else '<end>'}",
                  f"  rank {first}: {' ' * max(0, 5 - len(str(first)))}{b[at] if at < len(b) else '<end>'}"]
    return "\n".join(lines)


def abort_on_uncaught_error() -> None:
    """Make an uncaught exception on this rank print its traceback and abort the whole job
    (MPI_Abort on COMM_WORLD, exit code 1) instead of leaving the other ranks waiting in a
    collective (mpi4py's `python -m mpi4py script.py` does the same)."""
    if getattr(sys.excepthook, "ffcompile_aborts", False):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        world().Abort(1)

    hook.ffcompile_aborts = True
    sys.excepthook = hook
