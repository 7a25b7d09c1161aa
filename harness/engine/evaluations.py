"""The loop's evaluations: when one is due, running it, and recording it.

Every evaluation, of a stage on the schedule or of the whole pipeline after all stages, goes
through `Evaluations.run_and_record`: built context, timed, measured as evaluation energy, in
`torch.no_grad()`, one metrics.jsonl line, run.json's `last_eval`, one console line. Under torchrun
every rank evaluates, with rank 0's weights: each draws and featurises its share of the samples and
rank 0 computes the metrics (harness.metrics.sharding), which every rank receives; rank 0 writes.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import TYPE_CHECKING, Callable, ContextManager

import torch
from rich.console import Console

from harness.rundir import records
from harness.engine.checkpoints import Checkpoints, TrainedStages
from harness.engine.distributed import Dist, broadcast_module
from harness.engine.energy import EnergyMeter
from harness.errors import CheckpointError
from harness.faults import crash_point
from harness.method import EvalContext, Method
from harness.metrics.backbone import metric_key
from harness.rundir.rundir import RunDir
from harness.rundir.samples import final_samples_path

if TYPE_CHECKING:
    from harness.data import DataSplits
    from harness.engine.options import LoopOptions
    from harness.engine.stage_run import StageRun


class Evaluations:
    """The loop's evaluations of one run: shares the Trainer's run directory, options, meter,
    scorer and checkpoints; `line(kind, stage_run, **fields)` builds a stage's metrics line."""

    def __init__(self, run: RunDir, method: Method, data: "DataSplits", device: torch.device, opt: "LoopOptions",
                 meter: EnergyMeter, scorer, console: Console, dist: Dist, checkpoints: Checkpoints,
                 line: Callable[..., dict], built: set[str]):
        self.run, self.method, self.data, self.device, self.opt = run, method, data, device, opt
        self.meter, self.scorer, self.console, self.dist = meter, scorer, console, dist
        self.checkpoints, self.line, self.built = checkpoints, line, built
        # where a signal stops an evaluation at once (Signals.interruptible); the loop sets it
        self.interruptible: Callable[[], ContextManager[None]] = contextlib.nullcontext

    def due(self, r: "StageRun") -> bool:
        every = self.opt.eval_every
        return every is not None and every.due(r.progress.last_eval[every.unit], r.schedule_position()[every.unit])

    def stage(self, r: "StageRun", final: bool) -> None:
        """Evaluate the stage in training; a better `best_metric` is checkpointed as `best`."""
        p = r.progress
        p.evals += 1
        p.last_eval = r.schedule_position()
        ctx = self.context(r.stage.name, p.step, final, f"{r.stage.name}-{p.step:08d}")

        def line(metrics: dict, eval_s: float) -> dict:
            return self.line("eval", r, final=final, eval_s=eval_s, notes=ctx.notes or None, **metrics)

        if self.dist.enabled:
            # every rank samples with rank 0's weights: BatchNorm statistics stay per process in
            # training, and a diverged stage was restored on rank 0 alone
            for module in r.stage.modules():
                broadcast_module(module)
        metrics = self.run_and_record(ctx, r.stage.evaluate, line)
        key, mode = r.stage.best_metric or (None, "min")
        if key is not None and key not in (metrics or {}) and self.scorer is not None:
            key = metric_key(self.scorer.backbone, key)  # the network's own: fid_standin in smoke runs, fid_dinov2
        if metrics and key in metrics:
            value = float(metrics[key])
            if math.isfinite(value) and (p.best is None or (value < p.best if mode == "min" else value > p.best)):
                p.best = value
                if self.dist.main:
                    self.checkpoints.save(r, kind="best")

    def pipeline(self) -> None:
        """The method's whole-pipeline evaluation (e.g. NSBGAN's chained decoders), on each
        stage's last checkpoint; stages trained elsewhere are loaded from the run directory."""
        def evaluate() -> None:
            trained = self.trained()
            try:
                trained.all()
            except CheckpointError as e:
                self.console.print(f"[yellow]pipeline evaluation skipped: {e}[/yellow]")
                return
            ctx = self.context("pipeline", sum(trained.steps.values()), True, "pipeline")
            stages = self.run.manifest().get("stage_state", {})
            self.run_and_record(ctx, self.method.evaluate, lambda metrics, eval_s: records.pipeline_line(
                stages, trained.steps, metrics, eval_s, ctx.notes))

        evaluate()

    def run_and_record(self, ctx: EvalContext, evaluate: Callable[[EvalContext], dict | list[dict]],
                       line: Callable[[dict, float], dict]) -> dict:
        """Run one evaluation and record it; `line(metrics, eval_s)` builds its metrics.jsonl line.
        An evaluation that returns several dicts (one per truncation level) writes one line each,
        the evaluation's time on each; run.json's last_eval keeps the first. Returns the first."""
        t0 = time.perf_counter()
        with self.meter.segment("eval"), torch.no_grad():
            with self.interruptible():  # nothing is recorded until the evaluation has returned
                results = evaluate(ctx)
            crash_point("eval")
        eval_s = time.perf_counter() - t0
        results = results if isinstance(results, list) else [results]
        joules = {"joules": dict(self.meter.last)} if self.meter.gpus and self.meter.last else {}  # its GPUs' counters
        lines = [{**line(metrics, eval_s), **joules} for metrics in results]
        for record in lines:
            self.run.metrics.append(record)
        self.run.update(last_eval={ctx.stage: {k: v for k, v in lines[0].items() if k != "notes"}})
        step = "" if ctx.stage == "pipeline" else f" step {ctx.step}"
        for metrics in results:
            self.console.print(f"[cyan]eval {ctx.stage}{step}[/cyan] " +
                               " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
        return results[0]

    def context(self, stage: str, step: int, final: bool, grid_prefix: str) -> EvalContext:
        keep = final and self.opt.keep_samples != 0  # the final samples are kept for `harness fid RUN_DIR`
        data = self.data.for_stage(stage)
        return EvalContext(
            device=self.device, seed=self.opt.seed, data=data.train, val=data.val, run_dir=self.run.path,
            stage=stage, step=step, final=final, eval_samples=self.opt.eval_samples, scorer=self.scorer,
            save_grid=lambda images, name: self.run.save_grid(images, f"{grid_prefix}-{name}"),
            samples_path=final_samples_path(self.run.path, stage) if keep else None,
            samples_limit=self.opt.keep_samples if keep else None, trained=self.trained())

    def trained(self) -> TrainedStages:
        """The run's other stages with their trained weights, loaded when asked for."""
        return TrainedStages(self.run, self.method, self.data, self.device, self.opt.seed, built=self.built)
