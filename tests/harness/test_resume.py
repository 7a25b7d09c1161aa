"""Interruption, resume, divergence and crash safety of the one training loop."""
import signal
import subprocess
import sys
import time

import pytest
import torch

from harness.launch import RunRequest, build_method, prepare_run
from harness.loop import Interrupted, LoopOptions, Trainer
from harness.budget import parse_budget, parse_every
from harness.energy import EnergyMeter
from harness.run import RunDir
from harness.errors import CheckpointError
from tests.conftest import ROOT, SMOKE, cli_subprocess, read_manifest, read_records

TINY = ("resolution=32", "width=2", "batch_size=8")


def trainer_for(run_dir, max_steps, interrupt_after=None, budget="1h"):
    """A Trainer for a tiny dcgan; `interrupt_after=k` behaves as if SIGINT arrived during step k."""
    p = prepare_run(RunRequest(method="dcgan", budget=budget, max_steps=max_steps, overrides=TINY,
                               run_dir=str(run_dir), eval_samples=0, energy=False, progress=False, device="cpu"))
    method = build_method(p)
    trainer = Trainer(p.run, method, p.data, p.device,
                      LoopOptions(parse_budget(budget), seed=0, max_steps=max_steps, progress=False),
                      EnergyMeter(p.run.path, "USA", enabled=False))
    if interrupt_after is not None:
        stage = method.stages[0]
        step = stage.train_step

        def train_step(batch):
            out = step(batch)
            if batch.step + 1 == interrupt_after:
                trainer.signals.received = signal.SIGINT
            return out

        stage.train_step = train_step
    return trainer, method


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


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_and_resume_continues_clock_and_steps(tmp_path, sig, code):
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
    assert 0 < first["budget_s"] < 8 and first["steps"] >= 1
    assert (run_dir / "checkpoints" / "gan-last.pt").is_file()

    r = cli_subprocess("run", "--resume", run_dir, "--no-progress", "--no-energy", "--fid-backbone", "standin",
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                            "HARNESS_CACHE": str(tmp_path / "cache")})
    assert r.code == 0, r.err
    assert f"resumed at step {first['steps']}" in r.err
    m = read_manifest(run_dir)
    final = m["stage_state"]["gan"]
    assert m["status"] == "budget_exhausted"
    assert final["steps"] > first["steps"]
    assert final["budget_s"] - final["last_step_s"] < 8.0 <= final["budget_s"]
    train = [r for r in read_records(run_dir) if r["kind"] == "train"]
    steps = [r["step"] for r in train]
    budget = [r["budget_s"] for r in train]
    assert steps == sorted(steps) and budget == sorted(budget)  # the clock and the step count carry on


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
    good = RunDir(tmp_path / "div").load_checkpoint("gan")
    assert all(torch.isfinite(v).all() for v in good.state["stage_state"]["G"].values() if v.is_floating_point())


def _train_every_3_steps(run_dir, max_steps: int) -> str:
    p = prepare_run(RunRequest(method="dcgan", budget="1h", max_steps=max_steps, overrides=TINY, eval_every="3steps",
                               run_dir=str(run_dir), eval_samples=0, energy=False, progress=False))
    trainer = Trainer(p.run, build_method(p), p.data, p.device,
                      LoopOptions(parse_budget("1h"), max_steps=max_steps, eval_every=parse_every("3steps"),
                                  progress=False),
                      EnergyMeter(p.run.path, "USA", enabled=False))
    return trainer.train()


def test_eval_schedule_by_steps(tmp_path):
    assert _train_every_3_steps(tmp_path / "r", max_steps=7) == "completed"
    evals = [r["step"] for r in read_records(tmp_path / "r") if r["kind"] == "eval"]
    assert evals == [3, 6, 7]
    assert len(list((tmp_path / "r" / "samples").glob("*.png"))) == 3


def test_an_evaluation_due_at_the_last_step_runs_once(tmp_path):
    """Evaluation due and training over at the same step: one (final) evaluation, not two."""
    assert _train_every_3_steps(tmp_path / "r", max_steps=6) == "completed"
    evals = [(r["step"], r["final"]) for r in read_records(tmp_path / "r") if r["kind"] == "eval"]
    assert evals == [(3, False), (6, True)]


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r", {"method": "dcgan"})
    good = {"w": torch.arange(10.0), "step": 1}
    run.save_checkpoint("gan", good)

    import harness.run as hr

    real_replace = hr.os.replace

    def crash(*a, **k):  # the process dies right before the new file is renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(hr.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint("gan", {"w": torch.zeros(10), "step": 2})
    monkeypatch.setattr(hr.os, "replace", real_replace)
    loaded = RunDir(run.path).load_checkpoint("gan")
    assert loaded.state["step"] == 1 and torch.equal(loaded.state["w"], good["w"])

    # a torn write of the file itself (no rename): `last` fails its sha256, `prev` is used and named
    run.save_checkpoint("gan", {"w": torch.ones(10), "step": 3})
    last = run.checkpoint_path("gan")
    last.write_bytes(last.read_bytes()[:100])
    loaded = RunDir(run.path).load_checkpoint("gan")
    assert loaded.state["step"] == 1 and "resumed from gan-prev.pt" in loaded.note
    run.checkpoint_path("gan", "prev").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        RunDir(run.path).load_checkpoint("gan")


def test_resume_falls_back_to_previous_checkpoint_and_says_so(tmp_path, cli):
    run_dir = tmp_path / "r"
    trainer, _ = trainer_for(run_dir, 4, interrupt_after=3)
    trainer.opt.checkpoint_every_s = 0.0  # checkpoint after every step, so there is a `prev`
    with pytest.raises(Interrupted):
        trainer.train()
    last = run_dir / "checkpoints" / "gan-last.pt"
    last.write_bytes(last.read_bytes()[:-50])
    r = cli("run", "--resume", run_dir, "--no-progress", "--no-energy")
    assert r.code == 0, r.err
    assert "gan-last.pt does not match its sha256" in r.err and "resumed from gan-prev.pt" in r.err
    assert read_manifest(run_dir)["stage_state"]["gan"]["resume_note"]
