"""`--log tensorboard`: the run's metrics lines and sample grids also as TensorBoard event files
(<run dir>/tensorboard/), for watching a week-long run live with `tensorboard --logdir`.

metrics.jsonl stays the record (the report reads only it); this is a view of the same lines:
every numeric field of a train or eval line is a scalar `<stage>/<kind>/<field>` at the line's
step, and every saved sample grid an image. Needs the optional `tensorboard` package
(`pip install -e '.[tensorboard]'`).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch

from harness.errors import ConfigError

LOGGERS = ("tensorboard",)
# where a line stands, not what it measured: the x axis, not a curve
POSITION = {"step", "time", "epoch", "final", "kind", "stage"}


def check_logger(name: str | None) -> None:
    """A bad --log stops the run before anything is written."""
    if name is None:
        return
    if name not in LOGGERS:
        raise ConfigError(f"--log takes one of: {', '.join(LOGGERS)}; got '{name}'")
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--log tensorboard needs the tensorboard package: "
                          "pip install tensorboard (or -e '.[tensorboard]')")


def open_logger(name: str | None, run_dir: Path) -> "TensorBoardLog | None":
    check_logger(name)
    return None if name is None else TensorBoardLog(run_dir / "tensorboard")


class TensorBoardLog:
    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def line(self, record: dict) -> None:
        """One metrics.jsonl line: its numeric fields as scalars at its step."""
        kind, stage, step = record.get("kind"), record.get("stage"), record.get("step")
        if kind not in ("train", "eval") or not isinstance(step, int):
            return
        for key, value in record.items():
            if key in POSITION or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{stage}/{kind}/{key}", value, global_step=step)
        self.writer.flush()

    def grid(self, images: torch.Tensor, name: str) -> None:
        """A sample grid (N, 3, H, W) uint8 as saved under samples/<name>.png."""
        import torchvision.utils

        grid = torchvision.utils.make_grid(images[:64].detach().cpu().float() / 255.0,
                                           nrow=max(1, int(min(len(images), 64) ** 0.5)), padding=2)
        parts = name.split("-")  # <stage>-<step:08d>-<what>, or <stage>-<what> (the pipeline's)
        steps = [p for p in parts if len(p) == 8 and p.isdigit()]
        tag = "-".join(p for p in parts if p not in steps)
        self.writer.add_image(f"samples/{tag}", grid, global_step=int(steps[0]) if steps else 0)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
