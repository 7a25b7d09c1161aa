"""The batch stream the loop trains on: seeded epoch permutations, resumable position.

Order depends only on (seed, epoch), so a resumed run draws exactly the batches the
uninterrupted run would have drawn. The last partial batch of an epoch is dropped, as the
papers' PyTorch loaders do (`drop_last=True`). In a data-parallel run every process walks the same
permutation and takes its own contiguous slice of each global batch (`shard=(rank, world)`).

With `workers > 0`, the next `workers` batches are read (or, for `shapes`, rendered) by a thread
pool while the current step runs; numpy releases the GIL in the rendering and memmap copies, so
the threads overlap with training and with each other. Which batch comes next still depends only on
(seed, epoch, position): prefetching changes when a batch is made, never which, and the state saved
in a checkpoint is the position of the last batch handed out, not of the last one prefetched.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

from harness.data import ImageDataset
from harness.errors import DataError


def default_workers(device: torch.device, processes: int = 1, cores: int | None = None) -> int:
    """Prefetch threads: one on a CPU (training already uses every core it may), up to eight of the
    `cores` this process may use (default: the machine's) per process on a GPU (where the
    embedded data's rendering would be the bottleneck)."""
    if torch.device(device).type != "cuda":
        return 1
    return max(1, min(8, (cores or os.cpu_count() or 2) // max(1, processes)))


class BatchStream:
    def __init__(self, dataset: ImageDataset, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 shard: tuple[int, int] = (0, 1), workers: int = 0):
        if batch_size < 1:
            raise DataError(f"batch size must be positive, got {batch_size}")
        rank, world = shard
        if batch_size % world:
            raise DataError(f"the batch of {batch_size} images does not split evenly over {world} processes")
        if len(dataset) < batch_size:
            raise DataError(
                f"{dataset.name}/{dataset.split} has {len(dataset)} images, fewer than one batch of {batch_size}"
            )
        self.dataset = dataset
        self.batch_size = batch_size  # global: all processes together
        self.shard = (rank, world)
        self.seed = seed
        self.device = torch.device(device)
        self.epoch = 0
        self.pos = 0  # index of the next batch handed out, within the epoch
        self.workers = max(0, int(workers))
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: deque[Future] = deque()  # batches in flight, in order
        self._cursor = (0, 0)  # (epoch, pos) of the next batch to submit
        self._perms: dict[int, np.ndarray] = {}

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    @property
    def epochs_done(self) -> float:
        """Epochs completed, as a float: 2.5 = half-way through the third epoch."""
        return self.epoch + self.pos / self.batches_per_epoch

    def _indices(self, epoch: int, pos: int) -> np.ndarray:
        """This process's dataset indices for batch `pos` of `epoch`."""
        if epoch not in self._perms:
            self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 1}
            self._perms[epoch] = np.random.default_rng((self.seed, epoch)).permutation(len(self.dataset))
        rank, world = self.shard
        per = self.batch_size // world
        start = pos * self.batch_size + rank * per
        return self._perms[epoch][start:start + per]

    def _advance(self, epoch: int, pos: int) -> tuple[int, int]:
        """(epoch, pos) of the batch after (epoch, pos)."""
        return (epoch + 1, 0) if pos + 1 >= self.batches_per_epoch else (epoch, pos + 1)

    def _read(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs in the prefetch threads: it touches nothing of the stream but the dataset."""
        images, labels = self.dataset.images(idx)
        if self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        return images, labels

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of the next batch as ((B / world, 3, R, R) uint8, (B / world,) int64)
        on the stream's device."""
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
        if self.workers == 0:
            images, labels = self._read(self._indices(self.epoch, self.pos))
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="harness-data")
                self._cursor = (self.epoch, self.pos)
            self._submit(1)  # the batch wanted now (in flight already, but on the first call)
            images, labels = self._ahead.popleft().result()
        if self.device.type != "cpu":
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if self.workers:
            # `workers` more in flight, submitted only now: a thread started earlier holds the GIL
            # while this one waits to take it back from the calls above (~3 ms a step on a CPU)
            self._submit(self.workers)
        self.pos += 1
        return images, labels

    def _submit(self, in_flight: int) -> None:
        while len(self._ahead) < in_flight:
            self._ahead.append(self._pool.submit(self._read, self._indices(*self._cursor)))
            self._cursor = self._advance(*self._cursor)

    def close(self) -> None:
        """Stop prefetching (batches in flight are dropped; the position is unchanged)."""
        for f in self._ahead:
            f.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
