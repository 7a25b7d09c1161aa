"""The one training loop: train each stage until its budget share is spent.

Per stage: seed, build, resume from the newest good checkpoint, then alternate training segments (the
only time the budget clock runs) with what follows them off the clock: diverge, interrupt, evaluate,
checkpoint. Under torchrun the same loop runs in every process (harness.engine.distributed).
"""
from __future__ import annotations

import contextlib
import math
import re
import time
import traceback

import torch
from rich.console import Console

from harness.rundir import records
from harness.engine.budget import DeviceClock, stage_budgets
from harness.engine.options import LoopOptions
from harness.engine.checkpoints import Checkpoints, checked
from harness.data import DataSplits
from harness.data.loader import BatchStream
from harness.engine.distributed import SINGLE, Dist, agree, attach
from harness.engine.energy import EnergyMeter
from harness.engine.evaluations import Evaluations
from harness.errors import ResourceError
from harness.engine.exclusivity import MIN_WINDOW_S, ShareMeter, combine
from harness.engine.threads import ThreadPolicy
from harness.engine.cores import usable_cores
from harness.faults import crash_point
from harness.method import Batch, Method, Stage, StageContext
from harness.engine.profiling import StepProfiler
from harness.engine.train_log import TrainLog
from harness.ui.progress import EvalProgress, ProgressBar
from harness.rundir.records import Status
from harness.rundir.rundir import RunDir
from harness.ui.units import format_bytes, format_seconds
from harness.engine.seeding import rank_seed, seed_everything, stage_seed
from harness.engine.signals import Interrupted, Signals
from harness.engine.stage_run import StageProgress, StageRun, Stop



def _finite(losses: dict[str, float]) -> bool:
    return all(math.isfinite(float(v)) for v in losses.values())


_OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


def _as_resource_error(e: Exception, stage: str) -> Exception:
    """An allocation the machine refused (a model or batch the config makes too large: `--set
    z_dim=100000000`) as a one-line ResourceError; any other exception as it is."""
    if not (isinstance(e, _OUT_OF_MEMORY) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e))):
        return e
    asked = re.search(r"tried to allocate (\d+) bytes", str(e))
    amount = f" ({format_bytes(int(asked.group(1)))} at once)" if asked else ""
    where = "device" if "CUDA" in str(e) else "host"
    return ResourceError(f"stage {stage} needs more {where} memory than there is{amount}: a size given with --set, "
                         f"or the batch size, is too large for this machine")


class Trainer:
    """Trains the stages of one method into one run directory."""

    def __init__(self, run: RunDir, method: Method, data: DataSplits, device: torch.device, options: LoopOptions,
                 meter: EnergyMeter, scorer=None, console: Console | None = None, dist: Dist = SINGLE,
                 threads: ThreadPolicy | None = None, gpus: list | None = None):
        self.run, self.method, self.data, self.device, self.dist = run, method, data, device, dist
        self.opt, self.meter, self.scorer = options, meter, scorer
        # without a policy (tests, benchmarks) the threads stay as they are, and are measured as such
        self.threads = threads or ThreadPolicy(device, usable_cores(), fixed=torch.get_num_threads())
        self.hours = records.hours_key(torch.device(device).type)  # gpu_h or cpu_h
        self.gpus = gpus or []  # NVML's view of the GPU this process trains on (harness.engine.nvml)
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.signals: Signals | None = None
        self.built: set[str] = set()  # stages whose init ran in this process
        self.checkpoints = Checkpoints(run, dist, meter, options.seed)
        if scorer is not None:  # evaluations show their progress where training shows its own
            scorer.progress = EvalProgress(self.console, enabled=options.progress and dist.main)
        self.evals = Evaluations(run, method, data, device, options, meter, scorer, self.console, dist,
                                 self.checkpoints, self.line, self.built)

    def train(self, evaluate_pipeline: bool = True) -> str:
        """Train every stage (or `only_stage`), then (unless told not to: a parallel layout's launcher,
        whose evaluation job did it) the method's pipeline evaluation; returns the run's final status."""
        budgets = stage_budgets(self.method.stages, self.opt.budget, self.opt.only_stage)
        statuses = {}
        with Signals() as self.signals:
            if not self.dist.enabled:  # under torchrun an evaluation runs out on every rank: one stopped in it would leave the others in a collective
                self.evals.interruptible = self.signals.interruptible
            for index, stage in enumerate(self.method.stages):
                if budgets[stage.name] <= 0:
                    continue
                prior = self.run.manifest().get("stage_state", {}).get(stage.name, {})
                if prior.get("status") in records.FINISHED:
                    statuses[stage.name] = prior["status"]
                    self.console.print(f"[dim]stage {stage.name}: already {prior['status']}, skipped[/dim]")
                    continue
                statuses[stage.name] = StageTrainer(self, index, stage, budgets[stage.name]).run()
            if evaluate_pipeline and self.method.evaluate is not None and self.opt.only_stage is None \
                    and Status.FAILED not in statuses.values():
                try:
                    self.evals.pipeline()
                except Interrupted:  # every stage is trained: --resume repeats the pipeline's evaluation
                    self.run.update(status=Status.INTERRUPTED, totals=self.totals())
                    raise
        status = records.run_status(statuses.values())
        self.run.update(status=status, totals=self.totals())
        return status

    # --- records ------------------------------------------------------------------------------
    def line(self, kind: str, r: StageRun, **extra) -> dict:
        return records.line(kind, r.stage.name, **r.where(), devices=self.opt.budget.devices,
                            energy=self.checkpoints.energy(), hours=self.hours, **extra)

    def totals(self) -> dict:
        m = self.run.manifest()
        return records.run_totals(m.get("stage_state", {}).values(), m.get("exclusive_share"))


class StageTrainer:
    """Trains one stage of a Trainer's method: seed, build, resume, then training segments and what
    follows each (interrupt, diverge, evaluate, checkpoint, finish)."""

    def __init__(self, trainer: Trainer, index: int, stage: Stage, budget_s: float):
        self.t, self.index, self.stage, self.budget_s = trainer, index, stage, budget_s
        self.run_dir, self.opt, self.meter, self.dist = trainer.run, trainer.opt, trainer.meter, trainer.dist
        self.device, self.data, self.console = trainer.device, trainer.data, trainer.console
        self.checkpoints, self.evals, self.built = trainer.checkpoints, trainer.evals, trainer.built

    def run(self) -> str:
        """Train the stage until its budget share or step limit ends it; returns its status.

        Repeats: train (draw a batch, take a step) until a stop reason, the DeviceClock running only
        there; then, off the clock: on a non-finite loss evaluate the last good checkpoint (`diverged`);
        on a signal checkpoint and raise `Interrupted`; evaluate if due or final; checkpoint. This loop
        is the only place evaluation and checkpointing happen, so they never count against the budget.
        """
        stage, budget_s = self.stage, self.budget_s
        r, self._profiler = None, None
        try:
            r = self._start()
            if self.opt.profile_steps > 0 and self.dist.main:
                self._profiler = StepProfiler(self.run_dir.path / "profile", stage.name, self.opt.profile_steps,
                                              self.device, self.console.print)
            # an evaluation a signal stopped in an earlier life is due at once, at the step it was due
            pending = r.progress.step > 0 and r.ended() is None and self.evals.due(r)
            with ProgressBar(self.console, stage.name, budget_s, enabled=self.opt.progress) as self._bar:
                while True:
                    stop = Stop.EVAL if pending else self._train_segment(r)  # the budget clock runs in here only
                    pending = False
                    r.progress.wall_s = r.wall()
                    if stop is Stop.DIVERGED:  # first: an interrupt would checkpoint the diverged state
                        return self._diverged(r)
                    if stop is Stop.SIGNAL or self._signal(r) is not None:
                        self._interrupt(r)
                    final = r.ended() if stop is Stop.EVAL else stop if stop in (Stop.BUDGET, Stop.STEPS) else None
                    if stop is Stop.EVAL or final is not None:
                        self._evaluate(r, final=final is not None)
                    self.checkpoints.save(r)
                    if final is not None:
                        return self._finish(r, final.value)
        except Interrupted:
            raise
        except Exception as e:
            failure = _as_resource_error(e, stage.name)
            self._record_failure(failure)
            if failure is not e:
                raise failure from None
            raise
        finally:
            if r is not None:
                r.stream.close()
            if self._profiler is not None:
                self._profiler.close()

    def _record_failure(self, e: Exception) -> None:
        """Mark the stage and the run failed with `e` in one line (its traceback in error.log). A
        disk that refuses this too (full, read-only) is said on the console: run.json then still
        says `running`, which `harness report` and `--resume` recognise once this process is gone."""
        log = self.run_dir.path / ("error.log" if self.dist.main else f"error-rank{self.dist.rank}.log")
        try:
            log.write_text(traceback.format_exc())
        except OSError:  # a full or read-only disk may refuse the log: no empty one is left to mislead
            with contextlib.suppress(OSError):
                if log.stat().st_size == 0:
                    log.unlink()
        error = " ".join(f"{type(e).__name__}: {e}".split())
        try:
            self.run_dir.update_stage(self.stage.name, status=Status.FAILED, error=error)
            self.run_dir.update(status=Status.FAILED, error=error, totals=self.t.totals())
        except OSError as refused:
            self.console.print(f"[red]the failure could not be recorded in {self.run_dir.path / 'run.json'} either "
                               f"({refused.strerror or refused}): it still says running; `harness report` shows the "
                               f"run as ended without a record once this process is gone, and `harness run --resume "
                               f"{self.run_dir.path}` continues it from its last checkpoint[/red]")

    def _start(self) -> StageRun:
        """Seed, build and resume (or checkpoint step 0 of) the stage."""
        index, stage, budget_s = self.index, self.stage, self.budget_s
        seed = stage_seed(self.opt.seed, index)
        seed_everything(seed)
        data = self.data.for_stage(stage.name)  # a stage may train on its own preparation (Stage.data_options)
        stage.init(StageContext(self.device, seed, data.train, data.val, self.run_dir.path, budget_s,
                                trained=self.evals.trained()))
        self.built.add(stage.name)
        facts = stage.describe()
        if facts:
            self.run_dir.update_stage(stage.name, model=facts)
        stream = BatchStream(data.train, stage.batch_size, seed, self.device,
                             shard=(self.dist.rank, self.dist.world), workers=self.t.threads.prefetch)
        policy = self.t.threads
        self._share = ShareMeter(self.device, policy.cores, lambda: policy.intra_op, self.t.gpus,
                                 siblings=self.dist.local_world - 1)
        limits = [x for x in (self.opt.max_steps, stage.max_steps) if x is not None]
        r = StageRun(stage, stream, DeviceClock(self.device), StageProgress(), budget_s,
                     min(limits) if limits else None)
        self.meter.load_state_dict({})
        if self.dist.enabled:
            seed_everything(rank_seed(seed, self.dist.rank))  # same weights, distinct noise per rank
        try:
            loaded = self.checkpoints.resume(r, lambda msg: self.console.print(f"[yellow]{msg}[/yellow]"))
        except BaseException:
            stream.close()
            raise
        if loaded is not None:
            msg = f"stage {stage.name}: resumed at step {r.progress.step}, {format_seconds(r.clock.elapsed)} of budget spent"
            self.console.print(msg + (f" [yellow]({loaded.note})[/yellow]" if loaded.note else ""))
            if loaded.note:
                self.run_dir.update_stage(stage.name, resume_note=loaded.note)
        attach(self.dist, stage)  # rank 0's weights everywhere; gradients averaged over ranks
        self.run_dir.update_stage(stage.name, status=Status.RUNNING, budget_share_s=budget_s, batch_size=stage.batch_size,
                              max_steps=r.max_steps)
        r.wall_base, r.started = r.progress.wall_s, time.perf_counter()
        self._log = TrainLog(r)
        return r

    def _train_segment(self, r: StageRun) -> Stop:
        """Train until a stop reason; the only code the budget clock and the train energy see. The
        clock runs through the whole segment (synchronised at both ends, harness.budget); the
        losses it leaves unread are read before anything that must not follow a divergence.

        A segment never waits for the device: the losses the stage returns (device tensors) are read in
        one transfer per train line and at the segment's end (`TrainLog.read`), so a non-finite loss is
        found at most one train line late, always before a checkpoint could save its state."""
        first = r.progress.step
        with self.meter.segment("train"):
            r.clock.start()
            self._share.start()
            r.step_began = None
            try:
                stop = self._steps(r)
            finally:
                stretch = self._share.stop()
                r.clock.stop()
        if r.step_began is not None:  # the last step's time (set here only), its queued device work included
            r.progress.last_step_s = r.clock.elapsed - r.step_began
        self._stretch(r, stretch, r.progress.step - first)
        if stop is not Stop.DIVERGED and (bad := self._log.read()) is not None:
            r.diverged, stop = bad, Stop.DIVERGED
        return stop

    def _stretch(self, r: StageRun, stretch: dict, steps: int) -> None:
        """A stretch line: the segment's steps, the share of the machine it had, its GPUs' joules
        (per step too); the stage's share so far into run.json."""
        r.progress.wall_s = r.wall()
        joules = self.meter.last if self.meter.gpus else {}
        per_step = {k: v / steps for k, v in joules.items()} if steps else None
        figures = {k: v for k, v in stretch.items() if k not in ("seconds", "stretches")}
        self.run_dir.metrics.append(self.t.line("stretch", r, steps=steps, seconds=stretch.get("seconds"), **figures,
                                                joules=joules or None, joules_per_step=per_step if joules else None))
        r.progress.exclusive = combine([r.progress.exclusive, stretch])
        self.run_dir.update(exclusive_share={r.stage.name: {"device": self.device.type, **r.progress.exclusive}},
                            threads=self.t.threads.describe())

    def _steps(self, r: StageRun) -> Stop:
        p, dist = r.progress, self.dist
        while True:
            if self._signal(r) is not None:
                return Stop.SIGNAL
            before = r.clock.elapsed
            if (end := r.ended()) is not None:
                return end
            r.step_began = before
            images, labels = r.stream.next()
            batch = Batch(images, labels, p.step, r.stream.epochs_done, min(1.0, before / r.budget_s))
            r.losses = r.stage.train_step(batch)
            crash_point("step")
            now = time.perf_counter()
            every = self.opt.checkpoint_every
            done = {**r.schedule_position(), "steps": float(p.step + 1)}  # this step included
            checkpoint_due = every.due(p.last_checkpoint[every.unit], done[every.unit])
            # Under torchrun each rank trains its shard of the batch and rank 0 alone writes and evaluates;
            # this one all-reduce per step keeps the decisions (stop, evaluate, checkpoint, diverged,
            # interrupted) identical on all ranks.
            if dist.enabled:  # the all-reduce reads the losses: every rank stops at the same step
                agreed = agree(dist, self.device, r.clock.elapsed, checkpoint_due, self.t.signals.received, r.losses)
                r.clock.agree(agreed.elapsed)
                r.losses, r.signum, checkpoint_due = agreed.losses, agreed.signum, agreed.checkpoint_due
                if not _finite(r.losses):
                    r.diverged = (p.step + 1, r.losses)
                    return Stop.DIVERGED
            p.step += 1
            p.images += len(images) * dist.world
            self._log.add(p.step, r.losses)  # unread: a single process reads them at train lines
            if self._profiler is not None:
                self._profiler.step()
            line = self._log.due(r, now, self.opt.log_every_s)
            if line or self._log.full:
                if (bad := self._log.read()) is not None:
                    r.diverged = bad
                    return Stop.DIVERGED
                if line:
                    self._log_train(r, now)
            if self.evals.due(r):
                return Stop.EVAL
            if checkpoint_due and r.ended() is None:  # at the end, the final checkpoint follows anyway
                return Stop.CHECKPOINT  # every segment ends with a checkpoint

    def _signal(self, r: StageRun) -> int | None:
        """The signal to honour now: this process's, or in a data-parallel run the agreed one."""
        return r.signum if self.dist.enabled else self.t.signals.received

    def _log_train(self, r: StageRun, now: float) -> None:
        """A train line with the mean losses and the share of the machine since the last one, every
        `log_every_s` and at step 1; then the thread count is checked against the load it saw."""
        losses, ips = self._log.line(r, now)
        window = self._share.line()
        self.run_dir.metrics.append(self.t.line("train", r, images_per_s=ips, share=window.get("share"), **losses))
        self.run_dir.update(heartbeat=records.heartbeat(r.stage.name, r.progress.step))
        long_enough = window.get("seconds", 0.0) >= MIN_WINDOW_S  # the first line's window is one step: too coarse
        self._bar.show(r.clock.elapsed, r.progress.step, ips, losses, window.get("share") if long_enough else None)
        policy = self.t.threads
        before = policy.intra_op
        if policy.recheck(window.get("others"), r.stage.name, r.progress.step, window.get("seconds", 0.0)) is not None:
            self.console.print(f"[dim]stage {r.stage.name}: other processes keep {window['others']:.1f} of "
                               f"{policy.cores.usable:g} cores busy: {before} -> {policy.intra_op} threads[/dim]")

    def _evaluate(self, r: StageRun, final: bool) -> None:
        """Evaluate the stage; a signal during the evaluation stops it at once, and the stage is
        checkpointed as it stood before it, so that --resume evaluates again at the same step."""
        p = r.progress
        before = (p.evals, dict(p.last_eval))
        try:
            self.evals.stage(r, final=final)
        except Interrupted:
            p.evals, p.last_eval = before
            self._interrupt(r)

    def _interrupt(self, r: StageRun) -> None:
        self.checkpoints.save(r)
        self.run_dir.update_stage(r.stage.name, status=Status.INTERRUPTED, **self._summary(r))
        self.run_dir.update(status=Status.INTERRUPTED, totals=self.t.totals())
        raise Interrupted(self._signal(r))

    def _finish(self, r: StageRun, status: str) -> str:
        note = None
        if r.progress.step == 1 and r.clock.elapsed > r.budget_s:
            note = (f"the budget share ({format_seconds(r.budget_s)}) is shorter than one step "
                    f"({format_seconds(r.clock.elapsed)}): one step was trained and evaluated")
            self.console.print(f"[yellow]stage {r.stage.name}: {note}[/yellow]")
        self.run_dir.update_stage(r.stage.name, status=status, note=note, **self._summary(r))
        self.run_dir.update(totals=self.t.totals())
        return status

    def _diverged(self, r: StageRun) -> str:
        at, bad = r.diverged
        self.console.print(f"[red]stage {r.stage.name}: non-finite loss at step {at} {bad}; "
                           f"evaluating the last good checkpoint[/red]")
        r.progress = StageProgress()
        if self.dist.main:  # the others only keep step with rank 0's evaluation
            loaded = self.run_dir.checkpoints.load(r.stage.name)  # rank 0's own file: no broadcast here
            self.checkpoints.restore(r, checked(loaded, r.stage.name, self.checkpoints.manifest))
        self.run_dir.metrics.append(self.t.line("diverged", r, diverged_at=at, **{f"loss_{k}": v for k, v in bad.items()}))
        self.evals.stage(r, final=True)
        self.run_dir.update_stage(r.stage.name, status=Status.DIVERGED, diverged_at=at, evaluated_step=r.progress.step,
                              **self._summary(r))
        self.run_dir.update(totals=self.t.totals())
        return Status.DIVERGED

    def _summary(self, r: StageRun) -> dict:
        return r.summary(self.opt.budget.devices, self.checkpoints.energy(), self.checkpoints.energy_by_node(),
                         self.t.hours)
