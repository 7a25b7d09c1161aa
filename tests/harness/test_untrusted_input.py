"""Nothing on disk is trusted: a checkpoint that would run code, a checkpoint or run.json edited by
hand, bytes that are not text in metrics.jsonl, and values out of range are each refused in one
line (exit 2) or read around, and leave the run directory with a true status."""
import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from harness.rundir.checkpoint_files import CHECKPOINT_MAGIC
from harness.rundir.rundir import RunDir
from tests.conftest import SMOKE, read_manifest, read_records
from tests.harness.test_cli_errors import one_line_error, snapshot

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8", *SMOKE]
EVAL = ["--samples", "8", "--fid-backbone", "standin", "--device", "cpu"]
RESUME = ["--no-progress", "--no-energy"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A dcgan run stopped after 3 of 6 steps (status interrupted), shared by the tests that copy it."""
    from harness.cli import main

    path = tmp_path_factory.mktemp("runs") / "run"
    main(["run", "--method", "dcgan", "--budget", "1h", "--max-steps", "3", "--run-dir", str(path), *TINY])
    m = read_manifest(path)
    assert m["status"] == "completed"
    m["status"] = m["stage_state"]["gan"]["status"] = "interrupted"
    m["run"]["max_steps"] = 6  # as if it had been stopped half-way
    (path / "run.json").write_text(json.dumps(m))
    return path


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A fresh copy of the interrupted run."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def edit_manifest(run: Path, edit) -> None:
    m = read_manifest(run)
    edit(m)
    (run / "run.json").write_text(json.dumps(m))


def plant(path: Path, state) -> None:
    """`state` saved as a checkpoint with a correct digest: anyone who can write the folder can do this."""
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    path.write_bytes(CHECKPOINT_MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


class RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def ends_in_one_line_error(r, *needles):
    """A run that had started (its console line printed) and stopped with one error line."""
    assert r.code == 2 and "Traceback" not in r.err, (r.code, r.err)
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), last


def last_state(run: Path) -> dict:
    return RunDir(run).checkpoints.load("gan").state


# --- checkpoints -----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(cli, run, tmp_path, command):
    marker = tmp_path / "ran"
    state = last_state(run)
    state["stage_state"]["extra"] = RunsCode(marker)
    plant(run / "checkpoints" / "gan-last.pt", state)  # a good gan-prev.pt stands beside it
    before = snapshot(run)
    r = cli("eval", run, *EVAL) if command == "eval" else cli("run", "--resume", run, *RESUME)
    one_line_error(r, "gan-last.pt", "posix.system", "refused")
    assert not marker.exists()
    assert snapshot(run) == before


def test_the_checkpoints_this_harness_writes_load_without_unpickling_code(run):
    from harness.rundir.checkpoint_files import _load_verified

    state = _load_verified(run / "checkpoints" / "gan-last.pt")
    assert state["rng"]["numpy"][1].dtype.name == "uint32" and state["config"]["width"] == 2


def test_an_older_checkpoint_without_its_config_still_loads(cli, run):
    state = last_state(run)
    del state["config"]  # as this harness wrote them before checkpoints carried their config
    plant(run / "checkpoints" / "gan-last.pt", state)
    r = cli("run", "--resume", run, *RESUME)
    assert r.code == 0, r.err
    assert read_manifest(run)["stage_state"]["gan"]["steps"] == 6


@pytest.mark.parametrize("key", ["progress", "stage_state", "rng"])
def test_a_checkpoint_with_a_valid_digest_but_missing_keys_is_one_line(cli, run, key):
    state = last_state(run)
    del state[key]
    plant(run / "checkpoints" / "gan-last.pt", state)
    before = snapshot(run)
    one_line_error(cli("run", "--resume", run, *RESUME), "gan-last.pt", f"'{key}'")
    assert snapshot(run) == before
    one_line_error(cli("eval", run, *EVAL), "gan-last.pt", f"'{key}'")


def test_a_stage_state_that_does_not_fit_the_stage_is_one_line_and_a_failed_run(cli, run):
    state = last_state(run)
    del state["stage_state"]["G"]
    plant(run / "checkpoints" / "gan-last.pt", state)
    ends_in_one_line_error(cli("run", "--resume", run, *RESUME), "gan-last.pt does not fit stage gan", "KeyError")
    m = read_manifest(run)
    assert m["status"] == "failed" and "does not fit stage gan" in m["error"]
    assert m["stage_state"]["gan"]["status"] == "failed"
    one_line_error(cli("eval", run, *EVAL), "gan-last.pt does not fit stage gan")


@pytest.mark.parametrize("edit, needle", [("lr_g", "lr_g (0.0002 in the checkpoint, 0.001 in run.json)"),
                                          ("width", "width (2 in the checkpoint, 4 in run.json)")])
def test_a_config_value_edited_in_run_json_is_refused(cli, run, edit, needle):
    """The checkpoint carries the config it trained with: an edit that fits the weights (lr_g)
    would otherwise rewrite the run's history, one that does not (width) would not load."""
    edit_manifest(run, lambda m: m["config"].update({"lr_g": 1e-3} if edit == "lr_g" else {"width": 4}))
    before = snapshot(run)
    one_line_error(cli("run", "--resume", run, *RESUME), needle)
    assert snapshot(run) == before and read_manifest(run)["status"] == "interrupted"
    one_line_error(cli("eval", run, *EVAL), needle)


def test_an_edited_width_with_an_older_checkpoint_is_one_line_and_a_true_status(cli, run):
    state = last_state(run)
    del state["config"]
    plant(run / "checkpoints" / "gan-last.pt", state)
    edit_manifest(run, lambda m: m["config"].update(width=4))
    ends_in_one_line_error(cli("run", "--resume", run, *RESUME), "gan-last.pt does not fit stage gan", "size mismatch")
    m = read_manifest(run)
    assert m["status"] == "failed" and m["stage_state"]["gan"]["status"] == "failed"


# --- run.json and metrics.jsonl --------------------------------------------------------------------
@pytest.mark.parametrize("edit, needle", [
    (lambda m: m["run"].update(seed="zero"), "run.seed"),
    (lambda m: m.update(stage_state=[1, 2]), "stage_state"),
    (lambda m: m["stage_state"].update(gan="done"), "stage_state.gan"),
    (lambda m: m.update(config="dcgan"), "config"),
    (lambda m: m.update(stages="gan"), "stages"),
    (lambda m: m["config"].update(lr_g="fast"), "lr_g"),
])
def test_wrong_types_in_run_json_are_one_line(cli, run, edit, needle):
    edit_manifest(run, edit)
    before = snapshot(run)
    one_line_error(cli("run", "--resume", run, *RESUME), "run.json", needle)
    one_line_error(cli("eval", run, *EVAL), "run.json", needle)
    assert snapshot(run) == before


def test_bytes_that_are_not_utf8_in_metrics_jsonl_are_read_around_and_kept(cli, run):
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"kind": "train", "stage": "gan", "step": 5, "note": "\xff\xfe"}\n')
    r = cli("run", "--resume", run, *RESUME)
    assert r.code == 0, r.err
    assert b"\xff\xfe" in (run / "metrics.jsonl").read_bytes()  # never deleted: not ours to judge
    assert read_manifest(run)["stage_state"]["gan"]["steps"] == 6


# --- values ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["-1", "99999999999999999999", "4294967296"])
def test_a_seed_out_of_range_is_one_line(cli, tmp_path, seed):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1s", "--seed", seed, "--run-dir", tmp_path / "r",
                       *TINY), "--seed", seed)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_max_steps_below_one_is_one_line(cli, tmp_path, steps):
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1s", "--max-steps", steps, "--run-dir",
                       tmp_path / "r", *TINY), "--max-steps", steps)
    assert not (tmp_path / "r").exists()
    one_line_error(cli("compare", "dcgan", "--budget", "1s", "--max-steps", steps, "--out", tmp_path / "c"),
                   "--max-steps")
    assert not (tmp_path / "c").exists()


def test_a_model_too_large_for_memory_is_one_line_and_a_failed_run(cli, tmp_path):
    ends_in_one_line_error(cli("run", "--method", "dcgan", "--budget", "1s", "--set", "z_dim=100000000", "--run-dir",
                               tmp_path / "r", *TINY), "memory", "--set")
    m = read_manifest(tmp_path / "r")
    assert m["status"] == "failed" and "memory" in m["error"]


def test_run_dir_dot_in_an_empty_folder_is_the_run_directory(cli, tmp_path, monkeypatch):
    here = tmp_path / "empty"
    here.mkdir()
    monkeypatch.chdir(here)
    r = cli("run", "--method", "dcgan", "--budget", "1h", "--max-steps", "2", "--run-dir", ".", *TINY)
    assert r.code == 0, r.err
    assert read_manifest(here)["status"] == "completed" and Path.cwd() == here and here.is_dir()
    assert [x["step"] for x in read_records(here) if x["kind"] == "eval"] == [2]


def test_run_dir_under_a_file_is_one_line(cli, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    one_line_error(cli("run", "--method", "dcgan", "--budget", "1s", "--run-dir", tmp_path / "file" / "sub", *TINY),
                   "file", "not a folder")
    assert (tmp_path / "file").read_text() == "not a folder"
