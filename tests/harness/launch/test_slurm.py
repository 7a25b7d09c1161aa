"""`harness compare --launcher slurm` against a real Slurm cluster (`.ci/slurm-cluster.sh up`; CI
starts one): a comparison is submitted and reported, a requeued job resumes to the weights of an
uninterrupted run, a cancelled job is reported failed without stopping the other, and the same
command run again submits nothing twice. Skipped where no cluster answers."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from harness.launch.allocation import allocation
from harness.launch.slurm import SlurmOptions
from harness.errors import ConfigError
from harness.rundir.checkpoint_files import CheckpointFiles

from tests.conftest import cli_subprocess, read_manifest

TINY = ["--set", "resolution=16", "--set", "width=2", "--fid-backbone", "standin", "--no-energy", "--device", "cpu",
        "--launcher", "slurm", "--time", "60m",  # >= 60 min: submitit counts a requeue near the limit as a time-out
        "--threads", "1"]  # equal weights need equal threads: the policy would follow the machine's load


def _cluster_env() -> dict[str, str] | None:
    """The environment that reaches the test cluster (SLURM_CONF from .ci/slurm-cluster.sh's env file,
    its sacct stand-in first on PATH), or None where no cluster answers."""
    env = dict(os.environ)
    folder = Path(os.environ.get("HARNESS_SLURM_DIR", "/tmp/harness-slurm"))
    if "SLURM_CONF" not in env and (folder / "env").is_file():
        env["SLURM_CONF"] = (folder / "env").read_text().strip().split("=", 1)[1]
    if (folder / "bin" / "sacct").is_file():
        env["PATH"] = f"{folder / 'bin'}:{env['PATH']}"
    if shutil.which("sinfo", path=env["PATH"]) is None:
        return None
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    return env if p.returncode == 0 and p.stdout.strip() else None


@pytest.fixture(scope="module")
def slurm_env():
    env = _cluster_env()
    if env is None:
        pytest.skip("no Slurm cluster answers (start one with .ci/slurm-cluster.sh up)")
    return env


def harness(env, *args, timeout=300):
    return cli_subprocess(*args, timeout=timeout, env={k: v for k, v in env.items() if k in ("SLURM_CONF", "PATH")})


def slurm_ids(out: Path) -> dict[str, str]:
    return {n: j["slurm"]["job_id"] for n, j in json.loads((out / "compare.json").read_text())["jobs"].items()
            if j.get("slurm")}


def weights(run_dir: Path) -> dict:
    return CheckpointFiles(run_dir).load("gan").state["stage_state"]


_STRAIGHT: dict[str, dict] = {}


def straight(out: Path, job: str) -> dict:
    """The weights of the job's own `harness run` never interrupted (run here, once per command line)."""
    argv = json.loads((out / "compare.json").read_text())["jobs"][job]["argv"]
    plain = argv[argv.index("run"):]
    key = json.dumps([a for k, a in enumerate(plain) if k != plain.index("--run-dir") + 1])
    if key not in _STRAIGHT:
        run_dir = out.parent / f"straight-{len(_STRAIGHT)}"
        plain[plain.index("--run-dir") + 1] = str(run_dir)
        assert cli_subprocess(*plain).code == 0
        _STRAIGHT[key] = weights(run_dir)
    return _STRAIGHT[key]


def assert_same_weights(a: dict, b: dict) -> None:
    for net in ("G", "D"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs from the uninterrupted run's"


def test_allocation_from_slurm_variables_and_options():
    assert allocation({}) is None
    a = allocation({"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "1",
                    "SLURMD_NODENAME": "n7", "SLURM_RESTART_COUNT": "2", "SLURM_GPUS_ON_NODE": "4"})
    assert (a["job_id"], a["node"], a["restart_count"], a["gpus"]) == ("40_1", "n7", 2, 4)
    assert SlurmOptions(time="24h").minutes() == 1440 and SlurmOptions(time="90").minutes() == 90
    assert SlurmOptions(options=("cpus-per-task=16", "--qos=high")).extra() == {"cpus-per-task": "16", "qos": "high"}
    for bad in (SlurmOptions(time="soon"), SlurmOptions(time="3m"), SlurmOptions(options=("exclusive",))):
        with pytest.raises(ConfigError):
            bad.describe()


def test_nsbgan_and_biggan_jobs_each_get_one_allocation_of_four_gpus(cli, tmp_path, monkeypatch):
    """The paper's layout on Slurm: each job one allocation of --gpus-per-job GPUs; NSBGAN one `harness
    run` that lays its stages out inside it, BigGAN data-parallel under torchrun on all four."""
    from submitit.slurm.slurm import _make_sbatch_string

    import harness.launch.slurm as slurm

    submitted = {}

    def submit(jobs, argvs, opts, folder):
        submitted.update(argvs={j.name: a for j, a in zip(jobs, argvs)}, opts=opts, folder=folder)
        return [f"7_{k}" for k in range(len(jobs))]

    monkeypatch.setattr(slurm, "_submit", submit)
    monkeypatch.setattr(slurm.shutil, "which", lambda cmd: f"/usr/bin/{cmd}")
    monkeypatch.setattr(slurm, "queue", lambda ids: {i: {"slurm_state": "PENDING", "state": "queued", "node": None}
                                                     for i in ids})
    r = cli("compare", "nsbgan", "biggan", "--budget", "168h", "--gpus-per-job", "4", "--launcher", "slurm",
            "--time", "24h", "--partition", "gpu", "--slurm-option", "cpus-per-task=32", "--out", tmp_path / "c")
    assert r.code == 0 and "2 job(s) queued or running" in r.out, r.err
    nsb, big = submitted["argvs"]["nsbgan-s0"], submitted["argvs"]["biggan-s0"]
    assert "torch.distributed.run" not in nsb and nsb[nsb.index("--device") + 1] == "cuda"
    assert big[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    script = _make_sbatch_string(command="run", folder=tmp_path, map_count=2,
                                 **slurm.executor_parameters(submitted["opts"], submitted["folder"]))
    for line in ("#SBATCH --gpus-per-node=4", "#SBATCH --time=1440", "#SBATCH --partition=gpu",
                 "#SBATCH --cpus-per-task=32", "#SBATCH --signal=USR2@120", "#SBATCH --array=0-1%2"):
        assert line in script.splitlines(), script
    record = json.loads((tmp_path / "c" / "compare.json").read_text())["jobs"]
    assert record["nsbgan-s0"]["slurm"] == {**record["nsbgan-s0"]["slurm"], "job_id": "7_0", "array_job_id": "7",
                                            "array_index": 0}
    assert record["biggan-s0"]["slurm"]["allocation"]["gpus"] == 4


def test_slurm_options_need_the_slurm_launcher(cli, tmp_path):
    r = cli("compare", "dcgan", "--budget", "1m", "--partition", "gpu", "--out", tmp_path / "c")
    assert r.code == 2 and r.err.count("\n") == 1 and "--partition only apply with --launcher slurm" in r.err


def test_without_slurm_commands_the_slurm_launcher_says_so_in_one_line(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    r = cli("compare", "dcgan", "--budget", "1m", "--launcher", "slurm", "--out", tmp_path / "c")
    assert r.code == 2 and r.err.count("\n") == 1 and "sbatch, srun, squeue not found" in r.err


@pytest.mark.slurm
def test_sbatchs_refusal_is_one_line_and_nothing_is_recorded_as_submitted(slurm_env, tmp_path):
    out = tmp_path / "cmp"
    r = harness(slurm_env, "compare", "dcgan", "--budget", "1m", *TINY, "--partition", "nosuch", "--out", out)
    assert r.code == 2 and r.err.count("\n") == 1, r.err
    assert r.err.startswith("error: sbatch refused the jobs: ") and "nosuch" in r.err
    assert slurm_ids(out) == {}


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
@pytest.mark.slurm
def test_a_comparison_is_submitted_reported_and_never_submitted_twice(slurm_env, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "dcgan", "--budget", "1h", "--max-steps", "4", "--seeds", "0,1", "--eval-samples", "8",
            *TINY, "--out", out]
    r = harness(slurm_env, *args)
    assert r.code == 0, r.err
    assert r.err.count("submitted as slurm job") == 2 and "queued or running" in r.out
    ids = slurm_ids(out)
    assert len(set(ids.values())) == 2 and {i.split("_")[0] for i in ids.values()} == {ids["dcgan-s0"].split("_")[0]}

    r = harness(slurm_env, *args)  # at once again: both are queued or running, nothing is submitted
    assert r.code == 0 and "submitted as" not in r.err and slurm_ids(out) == ids, r.err
    r = harness(slurm_env, "compare", "--status", out)
    assert r.code == 0 and all(i in r.out for i in ids.values()), r.err

    r = harness(slurm_env, *args, "--wait")  # until both are done: the report
    assert r.code == 0, r.err
    assert "submitted as" not in r.err and slurm_ids(out) == ids and "report:" in r.out
    assert "dcgan-s1" in (out / "report" / "index.md").read_text()
    record = json.loads((out / "compare.json").read_text())["jobs"]
    for name, job_id in ids.items():
        m = read_manifest(out / "runs" / name)
        assert m["status"] == "completed" and m["cluster"]["job_id"] == job_id and m["cluster"]["node"]
        assert record[name]["queue"] == "done" and record[name]["slurm"]["node"] == m["cluster"]["node"]
        assert record[name]["slurm"]["allocation"]["time_min"] == 60
    r = harness(slurm_env, "compare", "--status", out)
    assert r.code == 0 and r.out.count(" done ") == 2, r.out
    r = harness(slurm_env, *args)  # all done: nothing submitted, the report again
    assert r.code == 0 and "submitted as" not in r.err and slurm_ids(out) == ids and "report:" in r.out


def _wait_training(run_dir: Path, limit_s: float = 180) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            m = read_manifest(run_dir)
            if m["status"] == "running" and m.get("heartbeat", {}).get("gan", {}).get("step", 0) >= 1:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{run_dir} did not start training within {limit_s} s")


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
@pytest.mark.slurm
def test_a_requeued_job_resumes_to_equal_weights_and_a_cancelled_one_fails_alone(slurm_env, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", "dcgan", "--budget", "1h", "--max-steps", "100", "--seeds", "0,1", "--eval-samples", "0",
            *TINY, "--out", out]
    assert harness(slurm_env, *args).code == 0
    ids = slurm_ids(out)
    _wait_training(out / "runs" / "dcgan-s0")
    subprocess.run(["scontrol", "requeue", ids["dcgan-s0"]], env=slurm_env, check=True)
    _wait_training(out / "runs" / "dcgan-s1")
    subprocess.run(["scancel", ids["dcgan-s1"]], env=slurm_env, check=True)

    end = time.monotonic() + 300  # until neither is queued or running; `--status` submits nothing
    while (r := harness(slurm_env, "compare", "--status", out)).code == 0 and time.monotonic() < end:
        if " queued " not in r.out and " running " not in r.out:
            break
        time.sleep(2)
    rows = {line.split()[0]: line.split() for line in r.out.splitlines()[1:]}
    assert rows["dcgan-s0"][1:3] == ["done", ids["dcgan-s0"]] and rows["dcgan-s1"][1:3] == ["failed", ids["dcgan-s1"]]
    s0 = read_manifest(out / "runs" / "dcgan-s0")
    assert s0["status"] == "completed" and s0["stage_state"]["gan"]["steps"] == 100
    assert [s["restart_count"] for s in s0["cluster"]["starts"]] == [0, 1]  # checkpointed, requeued, resumed
    assert read_manifest(out / "runs" / "dcgan-s1")["status"] == "interrupted"  # cancelled: SIGTERM, checkpoint

    assert_same_weights(weights(out / "runs" / "dcgan-s0"), straight(out, "dcgan-s0"))

    r = harness(slurm_env, *args, "--wait", timeout=400)  # the failed job alone is submitted again, and resumes
    assert r.code == 0 and "report:" in r.out, r.err + r.out
    again = slurm_ids(out)
    assert again["dcgan-s0"] == ids["dcgan-s0"] and again["dcgan-s1"] != ids["dcgan-s1"]
    assert r.err.count("submitted as slurm job") == 1 and "dcgan-s0: done" in r.err
    s1 = json.loads((out / "compare.json").read_text())["jobs"]["dcgan-s1"]
    assert s1["queue"] == "done" and s1["slurm"]["previous"] == [ids["dcgan-s1"]]
    assert read_manifest(out / "runs" / "dcgan-s1")["stage_state"]["gan"]["steps"] == 100


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
@pytest.mark.slurm
def test_slurms_warning_checkpoints_the_run_and_the_job_requeues_itself(slurm_env, tmp_path):
    """The signal Slurm sends before a time limit or a preemption (submitit asks for USR2): submitit
    calls SlurmJob.checkpoint, the run checkpoints on SIGTERM, the job requeues itself and resumes."""
    out = tmp_path / "cmp"
    args = ["compare", "dcgan", "--budget", "1h", "--max-steps", "100", "--seeds", "0", "--eval-samples", "0",
            *TINY, "--out", out]
    assert harness(slurm_env, *args).code == 0
    job_id = slurm_ids(out)["dcgan-s0"]
    _wait_training(out / "runs" / "dcgan-s0")
    # what --signal=USR2@90 sends at the time limit, now: to every process of the job's steps
    subprocess.run(["scancel", "--signal=USR2", job_id], env=slurm_env, check=True)
    r = harness(slurm_env, *args, "--wait", timeout=400)
    assert r.code == 0 and "submitted as" not in r.err and slurm_ids(out)["dcgan-s0"] == job_id, r.err + r.out
    m = read_manifest(out / "runs" / "dcgan-s0")
    assert m["status"] == "completed" and m["stage_state"]["gan"]["steps"] == 100
    assert [s["restart_count"] for s in m["cluster"]["starts"]] == [0, 1]
    log = Path(json.loads((out / "compare.json").read_text())["jobs"]["dcgan-s0"]["slurm"]["log"]).read_text()
    assert "interrupted (SIGTERM): checkpoint saved" in log  # the run stopped at a step boundary, not killed
    assert_same_weights(weights(out / "runs" / "dcgan-s0"), straight(out, "dcgan-s0"))
