"""The harness loop's overhead: `harness run` (in-process, the real Trainer with its budget clock,
codecarbon tracker, prefetching stream, progress bar and run directory) against a bare PyTorch loop
with the same G, D, optimisers, loss and batch size, interleaved A B A B ... in one process.

    python -m benchmarks.loop_overhead                                  # dcgan, 32x32, width 8, CPU
    python -m benchmarks.loop_overhead --device cuda --set resolution=128 --set width=32 --steps 200

Steps/s of each run are counted between synchronised points after `--warmup` steps: for the
harness from the start of step `warmup` (the stage's train_step is wrapped to take the time,
the device drained first) to the end of the training segment (the budget clock's stop, which
waits for the device), so everything the loop does between steps is inside the window; for the
bare loop the same steps. The bare loop reads random batches of pre-rendered shapes images
from memory. With `--data prepared` (the default) the harness trains on exactly those images,
written to an .npz and prepared into a uint8 memmap (under a temporary $HARNESS_CACHE), so the
ratio is the loop's machinery alone; with `--data shapes` it renders them in its prefetch thread, as
a default run does, and the rendering's cost shows too. Evaluations (and the checkpoints after
them) are scheduled work off the budget clock, not loop overhead: the harness runs get
`--eval-every 100h` (dcgan's default is every epoch, 15 steps of the small prepared set). On CUDA it also counts host-device synchronisations
per harness step (`torch.cuda.set_sync_debug_mode("warn")` warnings plus explicit
`torch.cuda.synchronize` calls); on a CPU that line says "not measured".
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from baselines.dcgan import GanStage, d_loss, g_loss, make_discriminator, make_generator
from harness.images import uint8_to_signed
from harness.engine.budget import DeviceClock
from harness.config import apply_overrides, parse_overrides
from harness.data import open_dataset
from harness.launch.execute import execute
from harness.launch.request import RunRequest
from harness.rundir.records import FINISHED
from harness.registry import get_method

DEFAULT_SET = ("resolution=32", "width=8")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(cfg, images: torch.Tensor, steps: int, warmup: int, device: torch.device, seed: int) -> float:
    """Steps/s of a plain DCGAN loop (D step, then G step, every batch) after `warmup` steps."""
    torch.manual_seed(seed)
    G, D = make_generator(cfg).to(device), make_discriminator(cfg).to(device)
    fused = device.type == "cuda"
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas, fused=fused)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas, fused=fused)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")
    gen = torch.Generator().manual_seed(seed)
    n = cfg.batch_size
    for step in range(steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        idx = torch.randint(len(images), (n,), generator=gen)
        real = uint8_to_signed(images[idx].to(device, non_blocking=True))
        with amp:
            with torch.no_grad():
                fake = G(torch.randn(n, cfg.z_dim, device=device))
            loss_d = d_loss(cfg.loss, D(real).float(), D(fake).float())
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        with amp:
            loss_g = g_loss(cfg.loss, D(G(torch.randn(n, cfg.z_dim, device=device))).float())
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    _sync(device)
    return (steps - warmup) / (time.perf_counter() - t0)


class StepTimes:
    """Wraps GanStage.train_step for one harness run: the start of each step (the device drained
    before step `warmup`, as the bare loop does), the end of the training segment (the budget
    clock's stop, which waits for the device), and on CUDA the synchronisations in between."""

    def __init__(self, device: torch.device, warmup: int, steps: int):
        self.device, self.warmup, self.steps = device, warmup, steps
        self.starts: list[float] = []
        self.stops: list[float] = []  # DeviceClock.stop() returns: the ends of training segments
        self.syncs = 0
        self.closed = False  # the segment of the last step has ended: the final evaluation is not counted

    @property
    def counting(self) -> bool:
        return len(self.starts) > self.warmup and not self.closed

    @contextlib.contextmanager
    def installed(self):
        original, original_sync, original_stop = GanStage.train_step, torch.cuda.synchronize, DeviceClock.stop
        times = self

        def train_step(stage, batch):
            if len(times.starts) == times.warmup:
                _sync(times.device)  # not counted: the window starts with an idle device
            times.starts.append(time.perf_counter())
            return original(stage, batch)

        def stop(clock):
            out = original_stop(clock)  # its synchronisation is the window's last, counted
            times.stops.append(time.perf_counter())
            times.closed = len(times.starts) >= times.steps
            return out

        def synchronize(*args, **kwargs):
            times.syncs += times.counting
            return original_sync(*args, **kwargs)

        def showwarning(message, *args, **kwargs):
            times.syncs += times.counting and "synchroniz" in str(message)

        GanStage.train_step, DeviceClock.stop = train_step, stop
        cuda = self.device.type == "cuda"
        try:
            with warnings.catch_warnings():
                if cuda:
                    torch.cuda.synchronize = synchronize
                    warnings.simplefilter("always")
                    warnings.showwarning = showwarning
                    torch.cuda.set_sync_debug_mode("warn")
                yield self
        finally:
            GanStage.train_step, DeviceClock.stop = original, original_stop
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize = original_sync

    def rate(self) -> float:
        """Steps/s from the start of step `warmup` to the end of the segment that trained the last
        step (the clock's synchronised stop: every queued kernel done)."""
        end = min(t for t in self.stops if t > self.starts[-1])
        return (len(self.starts) - self.warmup) / (end - self.starts[self.warmup])


def harness_loop(method: str, overrides: tuple[str, ...], steps: int, warmup: int, device: torch.device,
                 run_dir: Path, energy: bool, progress: bool, data: str = "shapes") -> StepTimes:
    req = RunRequest(method=method, budget="100h", max_steps=steps, overrides=overrides, run_dir=str(run_dir),
                     data=data, eval_samples=0, eval_every="100h", device=str(device), energy=energy,
                     progress=progress, layout="sequential")
    with StepTimes(device, warmup, steps).installed() as times:
        _, status, _ = execute(req, Console(stderr=True, soft_wrap=True, quiet=not progress))
    if status not in FINISHED or len(times.starts) != steps:
        raise RuntimeError(f"harness run ended {status} after {len(times.starts)} of {steps} steps")
    return times


@contextlib.contextmanager
def prepared_copy(images: torch.Tensor, labels: torch.Tensor, folder: Path):
    """A `--data npz:...` spec of these images, prepared under a temporary $HARNESS_CACHE."""
    path = folder / "images.npz"
    np.savez(path, images=images.permute(0, 2, 3, 1).numpy(), labels=labels.numpy())
    before = os.environ.get("HARNESS_CACHE")
    os.environ["HARNESS_CACHE"] = str(folder / "cache")
    try:
        yield f"npz:{path}"
    finally:
        if before is None:
            os.environ.pop("HARNESS_CACHE")
        else:
            os.environ["HARNESS_CACHE"] = before


def measure(method: str = "dcgan", overrides: tuple[str, ...] = DEFAULT_SET, steps: int = 60, warmup: int = 10,
            rounds: int = 3, device: str = "cpu", energy: bool = True, progress: bool = True,
            data: str = "prepared", log=print) -> dict:
    """Interleaved rounds of (harness, bare): medians of steps/s, and the median of the rounds' ratios."""
    device = torch.device(device)
    info = get_method(method)
    cfg = apply_overrides(info.config, parse_overrides(list(overrides)), info.name)
    shapes = open_dataset("shapes", cfg.resolution).train
    images, labels = shapes.images(np.arange(min(len(shapes), 16 * cfg.batch_size)))
    harness, bare, syncs = [], [], []
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        spec = stack.enter_context(prepared_copy(images, labels, Path(tmp))) if data == "prepared" else "shapes"
        for k in range(rounds):
            times = harness_loop(method, overrides, steps, warmup, device, Path(tmp) / f"run{k}", energy, progress,
                                 spec)
            harness.append(times.rate())
            syncs.append(times.syncs / (steps - warmup))
            bare.append(bare_loop(cfg, images, steps, warmup, device, seed=k))
            log(f"round {k + 1}/{rounds}: harness {harness[-1]:.2f} steps/s, bare {bare[-1]:.2f} steps/s, "
                f"ratio {harness[-1] / bare[-1]:.3f}")
    h, b = statistics.median(harness), statistics.median(bare)
    return {"method": method, "overrides": list(overrides), "device": str(device), "batch": cfg.batch_size, "data": data,
            "steps": steps, "warmup": warmup, "rounds": rounds, "harness_steps_per_s": h, "bare_steps_per_s": b,
            # each round's harness and bare runs are neighbours in time: the median of their ratios
            # cancels the machine's drift, which the ratio of the two medians does not
            "ratio": statistics.median(x / y for x, y in zip(harness, bare)), "ratios": [x / y for x, y in zip(harness, bare)],
            "syncs_per_step": statistics.median(syncs) if device.type == "cuda" else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="dcgan", help="a GanStage method (dcgan, lsgan, wgan)")
    ap.add_argument("--set", dest="overrides", action="append", default=None,
                    help=f"config override key=value [default: {' '.join(DEFAULT_SET)}]")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-energy", action="store_true", help="harness runs without the codecarbon tracker")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    ap.add_argument("--data", choices=("prepared", "shapes"), default="prepared",
                    help="the harness's data: the bare loop's images as a prepared memmap, or shapes rendered live")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    r = measure(args.method, tuple(args.overrides or DEFAULT_SET), args.steps, args.warmup, args.rounds, args.device,
                energy=not args.no_energy, progress=not args.no_progress, data=args.data)
    print(f"\n{r['method']} ({', '.join(r['overrides'])}), batch {r['batch']}, {r['device']}, harness data {r['data']}, "
          f"{torch.get_num_threads()} threads: median of {r['rounds']} interleaved rounds, "
          f"{r['steps'] - r['warmup']} timed steps each")
    print(f"harness {r['harness_steps_per_s']:.2f} steps/s, bare {r['bare_steps_per_s']:.2f} steps/s, "
          f"ratio {r['ratio']:.3f} (median of the rounds: {', '.join(f'{x:.3f}' for x in r['ratios'])})")
    syncs = r["syncs_per_step"]
    print(f"host-device synchronisations per harness step: {'not measured (no CUDA)' if syncs is None else f'{syncs:.3f}'}"
          + ("" if syncs is None else " (the segment's end and train lines only: none per step)"))


if __name__ == "__main__":
    main()
