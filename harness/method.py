"""The contract between the engine and a method: a Method is a list of Stages the loop trains.

A stage is anything the loop trains on its own budget share: `nsbgan` has `decoder-l1`,
`decoder-l2` and `sampler`; `dcgan` has one stage, `gan`. The loop owns time, data order,
checkpoints, energy and logging; the stage owns models, optimisers and what one step does.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from harness.data import ImageDataset
    from harness.metrics.scorer import ImageScorer


@dataclass
class Batch:
    """One training batch and where training stands when it is drawn.

    images: (N, C, H, W) uint8 on the stage's device; labels: (N,) int64 (class ids, 0 if the
    dataset has no classes). `epoch` counts epochs as a float (2.5 = half-way through the third);
    `progress` is the fraction of the stage's budget spent, in [0, 1].
    """

    images: torch.Tensor
    labels: torch.Tensor
    step: int
    epoch: float
    progress: float


@dataclass
class StageContext:
    """What a stage may use to build itself: the device, the seed and its data."""

    device: torch.device
    seed: int
    data: "ImageDataset"
    val: "ImageDataset"
    run_dir: Path
    budget_s: float


@dataclass
class EvalContext:
    """What an evaluation may use. `scorer` computes FID/IS and labels substitutes; it is None
    only when the user turned image metrics off (`--eval-samples 0`)."""

    device: torch.device
    seed: int
    data: "ImageDataset"
    val: "ImageDataset"
    run_dir: Path
    stage: str
    step: int
    final: bool
    eval_samples: int
    scorer: "ImageScorer | None"
    save_grid: Callable[[torch.Tensor, str], Path]
    notes: list[str] = field(default_factory=list)
    # where to keep this evaluation's samples (the final one's: samples/<stage>-final.npz), and at
    # most how many (None: all); None path: keep none
    samples_path: Path | None = None
    samples_limit: int | None = None


class Stage(abc.ABC):
    """Base class of a trainable stage. Subclasses set `name`, `batch_size` and implement the
    four methods; `max_steps` is the method's own end (the paper's iterations or epochs) and
    `best_metric` = (key, "min"|"max") picks the `-best.pt` checkpoint."""

    name: str = "train"
    batch_size: int = 64
    budget_share: float = 1.0
    max_steps: int | None = None
    best_metric: tuple[str, str] | None = None

    @abc.abstractmethod
    def init(self, ctx: StageContext) -> None:
        ...

    @abc.abstractmethod
    def train_step(self, batch: Batch) -> dict[str, float]:
        ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        ...

    @abc.abstractmethod
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        ...

    def describe(self) -> dict[str, Any]:
        """Static facts about the built stage (parameters, multiply-adds, ...), written once to
        run.json's stage_state[<name>]["model"] after `init`. Empty by default."""
        return {}


@dataclass
class Method:
    """A registered method, built from its config: the stages in training order, and the
    optional whole-pipeline `sample` (n, truncation, seed, device) -> (n, 3, H, W) uint8 used by
    `harness eval` and the final evaluation."""

    stages: list[Stage]
    sample: Callable[..., torch.Tensor] | None = None
    evaluate: Callable[[EvalContext], dict[str, float]] | None = None

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)
