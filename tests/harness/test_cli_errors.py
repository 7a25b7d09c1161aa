"""Every bad input is one line on stderr, exit code 2, no traceback, nothing on disk overwritten."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SMOKE, cli_subprocess, read_manifest

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8", *SMOKE]


def one_line_error(r, *needles):
    assert r.code == 2, (r.code, r.out, r.err)
    lines = [line for line in r.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], lines[0]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One short dcgan run, shared by the tests that try to misuse it."""
    from harness.cli import main

    path = tmp_path_factory.mktemp("runs") / "done"
    main(["run", "--method", "dcgan", "--budget", "2s", "--run-dir", str(path), *TINY])  # returns on success
    assert read_manifest(path)["status"] == "budget_exhausted"
    return path


def test_unknown_method(cli, tmp_path):
    one_line_error(cli("run", "--method", "nope", "--budget", "1m", "--run-dir", tmp_path / "r"),
                   "unknown method 'nope'", "dcgan")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("budget", ["10", "5 minutes", "0s", "-3h", "0gpuh", "h"])
def test_bad_budget(cli, tmp_path, budget):
    one_line_error(cli("run", "--method", "dcgan", "--budget", budget, "--run-dir", tmp_path / "r", *TINY), "budget")
    assert not (tmp_path / "r").exists()


def test_missing_budget(cli, tmp_path):
    one_line_error(cli("run", "--method", "dcgan", "--run-dir", tmp_path / "r"), "--budget is required")


def test_unknown_set_key(cli, tmp_path):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--set", "learning_rate=1e-3",
                       "--run-dir", tmp_path / "r"), "unknown config key 'learning_rate'", "lr_g")


@pytest.mark.parametrize("pair", ["lr_g=fast", "batch_size=1.5", "loss=vanilla", "resolution=48", "betas=[0.5]"])
def test_wrong_type_or_value(cli, tmp_path, pair):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--set", pair, "--run-dir", tmp_path / "r"))
    assert not (tmp_path / "r").exists()


def test_bad_eval_every(cli, tmp_path):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--eval-every", "often",
                       "--run-dir", tmp_path / "r", *TINY), "schedule")


@pytest.mark.parametrize("every", ["0s", "off", "never", "-5steps"])
def test_checkpoints_cannot_be_turned_off(cli, tmp_path, every):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--checkpoint-every", every,
                       "--run-dir", tmp_path / "r", *TINY), "schedule")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("spec,needle", [
    ("cifar10:/no/such/path", "not found"),
    ("npz:/no/such.npz", "not found"),
    ("folder:EMPTY", "no images"),
    ("celeba:EMPTY", "no images"),
    ("mnist:/x", "unknown dataset kind"),
    ("cifar10", "needs a path"),
])
def test_missing_or_empty_dataset(cli, tmp_path, spec, needle):
    empty = tmp_path / "empty"
    empty.mkdir()
    spec = spec.replace("EMPTY", str(empty))
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--data", spec, "--run-dir", tmp_path / "r",
                       *TINY), needle)
    assert not (tmp_path / "r").exists()


def test_images_of_the_wrong_size(cli, tmp_path):
    np.savez(tmp_path / "small.npz", images=np.zeros((20, 16, 16, 3), np.uint8))
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--data", f"npz:{tmp_path / 'small.npz'}",
                       "--run-dir", tmp_path / "r", *TINY), "16x16", "smaller than 32x32")
    np.savez(tmp_path / "gray.npz", images=np.zeros((20, 32, 32), np.uint8))
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1m", "--data", f"npz:{tmp_path / 'gray.npz'}",
                       "--run-dir", tmp_path / "r", *TINY), "(N, H, W, 3)")


def test_resume_of_a_directory_that_is_not_a_run(cli, tmp_path):
    (tmp_path / "notarun").mkdir()
    one_line_error(cli("run", "--resume", tmp_path / "notarun"), "not a run directory")
    one_line_error(cli("run", "--resume", tmp_path / "missing"), "not a run directory")


def test_resume_with_different_settings(cli, finished_run):
    before = snapshot(finished_run)
    one_line_error(cli("run", "--resume", finished_run, "--budget", "5m"), "--budget 2s")
    one_line_error(cli("run", "--resume", finished_run, "--set", "lr_g=1e-3"), "config differs in: lr_g")
    one_line_error(cli("run", "--resume", finished_run, "--method", "wgan"), "run of 'dcgan'")
    one_line_error(cli("run", "--resume", finished_run, "--seed", "3"), "--seed 0")
    assert snapshot(finished_run) == before


def test_run_dir_holding_a_different_run(cli, finished_run):
    before = snapshot(finished_run)
    one_line_error(cli("run", "--method", "lsgan", "--budget", "2s", "--run-dir", finished_run, *TINY), "dcgan")
    one_line_error(cli("run", "--method", "dcgan", "--budget", "2s", "--run-dir", finished_run,
                       "--set", "resolution=32", "--set", "width=4", *SMOKE), "width")
    assert snapshot(finished_run) == before


def test_run_dir_that_is_not_empty_and_not_a_run(cli, tmp_path):
    d = tmp_path / "occupied"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    one_line_error(cli("run", "--method", "dcgan", "--budget", "2s", "--run-dir", d, *TINY), "not empty")
    assert (d / "thesis.tex").read_text() == "precious" and len(list(d.iterdir())) == 1


def test_corrupt_checkpoint_with_no_fallback(cli, finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run, run)
    for p in (run / "checkpoints").glob("gan-*.pt"):
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])  # truncated
    m = read_manifest(run)
    m["status"] = "interrupted"
    m["stage_state"]["gan"]["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(m))
    before = snapshot(run)
    one_line_error(cli("run", "--resume", run), "no loadable checkpoint")
    assert snapshot(run) == before


def test_usage_errors_are_one_line_too(cli):
    one_line_error(cli("run", "--nonsense"), "No such option")
    one_line_error(cli("run", "--seed", "abc"), "--seed")


def test_no_traceback_from_a_fresh_interpreter(tmp_path):
    r = cli_subprocess("run", "--method", "dcgan", "--budget", "soon", "--run-dir", tmp_path / "r")
    one_line_error(r, "malformed budget 'soon'")


@pytest.mark.parametrize("code,reason", [("ENOSPC", "No space left on device"), ("EROFS", "Read-only file system")])
def test_a_full_disk_mid_run_is_one_line_a_failed_run_and_no_half_files(cli, tmp_path, monkeypatch, code, reason):
    """ENOSPC (or a disk remounted read-only) while a checkpoint is written, simulated at fsync,
    where the kernel reports it for written-back data (this machine may not mount a small tmpfs;
    as root, permission bits would not stop a write)."""
    import errno
    import os

    from harness.rundir.rundir import RunDir

    real_fsync, checkpoints = os.fsync, []

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")
        if name.endswith(".pt"):
            checkpoints.append(name)
            if len(checkpoints) > 1:  # the step-0 checkpoint fits, the next does not
                raise OSError(getattr(errno, code), reason, name)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run_dir = tmp_path / "r"
    r = cli("run", "--method", "dcgan", "--budget", "1h", "--max-steps", "3", "--checkpoint-every", "1steps",
            "--run-dir", run_dir, *TINY)
    monkeypatch.undo()
    lines = r.err.strip().splitlines()
    assert r.code == 2 and "Traceback" not in r.err, r.err
    assert lines[-1].startswith(f"error: {reason}: ") and ".tmp" in lines[-1]  # one line, naming the file
    m = read_manifest(run_dir)
    assert m["status"] == "failed" and reason in m["stage_state"]["gan"]["error"]
    assert not [p.name for p in (run_dir / "checkpoints").iterdir() if ".tmp" in p.name]
    assert RunDir(run_dir).checkpoints.load("gan").state["progress"]["step"] == 0  # the last good one stands


def test_a_name_too_long_and_an_unwritable_report_folder_are_one_line(cli, tmp_path):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", tmp_path / ("x" * 300), *TINY),
                   "File name too long")
    r = cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", tmp_path / "r", *TINY)
    assert r.code == 0, r.err
    (tmp_path / "a-file").write_text("not a folder")
    one_line_error(cli("report", tmp_path / "r", "--out", tmp_path / "a-file" / "report"), "Not a directory")


def test_a_corrupt_npz_is_one_line(cli, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 64)  # a zip header and nothing behind it
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1s", "--data", f"npz:{bad}", "--run-dir",
                       tmp_path / "r", *TINY), "cannot read")
    assert not (tmp_path / "r").exists()


def test_a_run_directory_deleted_mid_run_is_one_line(cli, tmp_path, monkeypatch):
    """Someone removes the run directory while a run writes into it: ENOENT on the next checkpoint is
    an environment fault (one line, exit 2, naming the file), not a traceback."""
    import shutil

    from harness.rundir.checkpoint_files import CheckpointFiles

    real, calls = CheckpointFiles.save, []

    def save(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            shutil.rmtree(self.folder)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CheckpointFiles, "save", save)
    r = cli("run", "--method", "dcgan", "--budget", "1h", "--max-steps", "3", "--checkpoint-every", "1steps",
            "--run-dir", tmp_path / "r", *TINY)
    assert r.code == 2 and "Traceback" not in r.err, r.err
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("error: No such file or directory: ") and "removed while the harness was running" in last


def _mount_namespaces() -> bool:
    import shutil
    import subprocess

    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(not _mount_namespaces(), reason="needs unshare -m and mount (a private tmpfs)")
def test_a_disk_that_fills_during_training_is_said_and_the_run_is_recognised_as_ended(cli, tmp_path):
    """A real full disk (a 4 MB tmpfs in a private mount namespace, filled after the first
    checkpoint): the run ends with one error line, and since marking it failed fails too, says so;
    `harness report` then shows it as dead, and `--resume` (with space again) says what it found
    and completes it."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    driver = tmp_path / "fill.py"
    driver.write_text(
        "import os, sys\n"
        "from harness.rundir.checkpoint_files import CheckpointFiles\n"
        "real, calls = CheckpointFiles.save, []\n"
        "def save(self, *a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 2:  # after the step-0 checkpoint, fill the disk\n"
        "        with open(os.path.join(sys.argv[1], 'filler'), 'wb') as f:\n"
        "            try:\n"
        "                while True:\n"
        "                    f.write(bytes(1 << 16)); f.flush(); os.fsync(f.fileno())\n"
        "            except OSError:\n"
        "                pass\n"
        "    return real(self, *a, **k)\n"
        "CheckpointFiles.save = save\n"
        "from harness.cli import main\n"
        "main(sys.argv[2:])\n")
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    args = ["run", "--method", "dcgan", "--budget", "1h", "--max-steps", "4", "--checkpoint-every", "1steps",
            "--run-dir", str(mnt / "r"), *TINY]
    script = (f"mount -t tmpfs -o size=4m tmpfs {mnt} && {sys.executable} {driver} {mnt} {' '.join(args)} "
              f"2> {out / 'err'}; echo $? > {out / 'code'}; cp -a {mnt / 'r'} {out / 'r'}")
    subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                   timeout=300, check=True)
    err = (out / "err").read_text()
    assert (out / "code").read_text().strip() == "2" and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: No space left on device")
    assert "could not be recorded" in lines[-2] and "it still says running" in lines[-2]
    run = out / "r"
    assert read_manifest(run)["status"] == "running"
    assert not (run / "error.log").exists()  # not an empty one: the disk took none of it

    r = cli("report", run, "--out", tmp_path / "report")
    assert r.code == 0, r.err
    assert "dead (pid" in (tmp_path / "report" / "tables" / "runs.csv").read_text()

    r = cli("run", "--resume", run, "--no-progress", "--no-energy")
    assert r.code == 0, r.err
    assert "ended without recording its end" in r.err
    assert read_manifest(run)["status"] == "completed"
