"""Data parallelism under torchrun: process group, rank-0-only side effects, gradient averaging.

`torchrun --nproc-per-node N -m harness run ...` starts N processes. Each trains the same stage on
its shard of every batch (the method's global batch split N ways, so the paper's batch size is
kept). Every rank evaluates its share of the samples (`EvalGroup`, harness.metrics.sharding);
rank 0 alone writes the run directory (run.json, metrics.jsonl, checkpoints, samples).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as tdist
import torch.distributed.distributed_c10d as c10d

from harness.errors import ConfigError, LostRankError

# An evaluation's first reference extraction and its metrics run on rank 0 while the others wait in a
# collective: on a slow machine far longer than torch's default 10-minute timeout.
TIMEOUT_S = float(os.environ.get("HARNESS_DIST_TIMEOUT_S", str(6 * 3600)))


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. The defaults are a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        # codecarbon runs once per node (local rank 0); the nodes' totals are summed whenever the ranks
        # checkpoint together
        return max(1, self.world // max(1, self.local_world))


SINGLE = Dist()


def from_env(env: dict[str, str] | None = None) -> Dist:
    """The layout torchrun (or Slurm + torchrun) gives this process, from its environment."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", 0))
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise ConfigError("WORLD_SIZE / RANK / LOCAL_RANK / LOCAL_WORLD_SIZE must be integers "
                          "(start multi-process runs with torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return Dist(rank, world, local_rank, local_world)


def init(d: Dist, device: torch.device) -> torch.device:
    """Join the process group; returns this process's device (cuda:LOCAL_RANK on GPUs). The backend
    is NCCL on GPUs and gloo on the CPU (the path the tests run)."""
    if not d.enabled:
        return device
    if device.type == "cuda":
        if torch.cuda.device_count() < d.local_world:
            raise ConfigError(f"torchrun started {d.local_world} processes on this node but it has "
                              f"{torch.cuda.device_count()} CUDA devices")
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not tdist.is_initialized():
        tdist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
        with _peers():
            _ADDRESSES[:] = all_gather_object(d, _address())
    return device


# --- a lost peer ----------------------------------------------------------------------------------
_ADDRESSES: list[str] = []  # each rank's address, as its peers reach it (gathered once, at init)
_PEER = re.compile(r"\[([0-9A-Fa-f.:]+)\]:\d+")  # gloo names the peer it lost: "... peer [10.0.0.2]:41234"


def _address() -> str:
    """This process's address towards rank 0 (MASTER_ADDR), the one its peers connect to: the source
    address the kernel chooses for a (never sent) UDP packet there."""
    master = os.environ.get("MASTER_ADDR", "127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((master, int(os.environ.get("MASTER_PORT", "29500"))))
            return s.getsockname()[0]
    except (OSError, ValueError):
        return socket.gethostname()


def lost_ranks(message: str, me: int, addresses: list[str]) -> list[int]:
    """The ranks a collective's error names (by the address gloo reports), this one excepted; every
    other rank where it names none (NCCL, a timeout)."""
    named = set(_PEER.findall(message))
    ranks = [r for r, a in enumerate(addresses) if a in named and r != me]
    return ranks or [r for r in range(len(addresses)) if r != me]


@contextlib.contextmanager
def _peers() -> Iterator[None]:
    """A collective that fails because a peer died (its process killed, its node lost) raises
    LostRankError naming it, instead of the backend's multi-line error; no rank hangs on it."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed.DistBackendError and gloo's errors are RuntimeErrors
        me = tdist.get_rank() if tdist.is_initialized() else 0
        text = " ".join(str(e).split())
        ranks = lost_ranks(text, me, _ADDRESSES)
        where = ", ".join(f"rank {r}" + (f" ({_ADDRESSES[r]})" if r < len(_ADDRESSES) else "") for r in ranks) \
            or "another rank"
        cause = next((c for c in ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out",
                                  "Broken pipe", "Connection refused") if c in text), text[:120])
        raise LostRankError(f"rank {me} lost {where}: its process or node stopped ({cause}); start every node "
                            f"again with --resume to continue from the last checkpoint") from None


def shutdown(clean: bool = True) -> None:
    """Leave the process group. `clean`: every rank got here normally, so wait for all of them
    first: a rank that exits while another is still finishing its last collective makes gloo's
    background thread abort the other ("terminate called without an active exception")."""
    if tdist.is_available() and tdist.is_initialized():
        store, world = None, tdist.get_world_size()
        if clean:
            with _peers():
                tdist.barrier()
            store = c10d._get_default_store()
        tdist.destroy_process_group()
        if store is not None:  # nor may one exit while another still tears its group down (seen with 4 ranks)
            _all_left(store, world)


def _all_left(store: Any, world: int, timeout_s: float = 60.0) -> None:
    """Wait (bounded) until every rank has destroyed its process group, counted in the job's store."""
    key = f"harness/left/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    deadline = time.monotonic() + timeout_s
    try:
        left = store.add(key, 1)
        while left < world and time.monotonic() < deadline:
            time.sleep(0.01)
            left = store.add(key, 0)
    except RuntimeError:  # the store's host (the agent, or rank 0) is gone: nothing left to wait for
        pass


def barrier(d: Dist) -> None:
    if d.enabled:
        with _peers():
            tdist.barrier()


def broadcast_object(d: Dist, obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable objects only)."""
    if not d.enabled:
        return obj
    box = [obj]
    with _peers():
        tdist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(d: Dist, obj: Any) -> list[Any]:
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    with _peers():
        tdist.all_gather_object(out, obj)
    return out


def gather_object(d: Dist, obj: Any) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (rank order), None on the others: what rank 0 alone needs."""
    if not d.enabled:
        return [obj]
    out: list[Any] | None = [None] * d.world if d.main else None
    with _peers():
        tdist.gather_object(obj, out, dst=0)
    return out


@dataclass(frozen=True)
class EvalGroup:
    """The job's processes as one evaluation's group (harness.metrics.sharding.EvalGroup): each draws
    and featurises its share of the samples, rank 0 gathers them and computes the metrics."""

    dist: Dist

    @property
    def rank(self) -> int:
        return self.dist.rank

    @property
    def world(self) -> int:
        return self.dist.world

    def gather(self, obj: Any) -> list[Any] | None:
        return gather_object(self.dist, obj)

    def broadcast(self, obj: Any) -> Any:
        return broadcast_object(self.dist, obj)


# --- gradients ------------------------------------------------------------------------------------
def _coalesced(tensors: list[torch.Tensor], op) -> None:
    """Apply a collective `op(flat)` to tensors grouped by (device, dtype), one flat buffer each."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for ts in groups.values():
        flat = torch.cat([t.reshape(-1) for t in ts])
        op(flat)
        offset = 0
        for t in ts:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def average_gradients(params: Iterable[torch.nn.Parameter], world: int) -> None:
    """Replace every existing gradient by its mean over the process group."""
    grads = [p.grad for p in params if p.grad is not None]
    if any(g.is_sparse for g in grads):
        raise RuntimeError("sparse gradients are not supported in data-parallel runs")

    def reduce(flat: torch.Tensor) -> None:
        with _peers():
            tdist.all_reduce(flat)
        flat.div_(world)

    _coalesced(grads, reduce)


def broadcast_module(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    tensors = [t.data for t in module.parameters()] + [b for b in module.buffers()]
    with _peers():
        _coalesced([t for t in tensors if t.numel() > 0], lambda flat: tdist.broadcast(flat, src=0))


def attach(d: Dist, stage: Any) -> list[Any]:
    """Make a built (and possibly resumed) stage data-parallel: broadcast rank 0's weights of the
    stage's `modules()` to all ranks and average gradients before each of its `optimizers()`
    steps. Returns the hook handles."""
    if not d.enabled:
        return []
    modules, optims = stage.modules(), stage.optimizers()
    if not optims:
        raise ConfigError(f"stage {stage.name} declares no optimiser (Stage.optimizers()); "
                          f"it cannot train data-parallel")
    # at every stage start, so every process holds the same weights, fresh or resumed. BatchNorm statistics
    # then stay per process (as DDP without SyncBatchNorm); rank 0's are the ones checkpointed and evaluated.
    for m in modules:
        broadcast_module(m)
    # A pre-step hook, not DistributedDataParallel: a GAN step runs G and D through several forward/backward
    # passes with parameters frozen and unfrozen in between, which DDP's reducer handles only with
    # `find_unused_parameters` and static-graph caveats; StyleGAN2-ADA averages gradients by hand for the
    # same reason. The price is no overlap of communication with the backward pass.
    handles = []
    for opt in optims:
        params = [p for g in opt.param_groups for p in g["params"]]
        handles.append(opt.register_step_pre_hook(
            lambda _opt, _args, _kwargs, params=params: average_gradients(params, d.world)))
    return handles


# --- the per-step agreement -----------------------------------------------------------------------
@dataclass
class StepAgreement:
    elapsed: float  # rank 0's training clock
    checkpoint_due: bool  # rank 0's wall-clock checkpoint timer
    signum: int | None  # a signal any rank received (SIGTERM wins over SIGHUP, SIGHUP over SIGINT)
    losses: dict[str, float]  # mean over ranks; non-finite if any rank's is


def agree(d: Dist, device: torch.device, elapsed: float, checkpoint_due: bool, signum: int | None,
          losses: dict[str, float]) -> StepAgreement:
    """One all-reduce that makes every rank take the same decisions at a step boundary: it carries rank
    0's clock and checkpoint decision, every rank's signals and every rank's losses, so all processes
    stop, evaluate and checkpoint on the same step and a loss non-finite on any rank is non-finite on all."""
    keys = sorted(losses)
    if not d.enabled:
        return StepAgreement(elapsed, checkpoint_due, signum, {k: float(losses[k]) for k in keys})
    main = 1.0 if d.main else 0.0
    where = device if device.type == "cuda" else "cpu"
    head = torch.tensor([elapsed * main, float(checkpoint_due) * main, float(signum == signal.SIGINT),
                         float(signum == signal.SIGTERM), float(signum == signal.SIGHUP)],
                        dtype=torch.float64, device=where)
    # losses may be device tensors: joined on the device, read with the rest in the one transfer below
    vec = torch.cat([head] + [torch.as_tensor(losses[k]).detach().to(where, torch.float64).reshape(1) for k in keys])
    with _peers():
        tdist.all_reduce(vec)
    v = vec.tolist()
    got = signal.SIGTERM if v[3] > 0 else signal.SIGHUP if v[4] > 0 else signal.SIGINT if v[2] > 0 else None
    return StepAgreement(v[0], v[1] > 0, got, {k: x / d.world for k, x in zip(keys, v[5:])})
