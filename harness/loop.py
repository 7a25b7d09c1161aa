"""The one training loop: train each stage until its budget share is spent.

Per stage: seed, build, resume from the newest good checkpoint, then repeat
    draw a batch and take a step (the DeviceClock runs only here)
    log, evaluate when the schedule says so, checkpoint
until the budget share, the method's own step limit or a signal ends it. Evaluation and
checkpointing never count against the budget. A non-finite loss marks the stage `diverged`, keeps
the last good checkpoint and evaluates that. SIGINT/SIGTERM checkpoint and raise `Interrupted`.

Under torchrun the same loop runs in every process (harness.distributed): each takes its shard
of the batch, rank 0 alone writes and evaluates, and one all-reduce per step keeps the decisions
(stop, evaluate, checkpoint, diverged, interrupted) identical on all ranks.
"""
from __future__ import annotations

import math
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn

from harness.budget import Budget, DeviceClock, Every, format_seconds
from harness.data import DataSplits
from harness.data.loader import BatchStream, default_workers
from harness.distributed import SINGLE, Dist, agree, all_gather_object, attach, barrier, broadcast_object
from harness.energy import EnergyMeter
from harness.errors import CheckpointError
from harness.method import Batch, EvalContext, Method, Stage, StageContext
from harness.run import RunDir
from harness.samples import final_samples_path

CHECKPOINT_FORMAT = 1


class Interrupted(Exception):
    """Raised after a SIGINT/SIGTERM was honoured: the stage is checkpointed, the run marked."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class LoopOptions:
    budget: Budget
    seed: int = 0
    eval_every: Every | None = None
    eval_samples: int = 0
    max_steps: int | None = None
    keep_samples: int | None = None  # of the final evaluation, in samples/<stage>-final.npz (None: all)
    only_stage: str | None = None
    log_every_s: float = 10.0  # wall seconds between train lines in metrics.jsonl
    checkpoint_every_s: float = 600.0  # wall seconds between checkpoints outside evaluations
    progress: bool = True


@dataclass
class StageProgress:
    """Loop bookkeeping that lives in the checkpoint beside the stage's own state."""

    step: int = 0
    wall_s: float = 0.0
    last_eval: dict[str, float] = field(default_factory=lambda: {"seconds": 0.0, "epochs": 0.0, "steps": 0.0})
    best: float | None = None
    evals: int = 0
    images: int = 0
    last_step_s: float = 0.0  # duration of the latest step: the run may overshoot its budget by this much


class _Signals:
    """Turn the first SIGINT/SIGTERM into a flag checked at step boundaries; a second one
    gets the default behaviour (immediate exit)."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum
        for s, old in self._old.items():
            signal.signal(s, old)

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random stream (noise, augmentation) in a data-parallel run."""
    return seed * 1_000_003 + 7919 * (rank + 1)


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def stage_budgets(stages: list[Stage], budget: Budget, only: str | None) -> dict[str, float]:
    """Seconds of training for each stage: the whole budget for `--stage`, otherwise the stages'
    shares of it (normalised, so shares need not sum to one)."""
    if only is not None:
        return {s.name: (budget.seconds if s.name == only else 0.0) for s in stages}
    total = sum(s.budget_share for s in stages)
    return {s.name: budget.seconds * s.budget_share / total for s in stages}


def _end_status(clock: DeviceClock, prog: StageProgress, budget_s: float, max_steps: int) -> str | None:
    """Why training of a stage ends now, or None: the budget share is spent, or the method's own
    step limit (the paper's iterations or epochs) is reached."""
    if clock.elapsed >= budget_s:
        return "budget_exhausted"
    if prog.step >= max_steps:
        return "completed"
    return None


def _finite(losses: dict[str, float]) -> bool:
    return all(math.isfinite(float(v)) for v in losses.values())


class Trainer:
    """Trains the stages of one method into one run directory."""

    def __init__(self, run: RunDir, method: Method, data: DataSplits, device: torch.device, options: LoopOptions,
                 meter: EnergyMeter, scorer=None, console: Console | None = None, dist: Dist = SINGLE):
        self.run, self.method, self.data, self.device, self.dist = run, method, data, device, dist
        self.opt, self.meter, self.scorer = options, meter, scorer
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.signals: _Signals | None = None
        self._initialised: set[str] = set()  # stages built in this process
        # data-parallel runs: every node's codecarbon totals, summed at the last checkpoint
        self._cluster: tuple[dict, list[dict]] | None = None

    # --- public ---------------------------------------------------------------------------------
    def train(self) -> str:
        """Train every stage (or `only_stage`); returns the run's final status."""
        budgets = stage_budgets(self.method.stages, self.opt.budget, self.opt.only_stage)
        statuses = {}
        with _Signals() as self.signals:
            for index, stage in enumerate(self.method.stages):
                if budgets[stage.name] <= 0:
                    continue
                prior = self.run.manifest().get("stage_state", {}).get(stage.name, {})
                if prior.get("status") in ("completed", "budget_exhausted", "diverged"):
                    statuses[stage.name] = prior["status"]
                    self.console.print(f"[dim]stage {stage.name}: already {prior['status']}, skipped[/dim]")
                    continue
                statuses[stage.name] = self._train_stage(index, stage, budgets[stage.name])
        if self.method.evaluate is not None and self.opt.only_stage is None and "failed" not in statuses.values():
            if self.dist.main:
                self._evaluate_pipeline()
                barrier(self.dist)
            else:
                with self.meter.segment("eval"):  # other nodes' energy while rank 0 evaluates
                    barrier(self.dist)
        status = self._run_status(statuses)
        self.run.update(status=status, totals=self._totals())
        return status

    def _evaluate_pipeline(self) -> None:
        """The method's whole-pipeline evaluation (e.g. NSBGAN's chained decoders), on each
        stage's last checkpoint; stages trained elsewhere are loaded from the run directory."""
        steps = {}
        for index, stage in enumerate(self.method.stages):
            loaded = self.run.load_checkpoint(stage.name)
            if loaded is None:
                self.console.print(f"[yellow]pipeline evaluation skipped: stage {stage.name} has no checkpoint[/yellow]")
                return
            if stage.name not in self._initialised:
                stage.init(StageContext(self.device, self.opt.seed + 1000 * index, self.data.train, self.data.val,
                                        self.run.path, 0.0))
            stage.load_state_dict(loaded.state["stage_state"])
            steps[stage.name] = loaded.state["progress"]["step"]
        ctx = EvalContext(
            device=self.device, seed=self.opt.seed, data=self.data.train, val=self.data.val, run_dir=self.run.path,
            stage="pipeline", step=sum(steps.values()), final=True, eval_samples=self.opt.eval_samples,
            scorer=self.scorer, save_grid=lambda images, name: self.run.save_grid(images, f"pipeline-{name}"),
            **self._keep("pipeline", True),
        )
        t0 = time.perf_counter()
        with self.meter.segment("eval"), torch.no_grad():
            metrics = self.method.evaluate(ctx)
        stages = self.run.manifest().get("stage_state", {})
        record = {"kind": "eval", "stage": "pipeline", "step": ctx.step, "stage_steps": steps, "final": True,
                  "budget_s": sum((v.get("budget_s") or 0.0) for v in stages.values()),
                  "gpu_h": sum((v.get("gpu_h") or 0.0) for v in stages.values()),
                  "eval_s": time.perf_counter() - t0, "time": time.time(), "notes": ctx.notes or None, **metrics}
        self.run.log({k: v for k, v in record.items() if v is not None})
        self.run.update(last_eval={"pipeline": {k: v for k, v in record.items() if k != "notes"}})
        self.console.print("[cyan]eval pipeline[/cyan] " +
                           " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))

    # --- one stage ------------------------------------------------------------------------------
    def _train_stage(self, index: int, stage: Stage, budget_s: float) -> str:
        seed = self.opt.seed + 1000 * index  # stages draw independent streams
        seed_everything(seed)
        stage.init(StageContext(self.device, seed, self.data.train, self.data.val, self.run.path, budget_s))
        self._initialised.add(stage.name)
        facts = stage.describe()
        if facts:
            self.run.update_stage(stage.name, model=facts)
        stream = BatchStream(self.data.train, stage.batch_size, seed, self.device,
                             shard=(self.dist.rank, self.dist.world),
                             workers=default_workers(self.device, self.dist.world))
        clock = DeviceClock(self.device)
        prog = StageProgress()
        self.meter.load_state_dict({})
        self._cluster = None
        if self.dist.enabled:
            seed_everything(rank_seed(seed, self.dist.rank))  # same weights, distinct noise per rank
        loaded = self._load_shared(stage.name)
        if loaded is not None:
            self._restore(loaded.state, stage, stream, clock, prog)
            msg = f"stage {stage.name}: resumed at step {prog.step}, {format_seconds(clock.elapsed)} of budget spent"
            self.console.print(msg + (f" [yellow]({loaded.note})[/yellow]" if loaded.note else ""))
            if loaded.note:
                self.run.update_stage(stage.name, resume_note=loaded.note)
        else:
            self._save(stage, stream, clock, prog)  # step 0: a diverging first step still has a good state
        attach(self.dist, stage)  # rank 0's weights everywhere; gradients averaged over ranks
        max_steps = min(x for x in (self.opt.max_steps, stage.max_steps, 2**62) if x is not None)
        self.run.update_stage(stage.name, status="running", budget_share_s=budget_s, batch_size=stage.batch_size,
                              max_steps=max_steps if max_steps < 2**62 else None)
        try:
            return self._loop(stage, stream, clock, prog, budget_s, max_steps)
        except Interrupted:
            raise
        except Exception as e:
            log = "error.log" if self.dist.main else f"error-rank{self.dist.rank}.log"
            (self.run.path / log).write_text(traceback.format_exc())
            self.run.update_stage(stage.name, status="failed", error=f"{type(e).__name__}: {e}")
            self.run.update(status="failed", totals=self._totals())
            raise
        finally:
            stream.close()

    def _loop(self, stage, stream, clock, prog, budget_s, max_steps) -> str:
        status = None
        sums: dict[str, float] = {}
        n_sums = 0
        wall0, last_log, last_ckpt = time.perf_counter(), -1e9, time.perf_counter()
        wall_base = prog.wall_s
        rate_window = (clock.elapsed, prog.images)
        signum: int | None = None  # in a data-parallel run, only a signal all ranks agreed on counts
        with _Bar(self.console, stage.name, budget_s, enabled=self.opt.progress) as bar:
            while status is None:
                eval_due = False
                with self.meter.segment("train"):
                    while True:
                        if not self.dist.enabled:
                            signum = self.signals.received
                        if signum is not None:
                            break
                        status = _end_status(clock, prog, budget_s, max_steps)
                        if status is not None:
                            break
                        before = clock.elapsed
                        clock.start()
                        images, labels = stream.next()
                        batch = Batch(images, labels, prog.step, stream.epochs_done, min(1.0, before / budget_s))
                        losses = stage.train_step(batch)
                        prog.last_step_s = clock.stop() - before
                        now = time.perf_counter()
                        checkpoint_due = now - last_ckpt >= self.opt.checkpoint_every_s
                        if self.dist.enabled:
                            agreed = agree(self.dist, self.device, clock.elapsed, checkpoint_due,
                                           self.signals.received, losses)
                            clock.agree(agreed.elapsed)
                            prog.last_step_s = agreed.elapsed - before
                            losses, signum, checkpoint_due = agreed.losses, agreed.signum, agreed.checkpoint_due
                        if not _finite(losses):
                            status = "diverged"
                            break
                        prog.step += 1
                        prog.images += len(images) * self.dist.world
                        for k, v in losses.items():
                            sums[k] = sums.get(k, 0.0) + float(v)
                        n_sums += 1
                        if now - last_log >= self.opt.log_every_s or prog.step == 1:
                            dt = clock.elapsed - rate_window[0]
                            ips = (prog.images - rate_window[1]) / dt if dt > 0 else float("nan")
                            rate_window = (clock.elapsed, prog.images)
                            prog.wall_s = wall_base + now - wall0
                            avg = {k: v / n_sums for k, v in sums.items()}
                            self.run.log(self._record("train", stage, stream, clock, prog, images_per_s=ips, **avg))
                            bar.show(clock.elapsed, prog.step, ips, avg)
                            sums, n_sums, last_log = {}, 0, now
                        if self._eval_due(prog, stream, clock):
                            eval_due = True
                            break
                        if checkpoint_due:
                            break  # every segment ends with a checkpoint
                prog.wall_s = wall_base + time.perf_counter() - wall0
                if not self.dist.enabled:
                    signum = self.signals.received
                if signum is not None:
                    self._save(stage, stream, clock, prog)
                    self.run.update_stage(stage.name, status="interrupted", **self._stage_summary(stage, stream, clock, prog))
                    self.run.update(status="interrupted", totals=self._totals())
                    raise Interrupted(signum)
                if status == "diverged":
                    return self._diverged(stage, stream, clock, prog, losses)
                if eval_due:  # the step that made an evaluation due may also have ended training
                    status = _end_status(clock, prog, budget_s, max_steps)
                if eval_due or status is not None:
                    self._evaluate(stage, stream, clock, prog, final=status is not None)
                self._save(stage, stream, clock, prog)
                last_ckpt = time.perf_counter()
        note = None
        if prog.step == 1 and clock.elapsed > budget_s:
            note = (f"the budget share ({format_seconds(budget_s)}) is shorter than one step "
                    f"({format_seconds(clock.elapsed)}): one step was trained and evaluated")
            self.console.print(f"[yellow]stage {stage.name}: {note}[/yellow]")
        self.run.update_stage(stage.name, status=status, note=note, **self._stage_summary(stage, stream, clock, prog))
        self.run.update(totals=self._totals())
        return status

    def _diverged(self, stage, stream, clock, prog, losses) -> str:
        bad = {k: float(v) for k, v in losses.items()}
        at = prog.step + 1
        self.console.print(f"[red]stage {stage.name}: non-finite loss at step {at} {bad}; "
                           f"evaluating the last good checkpoint[/red]")
        good = StageProgress()
        if self.dist.main:  # the others only keep step with rank 0's evaluation
            loaded = self.run.load_checkpoint(stage.name)
            self._restore(loaded.state, stage, stream, clock, good)
        self.run.log(self._record("diverged", stage, stream, clock, good, diverged_at=at, **{f"loss_{k}": v for k, v in bad.items()}))
        self._evaluate(stage, stream, clock, good, final=True)
        self.run.update_stage(stage.name, status="diverged", diverged_at=at, evaluated_step=good.step,
                              **self._stage_summary(stage, stream, clock, good))
        self.run.update(totals=self._totals())
        return "diverged"

    # --- evaluation -----------------------------------------------------------------------------
    def _eval_due(self, prog: StageProgress, stream: BatchStream, clock: DeviceClock) -> bool:
        every = self.opt.eval_every
        if every is None:
            return False
        now = {"seconds": clock.elapsed, "epochs": stream.epochs_done, "steps": float(prog.step)}[every.unit]
        return every.due(prog.last_eval[every.unit], now)

    def _evaluate(self, stage, stream, clock, prog, final: bool) -> dict:
        ctx = EvalContext(
            device=self.device, seed=self.opt.seed, data=self.data.train, val=self.data.val, run_dir=self.run.path,
            stage=stage.name, step=prog.step, final=final, eval_samples=self.opt.eval_samples, scorer=self.scorer,
            save_grid=lambda images, name: self.run.save_grid(images, f"{stage.name}-{prog.step:08d}-{name}"),
            **self._keep(stage.name, final),
        )
        prog.evals += 1
        prog.last_eval = {"seconds": clock.elapsed, "epochs": stream.epochs_done, "steps": float(prog.step)}
        if not self.dist.main:  # rank 0 evaluates alone; the others wait for it (their nodes' power counts)
            with self.meter.segment("eval"):
                barrier(self.dist)
            return {}
        t0 = time.perf_counter()
        with self.meter.segment("eval"), torch.no_grad():
            metrics = stage.evaluate(ctx)
        record = self._record("eval", stage, stream, clock, prog, final=final,
                              eval_s=time.perf_counter() - t0, notes=ctx.notes or None, **metrics)
        self.run.log(record)
        key, mode = stage.best_metric or (None, "min")
        if key is not None and key not in metrics:
            key = f"{key}_standin"  # smoke runs rank checkpoints by the stand-in score they have
        if key in metrics:
            value = float(metrics[key])
            better = prog.best is None or (value < prog.best if mode == "min" else value > prog.best)
            if math.isfinite(value) and better:
                prog.best = value
                self._save(stage, stream, clock, prog, kind="best")
        self.run.update(last_eval={stage.name: {k: v for k, v in record.items() if k != "notes"}})
        self.console.print(f"[cyan]eval {stage.name} step {prog.step}[/cyan] " +
                           " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
        barrier(self.dist)
        return metrics

    def _keep(self, stage: str, final: bool) -> dict:
        """Where the final evaluation keeps its samples (for `harness fid RUN_DIR` and re-use)."""
        if not final or self.opt.keep_samples == 0:
            return {}
        return {"samples_path": final_samples_path(self.run.path, stage), "samples_limit": self.opt.keep_samples}

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, stage, stream, clock, prog, kind: str = "last") -> None:
        """Checkpoint (rank 0 writes). `last` is called on every rank together: it gathers each
        rank's random state so a data-parallel resume continues every rank's noise stream."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "stage": stage.name,
            "stage_state": stage.state_dict(),
            "stream": stream.state_dict(),
            "clock": clock.state_dict(),
            "progress": prog.__dict__.copy(),
            "energy": self.meter.state_dict(),
            "rng": rng_state(),
        }
        if self.dist.enabled and kind == "last":
            ranks = all_gather_object(self.dist, {"rng": state["rng"], "energy": state["energy"],
                                                  "status": self.meter.status, "measures": self.meter.enabled})
            state["rng_ranks"] = [r["rng"] for r in ranks]
            state["energy_ranks"] = [r["energy"] for r in ranks]
            self._cluster = self._cluster_energy(ranks)
        self.run.save_checkpoint(stage.name, state, kind)

    def _load_shared(self, name: str):
        """Rank 0 picks the checkpoint to resume from (with its fallbacks); the others load that
        same file, or fail with rank 0's error."""
        if not self.dist.enabled:
            return self.run.load_checkpoint(name)
        loaded, error = None, None
        if self.dist.main:
            try:
                loaded = self.run.load_checkpoint(name)
            except CheckpointError as e:
                error = str(e)
        verdict = ("error", error) if error else ("path", str(loaded.path)) if loaded else None
        verdict = broadcast_object(self.dist, verdict)
        if verdict is not None and verdict[0] == "error":
            raise CheckpointError(verdict[1])
        if self.dist.main or verdict is None:
            return loaded
        return self.run.load_file(verdict[1])

    def _restore(self, state, stage, stream, clock, prog) -> None:
        stage.load_state_dict(state["stage_state"])
        stream.load_state_dict(state["stream"])
        clock.load_state_dict(state["clock"])
        for k, v in state["progress"].items():
            setattr(prog, k, v)
        energy = state.get("energy_ranks")
        mine = energy[self.dist.rank] if self.dist.enabled and energy and len(energy) == self.dist.world else None
        self.meter.load_state_dict(mine if mine is not None else state.get("energy", {}))
        ranks = state.get("rng_ranks")
        if not self.dist.enabled:
            set_rng_state(state["rng"])
        elif ranks is not None and len(ranks) == self.dist.world:
            set_rng_state(ranks[self.dist.rank])
        else:  # a checkpoint saved without every rank's stream (a `best`): fresh, distinct streams
            seed_everything(rank_seed(self.opt.seed + prog.step, self.dist.rank))

    # --- records and summaries ------------------------------------------------------------------
    def _cluster_energy(self, ranks: list[dict]) -> tuple[dict, list[dict]]:
        """(summed summary, per-node summaries) from every rank's meter: one measures per node."""
        per = self.dist.local_world
        nodes = [{"node": i // per, "status": r["status"], **r["energy"]} for i, r in enumerate(ranks) if r["measures"]]
        keys = list(self.meter.totals)
        if not nodes or any(n["status"].startswith(("disabled", "unavailable")) for n in nodes):
            bad = "; ".join(f"node {n['node']}: {n['status']}" for n in nodes) or self.meter.status
            return {"status": bad, **{k: None for k in keys}}, nodes
        statuses = sorted({n["status"] for n in nodes})
        status = statuses[0] if len(statuses) == 1 else "; ".join(statuses)
        return {"status": f"{status} ({len(nodes)} node(s))", **{k: sum(n[k] for n in nodes) for k in keys}}, nodes

    def _energy(self) -> dict:
        """Energy so far: this process's meter, or in a data-parallel run every node's, summed."""
        if self.dist.enabled and self._cluster is not None:
            return self._cluster[0]
        return self.meter.summary()

    def _record(self, kind, stage, stream, clock, prog, **extra) -> dict:
        e = self._energy()
        return {
            "kind": kind,
            "stage": stage.name,
            "step": prog.step,
            "epoch": round(stream.epochs_done, 6),
            "budget_s": clock.elapsed,
            "wall_s": prog.wall_s,
            "gpu_h": clock.elapsed * self.opt.budget.devices / 3600.0,
            "kwh": e["kwh_train"],
            "kwh_eval": e["kwh_eval"],
            "kg_co2e": None if e["kg_train"] is None else e["kg_train"] + e["kg_eval"],
            "time": time.time(),
            **{k: v for k, v in extra.items() if v is not None},
        }

    def _stage_summary(self, stage, stream, clock, prog) -> dict:
        e = self._energy()
        return {
            "steps": prog.step,
            "last_step_s": prog.last_step_s,
            "epochs": round(stream.epochs_done, 6),
            "images": prog.images,
            "budget_s": clock.elapsed,
            "wall_s": prog.wall_s,
            "gpu_h": clock.elapsed * self.opt.budget.devices / 3600.0,
            "images_per_s": prog.images / clock.elapsed if clock.elapsed > 0 else None,
            "steps_per_s": prog.step / clock.elapsed if clock.elapsed > 0 else None,
            "evals": prog.evals,
            "energy": e,
            **({"energy_by_node": self._cluster[1]} if self.dist.enabled and self._cluster else {}),
        }

    def _totals(self) -> dict:
        stages = self.run.manifest().get("stage_state", {}).values()

        def total(key, sub=None):
            vals = [(s.get(sub) or {}).get(key) if sub else s.get(key) for s in stages]
            vals = [v for v in vals if v is not None]
            return sum(vals) if vals else None

        totals = {k: total(k) for k in ("steps", "images", "budget_s", "wall_s", "gpu_h")}
        totals["train_hours"] = None if totals["budget_s"] is None else totals["budget_s"] / 3600.0
        for k in ("kwh_train", "kwh_eval", "kg_train", "kg_eval"):
            totals[k] = total(k, "energy")
        parts = [totals["kwh_train"], totals["kwh_eval"]]
        totals["kwh"] = None if any(p is None for p in parts) else sum(parts)
        kg = [totals["kg_train"], totals["kg_eval"]]
        totals["kg_co2e"] = None if any(p is None for p in kg) else sum(kg)
        return totals

    @staticmethod
    def _run_status(statuses: dict[str, str]) -> str:
        for s in ("failed", "diverged", "interrupted", "budget_exhausted", "completed"):
            if s in statuses.values():
                return s
        return "completed"


class _Bar:
    """A rich progress bar on a terminal; plain lines every log interval otherwise."""

    def __init__(self, console: Console, name: str, budget_s: float, enabled: bool):
        self.console, self.name, self.budget_s = console, name, budget_s
        self.live = enabled and console.is_terminal
        self.enabled = enabled
        self.progress = None

    def __enter__(self):
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.fields[name]}"), BarColumn(),
                TextColumn("{task.fields[spent]} / {task.fields[budget]} ({task.fields[left]} left)"),
                TextColumn("step {task.fields[step]}"), TextColumn("{task.fields[rate]} img/s"),
                TextColumn("{task.fields[losses]}"), console=self.console, transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.budget_s, name=self.name, spent="0s",
                                               budget=format_seconds(self.budget_s), left=format_seconds(self.budget_s),
                                               step=0, rate="-", losses="")
        return self

    def show(self, spent: float, step: int, rate: float, losses: dict[str, float]) -> None:
        text = " ".join(f"{k}={v:.3g}" for k, v in list(losses.items())[:4])
        if self.progress is not None:
            self.progress.update(self.task, completed=min(spent, self.budget_s), spent=format_seconds(spent),
                                 left=format_seconds(self.budget_s - spent),
                                 step=step, rate=f"{rate:.1f}", losses=text)
        elif self.enabled:
            print(f"[{self.name}] {format_seconds(spent)}/{format_seconds(self.budget_s)} "
                  f"({format_seconds(self.budget_s - spent)} left) step {step} "
                  f"{rate:.1f} img/s {text}", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
