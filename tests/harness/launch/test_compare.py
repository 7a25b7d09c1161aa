"""`harness compare`: methods x seeds under one budget into one folder, with its report; the same
command continues (a killed job resumes, finished ones are skipped), a different one is refused,
and a job that dies is reported without stopping the others."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.launch.compare import Entry, Job, parse_entry

from tests.conftest import ROOT, read_manifest, read_records

TINY = ["--budget", "1m", "--max-steps", "4", "--seeds", "0,1", "--set", "resolution=16", "--set", "width=2",
        "--eval-samples", "8", "--fid-backbone", "standin", "--no-energy", "--no-progress"]


def test_method_specs_parse_with_overrides():
    assert parse_entry("dcgan") == Entry("dcgan")
    e = parse_entry("octave-dcgan:variant=combi,betas=[0.5,0.999]")
    assert e.overrides == ("variant=combi", "betas=[0.5,0.999]")
    assert e.slug == "octave-dcgan_variant-combi_betas-0.5-0.999"


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_compare_runs_every_job_reports_and_continues(cli, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    real_argv = Job.argv

    def argv(self, *args, **kwargs):  # the lsgan seed-0 job is killed (-9) at its third step
        cmd = real_argv(self, *args, **kwargs)
        return ["env", "HARNESS_CRASH_AT=step:3", *cmd] if self.name == "lsgan-s0" else cmd

    monkeypatch.setattr(Job, "argv", argv)
    r = cli("compare", "dcgan", "lsgan", *TINY, "--out", out)
    assert r.code == 1, r.err
    # the machine, measured before the jobs start: one line, busy or not, and its record
    assert sum(line.startswith(("machine: ", "machine busy: ")) for line in r.err.splitlines()) == 1
    assert {"cores", "others", "share"} <= set(json.loads((out / "compare.json").read_text())["machine"][0])
    jobs = json.loads((out / "compare.json").read_text())["jobs"]
    assert jobs["lsgan-s0"]["exit_code"] == -9 and jobs["lsgan-s0"]["state"] == "unfinished"
    for name in ("dcgan-s0", "dcgan-s1", "lsgan-s1"):  # the killed job stopped none of the others
        assert jobs[name]["exit_code"] == 0 and read_manifest(out / "runs" / name)["status"] == "completed"
    assert "1 job(s) failed: lsgan-s0" in r.out
    page = (out / "report" / "index.html").read_text()
    assert "lsgan-s0" in page and "time to target" in page
    before = {n: (out / "runs" / n / "metrics.jsonl").read_text() for n in ("dcgan-s0", "dcgan-s1", "lsgan-s1")}

    monkeypatch.setattr(Job, "argv", real_argv)  # after the "reboot": the same command again
    r = cli("compare", "dcgan", "lsgan", *TINY, "--out", out)
    assert r.code == 0, r.err
    assert r.err.count("finished before, skipped") == 3 and "lsgan-s0: continuing" in r.err
    for name, text in before.items():
        assert (out / "runs" / name / "metrics.jsonl").read_text() == text  # untouched
    m = read_manifest(out / "runs" / "lsgan-s0")
    assert m["status"] == "completed" and m["totals"]["steps"] == 4  # resumed from its checkpoint
    assert [x["step"] for x in read_records(out / "runs" / "lsgan-s0") if x["kind"] == "eval"] == [4]
    assert "report:" in r.out and "dcgan" in r.out


def test_a_different_command_into_the_folder_is_refused(cli, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "compare.json").write_text(json.dumps({"format": 1, "comparison": {"budget": "1m"}, "jobs": {}}))
    r = cli("compare", "dcgan", *TINY, "--out", out)
    assert r.code == 2 and r.err.count("\n") == 1
    assert "holds another comparison (it differs in: " in r.err and "entries" in r.err
    assert not (out / "runs").exists()


@pytest.mark.parametrize("args, message", [
    (["dcgan", "nosuch"], "unknown method"),
    (["dcgan:widht=3"], "dcgan:widht=3: unknown config key 'widht'"),
    (["dcgan", "dcgan"], "listed twice"),
    (["dcgan", "--seeds", "0,x"], "--seeds"),
])
def test_bad_comparisons_stop_before_any_job(cli, tmp_path, args, message):
    out = tmp_path / "cmp"
    r = cli("compare", *args, "--budget", "1m", "--out", out)
    assert r.code == 2 and message in r.err and r.err.count("\n") == 1
    assert not out.exists()


def test_methods_need_a_budget(cli, tmp_path):
    r = cli("compare", "dcgan", "--out", tmp_path / "cmp")
    assert r.code == 2 and "--budget is required" in r.err


def test_gpu_slots_group_the_visible_gpus(monkeypatch):
    import torch

    from harness.launch.compare import gpu_slots
    from harness.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_slots(None) == ["0", "1", "2", "3"]
    assert gpu_slots(None, 2) == ["0,1", "2,3"] and gpu_slots(None, 3) == ["0,1,2"]
    assert gpu_slots("cpu") == [None] and gpu_slots("cuda:2") == ["2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert gpu_slots(None) == ["5", "7"]
    with pytest.raises(ConfigError, match="2 GPU"):
        gpu_slots(None, 4)


def test_a_job_on_several_gpus_is_data_parallel_only_for_one_stage_methods():
    from harness.launch.compare import Comparison, _processes

    c = Comparison(entries=(parse_entry("biggan"), parse_entry("nsbgan")), seeds=(0,), budget="1h")
    big, nsb = c.jobs(__import__("pathlib").Path("/nonexistent"))
    assert _processes(big, c, 4) == 4 and _processes(nsb, c, 4) == 1 and _processes(big, c, 1) == 1
    assert big.argv(c, "cuda", None, True, False, processes=4)[1:5] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]




# one job of four steps
ONE = ["dcgan", "--budget", "1m", "--max-steps", "4", "--seeds", "0", "--set", "resolution=16", "--set", "width=2",
       "--eval-samples", "8", "--fid-backbone", "standin", "--no-energy", "--no-progress"]
# a comparison whose one job trains long enough (a few seconds) to be caught while it runs
LONG = ["dcgan", "--budget", "1m", "--max-steps", "300", "--seeds", "0", "--set", "resolution=16", "--set", "width=2",
        "--eval-samples", "8", "--fid-backbone", "standin", "--no-energy", "--no-progress"]


def start_compare(out, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "harness", "compare", *args, "--out", str(out)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_training(run_dir, proc, timeout=120) -> int:
    """The pid of the job training `run_dir`, once it has written its first train line."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if (run_dir / "metrics.jsonl").exists() and any(r["kind"] == "train" for r in read_records(run_dir)):
            return read_manifest(run_dir)["heartbeat"]["gan"]["pid"]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    raise AssertionError("the job never trained")


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_a_killed_compare_leaves_no_orphan_and_the_same_command_finishes(cli, tmp_path):
    """kill -9 of `compare` (or a closed terminal): its running job gets SIGTERM from the kernel,
    checkpoints and stops; the same command again continues it, instead of marking it failed
    ("being trained by pid ...")."""
    out = tmp_path / "cmp"
    proc = start_compare(out, *LONG)
    job = out / "runs" / "dcgan-s0"
    try:
        pid = wait_for_training(job, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert gone(pid, 60), "the job outlived its compare"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert read_manifest(job)["status"] == "interrupted"  # it checkpointed on its way out
    r = cli("compare", *LONG, "--out", out)
    assert r.code == 0, r.err
    assert "dcgan-s0: continuing" in r.err and "being trained by" not in r.err
    assert read_manifest(job)["status"] in ("completed", "budget_exhausted")  # 300 steps, or a minute of them


@pytest.mark.slow
def test_the_same_command_waits_for_a_job_another_process_still_holds(cli, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    real_argv = Job.argv
    monkeypatch.setattr(Job, "argv", lambda self, *a, **k: ["env", "HARNESS_CRASH_AT=step:2", *real_argv(self, *a, **k)])
    assert cli("compare", *ONE, "--out", out).code == 1  # killed at its second step
    monkeypatch.setattr(Job, "argv", real_argv)
    job = out / "runs" / "dcgan-s0"
    # e.g. the job of a compare killed a moment ago, still writing its checkpoint
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from harness.rundir.rundir import RunDir; "
                               f"lock = RunDir({str(job)!r}).hold(['gan']); print('held', flush=True); time.sleep(10)"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    r = cli("compare", *ONE, "--out", out)
    holder.wait(timeout=30)
    assert r.code == 0, r.err
    assert f"waiting for pid {holder.pid}" in r.err
    assert read_manifest(job)["status"] == "completed"


def test_compare_json_follows_what_the_job_directories_say_now(cli, tmp_path, monkeypatch):
    """A job that failed and was then finished by hand (harness run --resume) is finished: the same
    command no longer exits 1 with "1 job(s) failed"."""
    out = tmp_path / "cmp"
    real_argv = Job.argv
    monkeypatch.setattr(Job, "argv", lambda self, *a, **k: ["env", "HARNESS_CRASH_AT=step:2", *real_argv(self, *a, **k)])
    assert cli("compare", *ONE, "--out", out).code == 1
    monkeypatch.setattr(Job, "argv", real_argv)
    job = out / "runs" / "dcgan-s0"
    assert cli("run", "--resume", job, "--no-progress", "--no-energy").code == 0
    r = cli("compare", *ONE, "--out", out)
    assert r.code == 0 and "failed" not in r.out, (r.out, r.err)
    jobs = json.loads((out / "compare.json").read_text())["jobs"]
    assert jobs["dcgan-s0"]["state"] == "finished" and jobs["dcgan-s0"]["status"] == "completed"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_compare_into_the_folder_is_refused_and_a_signal_ends_the_first_in_one_line(cli, tmp_path, sig,
                                                                                              code):
    out = tmp_path / "cmp"
    proc = start_compare(out, *LONG)
    job = out / "runs" / "dcgan-s0"
    try:
        pid = wait_for_training(job, proc)
        second = cli("compare", *LONG, "--out", out)
        assert second.code == 2 and len(second.err.strip().splitlines()) == 1, second.err
        assert f"is being run by pid {proc.pid}" in second.err and "one compare per folder" in second.err
        assert gone(pid, 0.1) is False  # the first one's job is unharmed
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code and "Traceback" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({signal.Signals(sig).name})")
    assert read_manifest(job)["status"] == "interrupted"
    assert json.loads((out / "compare.json").read_text())["jobs"]["dcgan-s0"]["state"] == "unfinished"
