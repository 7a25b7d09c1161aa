"""The contract between the engine and a method: a Method is a list of Stages the loop trains.

A stage is anything the loop trains on its own budget share: `nsbgan` has `decoder-l1`,
`decoder-l2` and `sampler`; `dcgan` has one stage, `gan`. The loop owns time, data order,
checkpoints, energy and logging; the stage owns models, optimisers and what one step does.
`Stage` gives a stage's life as the loop drives it.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

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


def _no_trained_stages(name: str) -> "Stage":
    raise LookupError(f"no trained stages are available here (asked for '{name}')")


@dataclass
class StageContext:
    """What a stage may use to build itself: the device, the seed and its data. `trained(name)`
    returns another stage of the same run, built and loaded with its trained weights (its newest
    good checkpoint); it raises CheckpointError if that stage has none. A stage that needs another
    stage's trained weights (NSBGAN's sampler evaluates decoded samples) asks this; it never reads
    checkpoint files itself."""

    device: torch.device
    seed: int
    data: "ImageDataset"
    val: "ImageDataset"
    run_dir: Path
    budget_s: float
    trained: Callable[[str], "Stage"] = _no_trained_stages


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
    trained: Callable[[str], "Stage"] = _no_trained_stages  # as StageContext.trained


class Stage(abc.ABC):
    """Base class of a trainable stage. Subclasses set `name`, `batch_size` and implement the
    five abstract methods; `max_steps` is the method's own end (the paper's iterations or epochs,
    None: none) and `best_metric` = (key, "min"|"max") picks the `-best.pt` checkpoint.

    The life of a stage, as the loop drives it: construction by the method's factory (cheap, no
    modules yet: the registry builds methods just to read their stage names); `init`; `load_state_dict`
    when resuming, then `train_step` until the budget, the step limit or a signal ends training, with
    `state_dict` at every checkpoint; `evaluate` on the schedule and at the end."""

    name: str = "train"  # the stage's one declaration of its name
    batch_size: int = 64
    budget_share: float = 1.0
    max_steps: int | None = None
    best_metric: tuple[str, str] | None = None
    image_metrics: bool = True  # False: `evaluate` never uses ctx.scorer (no Inception weights needed)
    devices: int = 1  # devices (data-parallel processes) of this stage in the parallel layout (harness.layout)
    # data preparation options of this stage where they differ from the run's (`crop=long-edge`;
    # harness.data): the stage trains and evaluates on that preparation of the same images
    data_options: str = ""

    @abc.abstractmethod
    def init(self, ctx: StageContext) -> None:
        """Build modules and optimisers on `ctx.device`, from the global RNG state the loop seeded
        with `harness.engine.seeding.stage_seed(run seed, index)`."""
        ...

    @abc.abstractmethod
    def train_step(self, batch: Batch) -> dict[str, float | torch.Tensor]:
        """One optimiser step; returns the step's losses by name, as floats or as 0-d tensors on
        the device, which the loop reads together, once per train line (never `.item()` them here:
        each read waits for the device). A non-finite value marks the run diverged."""
        ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; taken at every checkpoint."""
        ...

    @abc.abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict()` when resuming, after `init` and before the first `train_step`."""
        ...

    @abc.abstractmethod
    def evaluate(self, ctx: EvalContext) -> dict[str, float]:
        """Metrics by name; called on the schedule and at the end, in `torch.no_grad()`."""
        ...

    def precision(self, device: torch.device) -> str:
        """The precision this stage trains in on `device`: "fp32", or "bf16" where it trains under
        bf16 autocast (run.json's stage_precision; the papers trained in fp32)."""
        return "fp32"

    def describe(self) -> dict[str, Any]:
        """Static facts about the built stage (parameters, multiply-adds, ...), written once to
        run.json's stage_state[<name>]["model"] after `init`. Empty by default."""
        return {}

    def modules(self) -> list[torch.nn.Module]:
        """The modules whose weights every data-parallel rank must share (broadcast from rank 0
        when the stage starts). Default: every nn.Module the stage holds as an attribute, directly
        or in a list, tuple or dict; override when they live elsewhere."""
        return _attributes_of_type(self, torch.nn.Module)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers whose gradients are averaged over data-parallel ranks before each step.
        Default: discovered as `modules()`; a stage whose optimisers are nested deeper must
        override this, or data parallelism would leave them out of the average."""
        return _attributes_of_type(self, torch.optim.Optimizer)


def _attributes_of_type(obj: Any, kind: type) -> list:
    found: dict[int, Any] = {}
    for value in vars(obj).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if isinstance(v, kind):
                found[id(v)] = v
    return list(found.values())


class Sampler(Protocol):
    """A method's whole-pipeline sampler."""

    def __call__(self, n: int, truncation: float = 1.0, seed: int = 0,
                 device: torch.device | None = None) -> torch.Tensor:
        """`n` samples as (n, 3, R, R) uint8 on the CPU. `truncation` scales the latent's standard
        deviation (1.0: none), `seed` fixes the latents (the same seed gives the same images),
        `device` is where to run (None: where the models are)."""


@dataclass
class Method:
    """A registered method, built from its config: the stages in training order, the optional
    whole-pipeline `sample` (a Sampler, used by `harness eval` and `harness fid RUN_DIR`), and the
    optional `evaluate` run once after all stages (stage `pipeline`), with every stage loaded
    from its last checkpoint."""

    stages: list[Stage]
    sample: Sampler | None = None
    # one dict of metrics, or a list of them for several lines (e.g. one per truncation level)
    evaluate: Callable[[EvalContext], dict[str, float] | list[dict[str, float]]] | None = None
    # uint8 images (N, 3, R, R) -> the method's reconstructions of them, decode(encode(x)), uint8:
    # for `harness eval --latents-from` (an external generator's images through the decoders)
    reconstruct: Callable[[torch.Tensor], torch.Tensor] | None = None
    # (n, truncation, seed, keep, draw_batch, max_draws) -> chunks of uint8 samples whose low-pass
    # (latent) image `keep` accepted: NSBGAN's official confidence filter (harness.posthoc.confidence)
    sample_filtered: Callable[..., Iterator[torch.Tensor]] | None = None
    # facts fixed by the config that the report reads (e.g. a schedule and its provenance): written as
    # top-level run.json fields when the run directory is created; a name the harness uses is refused
    run_fields: dict[str, Any] = field(default_factory=dict)

    def stage_data_options(self) -> dict[str, str]:
        """{stage: data options} of the stages that train on their own preparation (Stage.data_options)."""
        return {s.name: s.data_options for s in self.stages if s.data_options}

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)
