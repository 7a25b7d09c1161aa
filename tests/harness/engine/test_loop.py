"""The one training loop: stop reasons, evaluation and checkpoints off the clock, checkpoint
cadence, interruption, resume and divergence; first on a fake stage (no model), then on a tiny
dcgan through the real launch path."""
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from harness.engine.budget import parse_budget, parse_every
from harness.data import DataSplits
from harness.data.shapes import ShapesDataset
from harness.engine.energy import EnergyMeter
from harness.launch.prepare import prepare_run
from harness.launch.request import RunRequest
from harness.engine.loop import Trainer
from harness.engine.options import LoopOptions
from harness.engine.signals import Interrupted
from harness.method import Method, Stage
from harness.rundir.checkpoint_files import CheckpointFiles
from harness.rundir.rundir import RunDir
from tests.conftest import ROOT, SMOKE, cli_subprocess, method_trainer, read_manifest, read_records

TINY = ("resolution=32", "width=2", "batch_size=8")


# --- a fake stage: the loop's contract without a model ----------------------------------------------
class FakeStage(Stage):
    """Counts its steps in a tensor; each step takes `step_s`, each evaluation `eval_s` of wall
    time; step `nan_at` returns a non-finite loss; after step `signal_at` a SIGINT "arrives"."""

    name = "fake"
    batch_size = 4

    def __init__(self, step_s=0.0, eval_s=0.0, nan_at=None, signal_at=None, max_steps=None):
        self.step_s, self.eval_s, self.nan_at, self.signal_at = step_s, eval_s, nan_at, signal_at
        self.max_steps = max_steps
        self.trainer = None
        self.evaluated: list[tuple[int, bool]] = []

    def init(self, ctx):
        self.count = torch.zeros(())

    def train_step(self, batch):
        assert batch.images.shape[0] == self.batch_size and batch.step == int(self.count)
        time.sleep(self.step_s)
        self.count += 1
        if self.signal_at is not None and int(self.count) == self.signal_at:
            self.trainer.signals.received = signal.SIGINT
        return {"loss": float("nan") if int(self.count) == self.nan_at else float(self.count)}

    def evaluate(self, ctx):
        time.sleep(self.eval_s)
        self.evaluated.append((ctx.step, ctx.final))
        return {"count": float(self.count)}

    def state_dict(self):
        return {"count": self.count.clone()}

    def load_state_dict(self, state):
        self.count = state["count"].clone()


def fake_trainer(run_dir, stage, budget="1h", **options):
    run = RunDir.open(run_dir) if RunDir.is_run(run_dir) else RunDir.create(run_dir, {"method": "fake"})
    data = DataSplits(ShapesDataset(8, "train"), ShapesDataset(8, "val"))
    trainer = Trainer(run, Method(stages=[stage]), data, torch.device("cpu"),
                      LoopOptions(parse_budget(budget), progress=False, **options),
                      EnergyMeter(run.path, "USA", enabled=False))
    stage.trainer = trainer
    return trainer


def count_saves(monkeypatch, kind="last"):
    saves = []
    real = CheckpointFiles.save

    def save(self, stage, state, k="last"):
        if k == kind:
            saves.append(int(state["progress"]["step"]))
        return real(self, stage, state, k)

    monkeypatch.setattr(CheckpointFiles, "save", save)
    return saves


def test_stop_reason_steps_done(tmp_path):
    stage = FakeStage(max_steps=5)
    assert fake_trainer(tmp_path / "r", stage).train() == "completed"
    s = read_manifest(tmp_path / "r")["stage_state"]["fake"]
    assert s["status"] == "completed" and s["steps"] == 5 and int(stage.count) == 5
    assert stage.evaluated == [(5, True)]  # no schedule: one final evaluation


def test_stop_reason_budget_spent_at_the_first_step_boundary_after_it(tmp_path):
    stage = FakeStage(step_s=0.05)
    assert fake_trainer(tmp_path / "r", stage, budget="0.3s").train() == "budget_exhausted"
    s = read_manifest(tmp_path / "r")["stage_state"]["fake"]
    assert s["budget_s"] >= 0.3 and s["budget_s"] - s["last_step_s"] < 0.3  # the last step started in budget
    assert stage.evaluated == [(s["steps"], True)]


def test_stop_reason_max_steps_option_caps_the_stage(tmp_path):
    stage = FakeStage(max_steps=50)
    assert fake_trainer(tmp_path / "r", stage, max_steps=3).train() == "completed"
    assert read_manifest(tmp_path / "r")["stage_state"]["fake"]["max_steps"] == 3 and int(stage.count) == 3


def test_evaluation_and_checkpoints_are_off_the_clock(tmp_path):
    """Three evaluations of 0.4 s each and a checkpoint after every step: the budget clock sees
    only the six 10 ms steps; the wall clock sees everything."""
    stage = FakeStage(step_s=0.01, eval_s=0.4, max_steps=6)
    trainer = fake_trainer(tmp_path / "r", stage, eval_every=parse_every("2steps"),
                           checkpoint_every=parse_every("1steps"))
    assert trainer.train() == "completed"
    assert stage.evaluated == [(2, False), (4, False), (6, True)]
    s = read_manifest(tmp_path / "r")["stage_state"]["fake"]
    assert 0.06 <= s["budget_s"] < 0.4  # less than one evaluation
    assert s["wall_s"] >= 0.8  # the evaluations before the last segment (the final one is in its eval_s)
    evals = [r for r in read_records(tmp_path / "r") if r["kind"] == "eval"]
    assert [r["budget_s"] < 0.4 for r in evals] == [True] * 3 and evals[-1]["eval_s"] >= 0.4


def test_checkpoint_cadence(tmp_path, monkeypatch):
    saves = count_saves(monkeypatch)
    every_step, never = parse_every("1steps"), parse_every("1000000steps")
    assert fake_trainer(tmp_path / "a", FakeStage(max_steps=4), checkpoint_every=every_step).train() == "completed"
    assert saves == [0, 1, 2, 3, 4]  # step 0, then after every step
    saves.clear()
    assert fake_trainer(tmp_path / "b", FakeStage(max_steps=4), checkpoint_every=never).train() == "completed"
    assert saves == [0, 4]  # step 0 and the end
    saves.clear()
    assert fake_trainer(tmp_path / "c", FakeStage(max_steps=6), checkpoint_every=never,
                        eval_every=parse_every("3steps")).train() == "completed"
    assert saves == [0, 3, 6]  # every evaluation is followed by a checkpoint
    saves.clear()
    assert fake_trainer(tmp_path / "d", FakeStage(step_s=0.02, max_steps=12), checkpoint_every=parse_every("0.1s"),
                        ).train() == "completed"
    # 12 steps of >= 20 ms: the budget clock crosses 0.1 s and 0.2 s at least, each a checkpoint
    assert len(saves) >= 4 and saves[0] == 0 and saves[-1] == 12 and saves == sorted(set(saves))
    saves.clear()
    assert fake_trainer(tmp_path / "e", FakeStage(max_steps=7), checkpoint_every=parse_every("3steps")).train()
    assert saves == [0, 3, 6, 7]


def test_signal_checkpoints_then_resume_continues_step_clock_and_state(tmp_path, monkeypatch):
    cut = FakeStage(step_s=0.01, signal_at=3, max_steps=6)
    with pytest.raises(Interrupted) as e:
        fake_trainer(tmp_path / "r", cut).train()
    assert e.value.exit_code == 130
    m = read_manifest(tmp_path / "r")
    assert m["status"] == "interrupted" and m["stage_state"]["fake"]["steps"] == 3
    spent = m["stage_state"]["fake"]["budget_s"]
    resumed = FakeStage(step_s=0.01, max_steps=6)
    assert fake_trainer(tmp_path / "r", resumed).train() == "completed"
    s = read_manifest(tmp_path / "r")["stage_state"]["fake"]
    assert int(resumed.count) == 6 and s["steps"] == 6  # continued from 3, not restarted
    assert s["budget_s"] > spent  # the clock carried on from the checkpoint
    assert resumed.evaluated == [(6, True)]


class Crash(BaseException):
    """What kill -9 does to the loop: nothing after it runs (not even the failure handling)."""


class CrashingStage(FakeStage):
    def train_step(self, batch):
        if batch.step == 5:
            raise Crash
        return super().train_step(batch)


def test_lines_past_the_checkpoint_are_set_aside_on_resume(tmp_path):
    trainer = fake_trainer(tmp_path / "r", CrashingStage(max_steps=8), log_every_s=0.0,
                           checkpoint_every=parse_every("3steps"))
    with pytest.raises(Crash):
        trainer.train()
    lines = read_records(tmp_path / "r")
    assert [x["step"] for x in lines if x["kind"] == "train"] == [1, 2, 3, 4, 5]  # checkpoint at 3
    assert [x["step"] for x in lines if x["kind"] == "stretch"] == [3]  # the stretch that ended there
    assert fake_trainer(tmp_path / "r", FakeStage(max_steps=8), log_every_s=0.0).train() == "completed"
    steps = [x["step"] for x in read_records(tmp_path / "r") if x["kind"] == "train"]
    assert steps == list(range(1, 9))  # one history
    lost = [json.loads(line)["step"] for line in (tmp_path / "r" / "metrics.lost.jsonl").read_text().splitlines()]
    assert lost == [4, 5]  # kept, not deleted
    account = read_manifest(tmp_path / "r")["stage_state"]["fake"]["lost"]
    assert account["segments"] == 1 and account["lines"] == 2 and account["budget_s"] >= 0


def test_a_non_finite_loss_stops_as_diverged_and_evaluates_the_last_good_state(tmp_path):
    stage = FakeStage(nan_at=4, max_steps=10)
    trainer = fake_trainer(tmp_path / "r", stage, eval_every=parse_every("2steps"))
    assert trainer.train() == "diverged"
    s = read_manifest(tmp_path / "r")["stage_state"]["fake"]
    assert s["diverged_at"] == 4 and s["evaluated_step"] == 2  # the checkpoint after the step-2 evaluation
    assert stage.evaluated == [(2, False), (2, True)] and int(stage.count) == 2


class TensorLossStage(FakeStage):
    """FakeStage whose losses are 0-d tensors, as real stages return them (unread on the device)."""

    def train_step(self, batch):
        return {k: torch.tensor(v) for k, v in super().train_step(batch).items()}


def test_losses_are_read_once_per_train_line_not_per_step(tmp_path, monkeypatch):
    from harness.engine.train_log import TrainLog

    reads = []
    real = TrainLog.read
    monkeypatch.setattr(TrainLog, "read", lambda self: reads.append(len(self.pending)) or real(self))
    stage = TensorLossStage(max_steps=30)
    assert fake_trainer(tmp_path / "r", stage, log_every_s=1e9).train() == "completed"
    assert reads == [1, 29]  # step 1's line, then the other 29 steps at the segment's end, together
    line = [r for r in read_records(tmp_path / "r") if r["kind"] == "train"]
    assert [r["loss"] for r in line] == [1.0]
    monkeypatch.setattr(TrainLog, "MAX_PENDING", 8)  # at most this many unread steps, line or not
    reads.clear()
    assert fake_trainer(tmp_path / "r2", TensorLossStage(max_steps=30), log_every_s=1e9).train() == "completed"
    assert reads == [1, 8, 8, 8, 5]


def test_a_late_read_non_finite_loss_still_names_its_step_and_is_never_checkpointed(tmp_path, monkeypatch):
    """No train line between step 1 and the end: the NaN of step 4 is found when the segment ends at
    step 10, reported as step 4, and the stage evaluates its last good checkpoint (step 0)."""
    saves = count_saves(monkeypatch)
    stage = TensorLossStage(nan_at=4, max_steps=10)
    assert fake_trainer(tmp_path / "r", stage, log_every_s=1e9).train() == "diverged"
    s = read_manifest(tmp_path / "r")["stage_state"]["fake"]
    assert s["diverged_at"] == 4 and s["evaluated_step"] == 0
    assert saves == [0] and stage.evaluated == [(0, True)] and int(stage.count) == 0
    diverged = [r for r in read_records(tmp_path / "r") if r["kind"] == "diverged"]
    assert diverged[0]["diverged_at"] == 4 and diverged[0]["loss_loss"] != diverged[0]["loss_loss"]  # NaN


def test_train_lines_average_each_loss_over_the_steps_that_report_it(tmp_path):
    """WGAN's generator loss comes every n_critic steps: its mean is over those steps, not all."""
    from harness.engine.train_log import TrainLog

    class Clock:
        elapsed = 0.0

    class Run:
        clock, progress = Clock(), type("P", (), {"images": 0, "step": 2, "wall_s": 0.0})()

        def wall(self, now):
            return 0.0

    log = TrainLog(Run())
    log.add(1, {"loss_d": torch.tensor(1.0), "loss_g": torch.tensor(5.0)})
    log.add(2, {"loss_d": 3.0})
    assert log.read() is None
    assert log.line(Run(), 1.0)[0] == {"loss_d": 2.0, "loss_g": 5.0}


def trainer_for(run_dir, max_steps, interrupt_after=None, budget="1h"):
    """A Trainer for a tiny dcgan; `interrupt_after=k` behaves as if SIGINT arrived during step k."""
    return method_trainer("dcgan", run_dir, max_steps, TINY, interrupt_after, budget)


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    straight, m1 = trainer_for(tmp_path / "straight", 6)
    assert straight.train() == "completed"
    cut, _ = trainer_for(tmp_path / "cut", 6, interrupt_after=3)
    with pytest.raises(Interrupted) as e:
        cut.train()
    assert e.value.exit_code == 130
    assert read_manifest(tmp_path / "cut")["status"] == "interrupted"
    assert read_manifest(tmp_path / "cut")["stage_state"]["gan"]["steps"] == 3
    resumed, m2 = trainer_for(tmp_path / "cut", 6)
    assert resumed.train() == "completed"
    a, b = m1.stages[0].state_dict(), m2.stages[0].state_dict()
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"
    la = [r for r in read_records(tmp_path / "straight") if r["kind"] == "train"]
    lb = [r for r in read_records(tmp_path / "cut") if r["kind"] == "train"]
    assert la[0]["loss_d"] == lb[0]["loss_d"]
    assert read_manifest(tmp_path / "cut")["stage_state"]["gan"]["steps"] == 6


def _wait_for_train_line(run_dir, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run_dir / "metrics.jsonl").exists() and any(r["kind"] == "train" for r in read_records(run_dir)):
            return
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        time.sleep(0.2)
    raise AssertionError("no training line appeared")


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_signal_checkpoints_and_resume_continues_clock_and_steps(tmp_path, sig, code):
    """Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a lost ssh session) alike: checkpoint, exit
    128 + the signal's number, status interrupted; --resume carries on."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "harness", "run", "--method", "dcgan", "--budget", "8s", "--run-dir", str(run_dir),
            *[a for t in TINY for a in ("--set", t)], *SMOKE]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                 "HARNESS_CACHE": str(tmp_path / "cache")})
    _wait_for_train_line(run_dir, proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "--resume" in err
    m = read_manifest(run_dir)
    assert m["status"] == "interrupted"
    first = m["stage_state"]["gan"]
    assert first["budget_s"] > 0 and first["steps"] >= 1
    # on a loaded machine the first steps may spend the 8 s before the signal, which then stops the
    # final evaluation: --resume evaluates without training further
    spent = first["budget_s"] >= 8
    assert (run_dir / "checkpoints" / "gan-last.pt").is_file()

    r = cli_subprocess("run", "--resume", run_dir, "--no-progress", "--no-energy", "--fid-backbone", "standin",
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "HARNESS_CACHE": str(tmp_path / "cache")})
    assert r.code == 0, r.err
    assert f"resumed at step {first['steps']}" in r.err
    m = read_manifest(run_dir)
    final = m["stage_state"]["gan"]
    assert m["status"] == "budget_exhausted"
    assert final["steps"] == first["steps"] if spent else final["steps"] > first["steps"]
    assert final["budget_s"] - final["last_step_s"] < 8.0 <= final["budget_s"]
    assert [x["final"] for x in read_records(run_dir) if x["kind"] == "eval"] == [True]
    train = [r for r in read_records(run_dir) if r["kind"] == "train"]
    steps = [r["step"] for r in train]
    budget = [r["budget_s"] for r in train]
    assert steps == sorted(steps) and budget == sorted(budget)  # the clock and the step count carry on


@pytest.mark.parametrize("second", ["in the step", "in the checkpoint write"])
def test_a_second_sigint_is_the_same_request_and_the_status_stays_true(tmp_path, monkeypatch, second):
    """Two Ctrl-C in quick succession: the second used to get Python's default handler (a
    KeyboardInterrupt wherever it landed, the checkpoint write included), leaving run.json `running`."""
    import os

    stage = FakeStage()
    trainer = fake_trainer(tmp_path / "r", stage)
    step, save = stage.train_step, CheckpointFiles.save

    def train_step(batch):
        out = step(batch)
        if batch.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode
            if second == "in the step":
                os.kill(os.getpid(), signal.SIGINT)
        return out

    def slow_save(self, *args, **kwargs):
        if second == "in the checkpoint write" and trainer.signals.received:
            os.kill(os.getpid(), signal.SIGINT)
        return save(self, *args, **kwargs)

    stage.train_step = train_step
    monkeypatch.setattr(CheckpointFiles, "save", slow_save)
    try:
        trainer.train()
        caught = None
    except BaseException as e:  # a KeyboardInterrupt must not end the test session
        caught = e
    assert isinstance(caught, Interrupted) and caught.exit_code == 130, repr(caught)
    m = read_manifest(tmp_path / "r")
    assert m["status"] == "interrupted" and m["stage_state"]["fake"]["status"] == "interrupted"
    assert RunDir(tmp_path / "r").checkpoints.load("fake").state["progress"]["step"] == 3


@pytest.mark.parametrize("final", [True, False])
def test_sigterm_during_an_evaluation_is_honoured_at_once_and_the_evaluation_repeated(tmp_path, final):
    """An evaluation (50k-sample FID: hours) does not hold a SIGTERM back until it ends: the stage
    checkpoints as it stood before the evaluation and stops; --resume evaluates at that step."""
    import os

    stage = FakeStage(max_steps=3 if final else 5)
    trainer = fake_trainer(tmp_path / "r", stage, eval_every=parse_every("2steps"))
    quick = stage.evaluate

    def evaluate(ctx):
        if ctx.final == final:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(20.0)  # a long evaluation
        return quick(ctx)

    stage.evaluate = evaluate
    t0 = time.monotonic()
    with pytest.raises(Interrupted) as e:
        trainer.train()
    assert e.value.exit_code == 143 and time.monotonic() - t0 < 10
    m = read_manifest(tmp_path / "r")
    assert m["status"] == "interrupted" and m["stage_state"]["fake"]["status"] == "interrupted"
    at = 3 if final else 2
    assert RunDir(tmp_path / "r").checkpoints.load("fake").state["progress"]["step"] == at

    again = FakeStage(max_steps=stage.max_steps)
    assert fake_trainer(tmp_path / "r", again, eval_every=parse_every("2steps")).train() == "completed"
    assert again.evaluated[0] == (at, final)  # the interrupted evaluation, at its own step
    evals = [(x["step"], x["final"]) for x in read_records(tmp_path / "r") if x["kind"] == "eval"]
    assert evals == ([(2, False), (3, True)] if final else [(2, False), (4, False), (5, True)])


def test_sigterm_during_the_pipeline_evaluation_leaves_an_interrupted_run_that_resume_evaluates(tmp_path):
    import os

    calls = []

    def pipeline(ctx):
        calls.append(ctx.step)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(20.0)
        return {"score": 1.0}

    stage = FakeStage(max_steps=2)
    trainer = fake_trainer(tmp_path / "r", stage)
    trainer.method.evaluate = pipeline
    with pytest.raises(Interrupted):
        trainer.train()
    m = read_manifest(tmp_path / "r")
    assert m["status"] == "interrupted" and m["stage_state"]["fake"]["status"] == "completed"
    again = fake_trainer(tmp_path / "r", FakeStage(max_steps=2))
    again.method.evaluate = pipeline
    assert again.train() == "completed" and calls == [2, 2]
    assert [x["stage"] for x in read_records(tmp_path / "r") if x["kind"] == "eval"] == ["fake", "pipeline"]


def test_non_finite_loss_marks_diverged_and_evaluates_last_good(tmp_path):
    trainer, method = trainer_for(tmp_path / "div", 8, budget="1h")
    trainer.opt.eval_every = None
    stage = method.stages[0]
    step = stage.train_step

    def train_step(batch):
        out = step(batch)
        return {**out, "loss_d": float("nan")} if batch.step == 4 else out

    stage.train_step = train_step
    assert trainer.train() == "diverged"
    m = read_manifest(tmp_path / "div")
    s = m["stage_state"]["gan"]
    assert s["status"] == "diverged" and s["diverged_at"] == 5
    assert s["evaluated_step"] == 0  # the last good checkpoint (no evaluation happened before step 5)
    kinds = [r["kind"] for r in read_records(tmp_path / "div")]
    assert "diverged" in kinds and kinds[-1] == "eval"
    good = RunDir(tmp_path / "div").checkpoints.load("gan")
    assert all(torch.isfinite(v).all() for v in good.state["stage_state"]["G"].values() if v.is_floating_point())


def _train_every_3_steps(run_dir, max_steps: int) -> str:
    p = prepare_run(RunRequest(method="dcgan", budget="1h", max_steps=max_steps, overrides=TINY, eval_every="3steps",
                               run_dir=str(run_dir), eval_samples=0, energy=False, progress=False))
    trainer = Trainer(p.run, p.method, p.data, p.device,
                      LoopOptions(parse_budget("1h"), max_steps=max_steps, eval_every=parse_every("3steps"),
                                  progress=False),
                      EnergyMeter(p.run.path, "USA", enabled=False))
    return trainer.train()


def test_eval_schedule_by_steps(tmp_path):
    assert _train_every_3_steps(tmp_path / "r", max_steps=7) == "completed"
    evals = [r["step"] for r in read_records(tmp_path / "r") if r["kind"] == "eval"]
    assert evals == [3, 6, 7]
    assert len(list((tmp_path / "r" / "samples").glob("gan-*.png"))) == 3  # besides real.png


def test_a_new_run_keeps_a_grid_of_real_images_in_the_layout_of_its_sample_grids(tmp_path):
    """samples/real.png: the first 64 training images, as large as an evaluation's grid, for the report."""
    import numpy as np
    from PIL import Image

    _train_every_3_steps(tmp_path / "r", max_steps=3)
    real = np.asarray(Image.open(tmp_path / "r" / "samples" / "real.png"))
    (fake,) = (tmp_path / "r" / "samples").glob("gan-*.png")
    assert real.shape == np.asarray(Image.open(fake)).shape == (8 * 34 + 2, 8 * 34 + 2, 3)  # 8 x 8 of 32 px
    first = ShapesDataset(32, "train").first(64)[0]  # the top-left image is the split's first
    assert np.array_equal(real[2:34, 2:34], first[0].permute(1, 2, 0).numpy())


def test_an_evaluation_due_at_the_last_step_runs_once(tmp_path):
    """Evaluation due and training over at the same step: one (final) evaluation, not two."""
    assert _train_every_3_steps(tmp_path / "r", max_steps=6) == "completed"
    evals = [(r["step"], r["final"]) for r in read_records(tmp_path / "r") if r["kind"] == "eval"]
    assert evals == [(3, False), (6, True)]


def test_resume_falls_back_to_previous_checkpoint_and_says_so(tmp_path, cli):
    run_dir = tmp_path / "r"
    trainer, _ = trainer_for(run_dir, 4, interrupt_after=3)
    trainer.opt.checkpoint_every = parse_every("1steps")  # checkpoint after every step, so there is a `prev`
    with pytest.raises(Interrupted):
        trainer.train()
    last = run_dir / "checkpoints" / "gan-last.pt"
    last.write_bytes(last.read_bytes()[:-50])
    r = cli("run", "--resume", run_dir, "--no-progress", "--no-energy")
    assert r.code == 0, r.err
    assert "gan-last.pt does not match its sha256" in r.err and "resumed from gan-prev.pt" in r.err
    assert read_manifest(run_dir)["stage_state"]["gan"]["resume_note"]


# --- kill -9 anywhere ------------------------------------------------------------------------------
KILL_RUN = ["--method", "dcgan", "--budget", "1h", "--max-steps", "7", "--checkpoint-every", "2steps",
            "--eval-every", "3steps", "--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8",
            "--eval-samples", "0", "--no-progress", "--no-energy"]


def _subprocess_run(*args, crash=None):
    env = {"OMP_NUM_THREADS": "1", **({"HARNESS_CRASH_AT": crash} if crash else {})}  # one thread: bitwise
    return cli_subprocess("run", *args, env=env)


@pytest.fixture(scope="module")
def straight_weights(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "r"
    r = _subprocess_run(*KILL_RUN, "--run-dir", run_dir)
    assert r.code == 0, r.err
    return RunDir(run_dir).checkpoints.load("gan").state["stage_state"]


# every file operation of a checkpoint save: after last -> prev, after the new file is written
# (before fsync and rename), after its rename (before the folder's fsync); and any atomic write
@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
@pytest.mark.parametrize("point", ["step:4", "eval:1", "ckpt-rotated:2", "atomic-written@pt:3",
                                   "atomic-renamed@pt:2", "atomic-written:3"])
def test_kill_9_at_any_point_then_resume_equals_the_uninterrupted_run(tmp_path, straight_weights, point):
    """SIGKILL mid-step, mid-evaluation and between the file operations of a checkpoint save; then
    --resume: the run completes with bitwise the uninterrupted run's weights and one history."""
    run_dir = tmp_path / "r"
    r = _subprocess_run(*KILL_RUN, "--run-dir", run_dir, crash=point)
    assert r.code == -signal.SIGKILL, r.err
    assert read_manifest(run_dir)["status"] == "running"  # nothing could mark it
    r = _subprocess_run("--resume", run_dir)
    assert r.code == 0, r.err
    assert read_manifest(run_dir)["status"] == "completed"
    state = RunDir(run_dir).checkpoints.load("gan").state["stage_state"]
    for net in ("G", "D"):
        for k, v in straight_weights[net].items():
            assert torch.equal(v, state[net][k]), f"{net}.{k} differs after kill -9 at {point}"
    lines = read_records(run_dir)
    steps = [x["step"] for x in lines if x["kind"] in ("train", "eval")]
    assert steps == sorted(steps) and [x["step"] for x in lines if x["kind"] == "eval"] == [3, 6, 7]
    assert not [p for p in run_dir.rglob(".*") if ".tmp" in p.name]  # a dead writer's temporary files are gone


@pytest.mark.gpu
def test_training_steps_on_cuda_never_wait_for_the_device(tmp_path):
    """40 dcgan steps on CUDA with no train line after step 1: after the warm-up, synchronisations
    (explicit ones and those torch's sync debug mode flags) come from the segment's end only (the
    clock's stop), not from the 35 steps, which would give at least 35."""
    from benchmarks.loop_overhead import harness_loop

    times = harness_loop("dcgan", TINY, 40, 5, torch.device("cuda"), tmp_path / "r", energy=False, progress=False)
    assert times.syncs < 5, times.syncs
