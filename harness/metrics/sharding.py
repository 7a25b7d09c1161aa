"""An evaluation split over the processes of a torchrun job: chunk k of the samples is drawn and
its features extracted on rank k % world, the features gathered on rank 0 in chunk order (so the
result equals one process's), rank 0 computes the metrics and every rank receives them.

The group is the engine's (harness.engine.distributed.EvalGroup: NCCL on GPUs, gloo on CPUs); a
plain process is its own group of one. A failure on any rank stops every rank with its message.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, TypeVar

from harness import errors

T = TypeVar("T")


class EvalGroup(Protocol):
    """The processes that share an evaluation."""

    rank: int
    world: int

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` on rank 0, in rank order; None on the other ranks."""

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""


@dataclass(frozen=True)
class OneProcess:
    rank: int = 0
    world: int = 1

    def gather(self, obj: Any) -> list[Any]:
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        return obj


ONE_PROCESS = OneProcess()


def failure(e: BaseException) -> tuple[str, str]:
    """What a rank tells the others of its failure: a HarnessError's kind and message, else a bug's."""
    if isinstance(e, errors.HarnessError):
        return type(e).__name__, str(e)
    return "HarnessError", f"{type(e).__name__}: {e}"


def raise_failure(rank: int, kind: str, message: str) -> None:
    error = getattr(errors, kind, errors.HarnessError)
    raise error(message if rank == 0 else f"rank {rank}: {message}")


def agree(group: EvalGroup, errors_seen: list[tuple[int, str, str]] | None) -> None:
    """Rank 0 tells every rank the first failure it knows of ((rank, kind, message): one it gathered,
    or its own), and every rank raises it; with none, every rank goes on. One broadcast."""
    verdict = group.broadcast(errors_seen[0] if errors_seen else None)
    if verdict is not None:
        raise_failure(*verdict)


def on_rank0(group: EvalGroup, work: Callable[[], T]) -> T:
    """`work()` on rank 0, its result (picklable) on every rank; its failure raised on every rank."""
    if group.world == 1:
        return work()
    verdict = None
    if group.rank == 0:
        try:
            verdict = ("ok", work())
        except Exception as e:  # every rank must leave the collective below, then fail alike
            group.broadcast(("error", *failure(e)))
            raise
    verdict = group.broadcast(verdict)
    if verdict[0] == "error":
        raise_failure(0, *verdict[1:])
    return verdict[1]
