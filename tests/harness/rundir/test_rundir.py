"""Run directories: atomic checkpoints with their sha256, and the fallback to `prev`."""
import pytest
import torch

from harness.errors import CheckpointError
from harness.rundir.rundir import RunDir
from tests.conftest import read_manifest


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r", {"method": "dcgan"})
    good = {"w": torch.arange(10.0), "step": 1}
    run.checkpoints.save("gan", good)

    import harness.rundir.rundir as hr

    real_replace = hr.os.replace

    def crash(*a, **k):  # the process dies right before the new file is renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(hr.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run.checkpoints.save("gan", {"w": torch.zeros(10), "step": 2})
    monkeypatch.setattr(hr.os, "replace", real_replace)
    loaded = RunDir(run.path).checkpoints.load("gan")
    assert loaded.state["step"] == 1 and torch.equal(loaded.state["w"], good["w"])

    # a torn write of the file itself (no rename): `last` fails its sha256, `prev` is used and named
    run.checkpoints.save("gan", {"w": torch.ones(10), "step": 3})
    last = run.checkpoints.path("gan")
    last.write_bytes(last.read_bytes()[:100])
    loaded = RunDir(run.path).checkpoints.load("gan")
    assert loaded.state["step"] == 1 and "resumed from gan-prev.pt" in loaded.note
    run.checkpoints.path("gan", "prev").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        RunDir(run.path).checkpoints.load("gan")


def test_a_missing_last_checkpoint_falls_back_to_prev_and_says_so(tmp_path):
    run = RunDir.create(tmp_path / "r", {"method": "dcgan"})
    run.checkpoints.save("gan", {"step": 1})
    run.checkpoints.save("gan", {"step": 2})  # step 1 becomes `prev`
    run.checkpoints.path("gan").unlink()
    loaded = RunDir(run.path).checkpoints.load("gan")
    assert loaded.state["step"] == 1 and loaded.note == "gan-last.pt is missing; resumed from gan-prev.pt instead"


def test_liveness_tells_a_live_run_from_a_dead_one():
    from harness.rundir.records import STALE_AFTER_S, liveness

    beat = {"gan": {"time": 1000.0, "step": 5, "pid": 1, "host": "h"}}
    assert liveness({"status": "running", "heartbeat": beat}, now=1000.0 + 10) == "running"
    assert liveness({"status": "running", "heartbeat": beat}, now=1000.0 + STALE_AFTER_S + 600) == \
        "stale (no heartbeat for 15m00s)"
    assert liveness({"status": "completed", "heartbeat": beat}, now=1e9) == "completed"


def test_training_writes_a_heartbeat(cli, tmp_path):
    r = cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", tmp_path / "r", "--set", "resolution=32",
            "--set", "width=2", "--set", "batch_size=8", "--eval-samples", "0", "--no-progress", "--no-energy")
    assert r.code == 0, r.err
    beat = read_manifest(tmp_path / "r")["heartbeat"]["gan"]
    assert beat["step"] >= 1 and beat["pid"] > 0 and beat["host"]


def test_one_writer_per_stage_and_a_killed_holder_never_blocks(tmp_path):
    """A second `harness run` on a directory being trained is a one-line error naming the holder;
    after the holder is killed with -9 the directory is free again (the kernel drops the lock)."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT, SMOKE, cli_subprocess, read_records

    run_dir = tmp_path / "r"
    args = ["run", "--method", "dcgan", "--budget", "60s", "--run-dir", str(run_dir), "--set", "resolution=32",
            "--set", "width=2", "--set", "batch_size=8", *SMOKE]
    first = subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while not ((run_dir / "metrics.jsonl").exists() and read_records(run_dir)):
            assert first.poll() is None and time.time() - t0 < 120, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.2)
        second = cli_subprocess(*args)
        assert second.code == 2 and len(second.err.strip().splitlines()) == 1, second.err
        assert f"stage gan is being trained by pid {first.pid}" in second.err
        assert first.poll() is None  # the first writer is unharmed
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        RunDir(run_dir).hold(["gan"]).release()  # the dead holder's lock does not block
    finally:
        if first.poll() is None:
            first.kill()


def test_a_checkpoint_without_its_digest_or_with_flipped_bytes_is_never_loaded(tmp_path):
    import io

    run = RunDir.create(tmp_path / "r", {"method": "dcgan"})
    run.checkpoints.save("gan", {"w": torch.zeros(1000), "step": 1})
    run.checkpoints.save("gan", {"w": torch.ones(1000), "step": 2})
    last = run.checkpoints.path("gan")
    raw = bytearray(last.read_bytes())
    raw[-2000] ^= 0x40  # flip a bit inside the weights (torch.load would accept the file)
    last.write_bytes(bytes(raw))
    loaded = RunDir(run.path).checkpoints.load("gan")
    assert loaded.state["step"] == 1 and "gan-last.pt does not match its sha256" in loaded.note
    buf = io.BytesIO()
    torch.save({"w": torch.ones(1000), "step": 3}, buf)
    last.write_bytes(buf.getvalue())  # a plain torch.save file: loadable, but with no digest
    loaded = RunDir(run.path).checkpoints.load("gan")
    assert loaded.state["step"] == 1 and "carries no sha256" in loaded.note
    run.checkpoints.path("gan", "prev").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="no loadable checkpoint: .*carries no sha256"):
        RunDir(run.path).checkpoints.load("gan")


def test_leftover_temporary_files_are_removed_when_the_stage_starts_again(tmp_path):
    import os
    import subprocess
    import sys

    from harness.engine.signals import Interrupted
    from tests.harness.engine.test_loop import FakeStage, fake_trainer

    run_dir = tmp_path / "r"
    with pytest.raises(Interrupted):
        fake_trainer(run_dir, FakeStage(signal_at=2, max_steps=4)).train()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    leftovers = [run_dir / "checkpoints" / f".fake-last.tmp{pid}.pt", run_dir / f".run.tmp{pid}.json",
                 run_dir / "samples" / f".fake-final.npz.raw{pid}"]
    for f in leftovers:
        f.write_bytes(b"half a file")
    live = run_dir / "checkpoints" / f".other-last.tmp{os.getpid()}.pt"  # a live writer's: left alone
    live.write_bytes(b"x")
    assert fake_trainer(run_dir, FakeStage(max_steps=4)).train() == "completed"
    assert not any(f.exists() for f in leftovers) and live.exists()


def test_liveness_treats_an_implausible_or_missing_heartbeat_as_unknown_and_a_gone_process_as_dead():
    import socket

    from harness.rundir.records import STALE_AFTER_S, liveness

    here, gone = socket.gethostname(), 2**22 + 7  # above pid_max's default: no such process
    beat = {"gan": {"time": 1000.0, "step": 5, "pid": gone, "host": "elsewhere"}}
    # clock skew between nodes: a heartbeat from the future says nothing about the run
    assert liveness({"status": "running", "heartbeat": beat}, now=1000.0 - 3600).startswith(
        "unknown (heartbeat 1h00m00s in the future")
    assert liveness({"status": "running", "heartbeat": beat}, now=1000.0 - 5) == "running"  # within the skew allowed
    # a process on this machine that is gone ended without recording its end
    mine = {"gan": {"time": 1000.0, "step": 5, "pid": gone, "host": here}}
    assert liveness({"status": "running", "heartbeat": mine}, now=1001.0) == \
        f"dead (pid {gone} ended without recording its end)"
    import os

    mine["gan"]["pid"] = os.getpid()
    assert liveness({"status": "running", "heartbeat": mine}, now=1001.0) == "running"
    # no heartbeat at all (a run of an older harness): run.json's own time stands in for one
    old = {"status": "running", "updated": "1970-01-01T00:16:40+0000"}  # t = 1000
    assert liveness(old, now=1000.0 + 10) == "running (no heartbeat yet)"
    assert liveness(old, now=1000.0 + STALE_AFTER_S + 600) == "stale (no heartbeat; run.json last written 15m00s ago)"


def test_a_run_that_dies_before_its_first_train_line_is_not_running_forever(tmp_path):
    """The heartbeat is written when training starts, so a run killed at its first step (before any
    train line) is told apart from a live one."""
    from harness.rundir.records import liveness
    from tests.conftest import SMOKE, cli_subprocess

    r = cli_subprocess("run", "--method", "dcgan", "--budget", "1m", "--run-dir", tmp_path / "r", "--set",
                       "resolution=32", "--set", "width=2", "--set", "batch_size=8", *SMOKE,
                       env={"HARNESS_CRASH_AT": "step:1"})
    assert r.code == -9, r.err
    m = read_manifest(tmp_path / "r")
    assert m["status"] == "running" and m["heartbeat"]["gan"]["step"] == 0
    assert liveness(m).startswith("dead (pid ")
