"""The batch stream the loop trains on: seeded epoch permutations, resumable position.

Order depends only on (seed, epoch), so a resumed run draws exactly the batches the
uninterrupted run would have drawn. The last partial batch of an epoch is dropped, as the
papers' PyTorch loaders do (`drop_last=True`). In a data-parallel run every process walks the same
permutation and takes its own contiguous slice of each global batch (`shard=(rank, world)`).
"""
from __future__ import annotations

import numpy as np
import torch

from harness.data import ImageDataset
from harness.errors import DataError


class BatchStream:
    def __init__(self, dataset: ImageDataset, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 shard: tuple[int, int] = (0, 1)):
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
        self.pos = 0  # index of the next batch within the epoch
        self._perm: np.ndarray | None = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size

    @property
    def epochs_done(self) -> float:
        """Epochs completed, as a float: 2.5 = half-way through the third epoch."""
        return self.epoch + self.pos / self.batches_per_epoch

    def _permutation(self) -> np.ndarray:
        if self._perm is None:
            self._perm = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.dataset))
        return self._perm

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's part of the next batch as ((B / world, 3, R, R) uint8, (B / world,) int64)
        on the stream's device."""
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos, self._perm = self.epoch + 1, 0, None
        rank, world = self.shard
        per = self.batch_size // world
        start = self.pos * self.batch_size + rank * per
        idx = self._permutation()[start:start + per]
        self.pos += 1
        images, labels = self.dataset.images(idx)
        if self.device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos, self._perm = int(state["epoch"]), int(state["pos"]), None
