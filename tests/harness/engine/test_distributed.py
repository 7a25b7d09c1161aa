"""Data parallelism (harness.distributed) on the CPU with gloo: the gradient average against a
single-process full-batch reference, the per-step agreement, batch sharding, and a 2-process
`torchrun ... harness run` with an interrupt and a resume."""
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.loader import BatchStream
from harness.engine.distributed import SINGLE, Dist, from_env
from harness.rundir.rundir import RunDir
from harness.errors import ConfigError, DataError
from tests.conftest import SAMPLER_TINY, read_manifest, read_records

ROOT = Path(__file__).resolve().parents[3]
TINY_GAN = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def torchrun_cmd(*args) -> list[str]:
    """`torchrun --standalone --nproc-per-node 2 ...` (a free port per job)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]


def torchrun(*args, timeout=240):
    return subprocess.run(torchrun_cmd(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def test_layout_from_the_environment():
    assert from_env({}) == SINGLE and not SINGLE.enabled and SINGLE.main
    d = from_env({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert d == Dist(5, 8, 1, 4) and d.enabled and not d.main and d.nodes == 2
    with pytest.raises(ConfigError):
        from_env({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ConfigError):
        from_env({"WORLD_SIZE": "two"})


class _Indexed:
    """64 one-pixel 'images' whose value is their index: batches show exactly what was drawn."""

    name, split = "indexed", "train"

    def __len__(self):
        return 64

    def images(self, idx):
        idx = torch.as_tensor(np.asarray(idx))
        return idx.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 1, 1), idx


def test_shards_partition_every_global_batch():
    data = _Indexed()
    full = BatchStream(data, 16, seed=7)
    shards = [BatchStream(data, 16, seed=7, shard=(r, 4)) for r in range(4)]
    for _ in range(6):  # crosses an epoch boundary (4 batches per epoch)
        images, labels = full.next()
        parts = [s.next() for s in shards]
        assert all(len(p[0]) == 4 for p in parts)
        assert torch.equal(torch.cat([p[0] for p in parts]), images)
        assert torch.equal(torch.cat([p[1] for p in parts]), labels)
    assert shards[3].epochs_done == full.epochs_done
    with pytest.raises(DataError, match="does not split evenly"):
        BatchStream(data, 10, seed=0, shard=(0, 4))


def test_data_parallel_steps_equal_full_batch_steps(tmp_path):
    out = tmp_path / "dp.pt"
    r = torchrun(ROOT / "tests" / "harness" / "engine" / "dp_worker.py", "grads", out)
    assert r.returncode == 0, r.stderr[-3000:]
    check_data_parallel_result(out)


def check_data_parallel_result(out: Path) -> None:
    """dp_worker.py grads' result: rank 0's weights on every rank, three Adam steps on halves with averaged
    gradients equal to three on the whole batch (to 1e-6), and the step agreement."""
    got = torch.load(out, weights_only=False)
    ranks = sorted(got["ranks"], key=lambda g: g["rank"])
    assert got["told"] == "from rank 0"
    # attach broadcast rank 0's weights over rank 1's different ones
    torch.manual_seed(100)
    reference = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    for a, b, ref in zip(ranks[0]["params0"], ranks[1]["params0"], reference.parameters()):
        assert torch.equal(a, b) and torch.equal(a, ref.detach())
    # three Adam steps on halves with averaged gradients == three steps on the whole batch
    opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(123)
    x, y = torch.randn(8, 6, generator=gen), torch.randn(8, 3, generator=gen)
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(reference(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b, ref in zip(ranks[0]["params"], ranks[1]["params"], reference.parameters()):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, ref.detach(), rtol=1e-5, atol=1e-6)
    for g in ranks:  # every rank agrees on rank 0's clock and timer, anyone's signal, mean losses
        a = g["agreed"]
        assert a["elapsed"] == 5.0 and a["checkpoint_due"] is True and a["signum"] == signal.SIGTERM
        assert a["losses"] == {"a": 0.5, "b": 1.0}
        assert math.isnan(g["nan"])


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    run_dir = tmp_path / "div"
    r = torchrun(ROOT / "tests" / "harness" / "engine" / "dp_worker.py", "diverge", run_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "rank 0: diverged" in r.stdout and "rank 1: diverged" in r.stdout
    s = read_manifest(run_dir)["stage_state"]["gan"]
    assert s["status"] == "diverged" and s["diverged_at"] == 5 and s["evaluated_step"] == 0
    kinds = [x["kind"] for x in read_records(run_dir)]
    assert kinds.count("diverged") == 1 and kinds[-1] == "eval"


def _wait_for_steps(run_dir: Path, steps: int, proc, limit_s: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < limit_s and proc.poll() is None:
        records = read_records(run_dir) if (run_dir / "metrics.jsonl").exists() else []
        if any(r["kind"] == "train" and r["step"] >= steps for r in records):
            return
        time.sleep(0.5)
    raise AssertionError(f"no train record at step >= {steps} within {limit_s}s")


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_torchrun_run_interrupt_and_resume(tmp_path):
    run_dir = tmp_path / "dp"
    args = ["-m", "harness", "run", "--method", "dcgan", "--budget", "6s", "--run-dir", run_dir, *TINY_GAN,
            "--eval-samples", "0", "--device", "cpu", "--no-progress", "--no-energy"]
    with subprocess.Popen(torchrun_cmd(*args), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            # the log interval is 10 s: step 1 is logged at once, the next only late in the run
            _wait_for_steps(run_dir, 1, proc)
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)  # torchrun forwards it to both ranks
            proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    m = read_manifest(run_dir)
    assert m["status"] == "interrupted", m.get("status")
    assert m["run"]["devices"] == 2 and m["distributed"]["processes"] == 2
    first = m["stage_state"]["gan"]
    ckpt = RunDir(run_dir).checkpoints.load("gan").state
    assert len(ckpt["rng_ranks"]) == 2
    assert not torch.equal(ckpt["rng_ranks"][0]["torch"], ckpt["rng_ranks"][1]["torch"])  # distinct noise

    r = torchrun(*args[:3], "--resume", run_dir, "--device", "cpu", "--no-progress", "--no-energy")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed at step" in r.stderr
    m = read_manifest(run_dir)
    gan = m["stage_state"]["gan"]
    assert m["status"] == "budget_exhausted"
    assert gan["steps"] > first["steps"] and gan["budget_s"] >= 6.0
    assert gan["budget_s"] <= 6.0 + gan["last_step_s"] + 1e-6
    assert gan["images"] == 8 * gan["steps"]  # the global batch, not one rank's share
    train = [x for x in read_records(run_dir) if x["kind"] == "train"]
    assert len({x["step"] for x in train}) == len(train)  # rank 0 alone writes metrics.jsonl
    assert not list(run_dir.glob("error*.log"))


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_two_nodes_each_measure_energy_and_the_run_sums_them(tmp_path):
    """Two torchrun 'nodes' of one process each on this machine (static rendezvous): each runs
    its own codecarbon tracker; run.json's energy is their sum, with the split per node."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "mn"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
         str(k), "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "harness", "run", "--method", "dcgan",
         "--budget", "4s", "--run-dir", str(run_dir), *TINY_GAN, "--eval-samples", "0", "--device", "cpu",
         "--no-progress"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[1][1][-2000:]
    gan = read_manifest(run_dir)["stage_state"]["gan"]
    nodes = gan["energy_by_node"]
    assert [n["node"] for n in nodes] == [0, 1] and all(n["status"] == "measured" for n in nodes)
    assert all(n["kwh_train"] > 0 for n in nodes)
    for key in ("kwh_train", "kwh_eval", "kg_train", "kg_eval"):
        assert gan["energy"][key] == pytest.approx(sum(n[key] for n in nodes))
    assert gan["energy"]["status"] == "measured (2 node(s))"
    assert (run_dir / "energy.csv").is_file() and (run_dir / "energy" / "node1" / "energy.csv").is_file()


def test_torchrun_method_with_a_pipeline_evaluation_ends_cleanly_on_every_rank(tmp_path):
    """nsbgan evaluates the chained decoders after its stages, on every rank."""
    run_dir = tmp_path / "nsb"
    r = torchrun("-m", "harness", "run", "--method", "nsbgan", "--budget", "3s", "--run-dir", run_dir,
                 *[a for kv in ("resolution=32", "levels=1", "width=4", "batch_sizes=[8]", "patch=8", "eval_images=16",
                                *SAMPLER_TINY) for a in ("--set", kv)],
                 "--eval-samples", "0", "--device", "cpu", "--no-progress", "--no-energy")
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_manifest(run_dir)["status"] == "budget_exhausted"
    assert [x["stage"] for x in read_records(run_dir) if x["kind"] == "eval"][-1] == "pipeline"


@pytest.mark.slow
def test_a_pipeline_evaluation_on_two_processes_equals_the_runs_own(cli, tmp_path):
    """`--pipeline-eval` (the parallel layout's final job) of a trained NSBGAN run under torchrun with
    two gloo processes writes the numbers of the run's own one-process pipeline evaluation; FID*'s
    reference (decoded training images in chunks of eval_batch_size=16: 16, 16, 8) is split over
    both. A run with untrained stages is refused in one line."""
    run_dir = tmp_path / "nsb"
    sets = [a for kv in ("resolution=32", "levels=1", "width=4", "batch_sizes=[8]", "patch=8", "eval_images=16",
                         "eval_batch_size=16", "eval_truncations=[0.6]", *SAMPLER_TINY) for a in ("--set", kv)]
    quiet = ["--device", "cpu", "--no-progress", "--no-energy"]
    one = subprocess.run([sys.executable, "-m", "harness", "run", "--method", "nsbgan", "--budget", "3s",
                          "--run-dir", run_dir, *sets, "--eval-samples", "40", "--backbone", "standin",
                          "--metrics", "fid,kid", *quiet], cwd=ROOT, env=ENV, capture_output=True, text=True,
                         timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("-m", "harness", "run", "--resume", run_dir, "--pipeline-eval", *quiet)
    assert two.returncode == 0, two.stderr[-3000:]
    first, again = [x for x in read_records(run_dir) if x["kind"] == "eval" and x["stage"] == "pipeline"]
    assert first["fid_star_standin_ref_n"] == 40 and first["fid_standin_n"] == 40
    scores = [k for k in first if k.startswith(("fid_", "kid_", "mse")) and isinstance(first[k], float)]
    assert {"fid_standin", "fid_star_standin", "kid_standin_mean"} <= set(scores)
    assert {k: again[k] for k in scores} == pytest.approx({k: first[k] for k in scores}, rel=1e-6)

    untrained = tmp_path / "untrained"
    r = cli("run", "--method", "nsbgan", "--stage", "decoder-l1", "--budget", "1s", "--run-dir", untrained, *sets,
            "--eval-samples", "0", *quiet)
    assert r.code == 0, r.err
    r = cli("run", "--resume", untrained, "--pipeline-eval", *quiet)
    assert r.code == 2 and "stage(s) sampler not trained yet" in r.err and len(r.err.strip().splitlines()) == 1


def test_torchrun_bad_input_stops_every_rank_with_one_line(tmp_path):
    r = torchrun("-m", "harness", "run", "--method", "dcgan", "--budget", "5s", "--devices", "3",
                 "--run-dir", tmp_path / "x", "--device", "cpu", "--no-energy", timeout=120)
    assert r.returncode != 0
    assert r.stderr.count("error: --devices 3, but torchrun started 2 processes") == 1
    assert not (tmp_path / "x").exists()


def test_devices_without_torchrun_is_refused(cli, tmp_path):
    r = cli("run", "--method", "dcgan", "--budget", "5s", "--devices", "4", "--run-dir", tmp_path / "x")
    assert r.code == 2 and "torchrun --nproc-per-node 4" in r.err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (NCCL)")
def test_nccl_run_on_two_gpus(tmp_path):
    r = torchrun("-m", "harness", "run", "--method", "dcgan", "--budget", "20s", "--run-dir", tmp_path / "g",
                 "--set", "resolution=64", "--eval-samples", "0", "--device", "cuda", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_manifest(tmp_path / "g")
    assert m["distributed"]["backend"] == "nccl" and m["status"] == "budget_exhausted"


@pytest.mark.slow
def test_an_evaluation_split_over_two_processes_equals_one_process(tmp_path):
    """Chunk k of the samples on rank k % 2, features gathered on rank 0 in chunk order: every metric,
    the kept samples and the notes equal one process's, and both ranks receive the same metrics."""
    worker = ROOT / "tests" / "harness" / "engine" / "eval_worker.py"
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    single = subprocess.run([sys.executable, worker, one], cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=240)
    assert single.returncode == 0, single.stderr[-3000:]
    split = torchrun(worker, two)
    assert split.returncode == 0, split.stderr[-3000:]
    reference = torch.load(one / "rank0.pt", weights_only=False)
    ranks = [torch.load(two / f"rank{k}.pt", weights_only=False) for k in (0, 1)]
    assert {"fid_standin", "kid_standin_mean", "kid_standin_low", "precision_standin", "fid_star_standin"} <= \
        set(reference["metrics"])
    assert reference["metrics"]["fid_standin_n"] == 110 and reference["metrics"]["fid_star_standin_ref_n"] == 60
    for got in ranks:
        assert got["metrics"] == reference["metrics"] and got["notes"] == reference["notes"]
    assert ranks[1]["recon_none"] and not ranks[0]["recon_none"]  # gathered on rank 0 alone
    with np.load(one / "kept.npz") as a, np.load(two / "kept.npz") as b:
        assert a["images"].shape == (110, 32, 32, 3) and np.array_equal(a["images"], b["images"])


@pytest.mark.slow
def test_a_failure_on_one_rank_of_an_evaluation_stops_both(tmp_path):
    r = torchrun(ROOT / "tests" / "harness" / "engine" / "eval_worker.py", tmp_path, "fail")
    assert r.returncode == 0, r.stderr[-3000:]
    errors = [torch.load(tmp_path / f"rank{k}.pt", weights_only=False)["error"] for k in (0, 1)]
    assert errors == ["rank 1: this rank cannot sample"] * 2


@pytest.mark.slow
def test_a_failure_to_keep_the_samples_on_rank_0_stops_both(tmp_path):
    """Rank 0 fails after the round's agreement (writing the gathered images): the others learn of
    it at the next one instead of waiting for a gather that never comes."""
    r = torchrun(ROOT / "tests" / "harness" / "engine" / "eval_worker.py", tmp_path, "failkeep")
    assert r.returncode == 0, r.stderr[-3000:]
    got = [torch.load(tmp_path / f"rank{k}.pt", weights_only=False) for k in (0, 1)]
    assert got[0] == got[1] and "FileNotFoundError" in got[0]["error"] and "missing" in got[0]["error"]
    assert not list(tmp_path.glob(".*raw*"))


@pytest.mark.slow
def test_torchrun_run_evaluates_on_every_rank_and_writes_once(tmp_path):
    run_dir = tmp_path / "dpe"
    r = torchrun("-m", "harness", "run", "--method", "dcgan", "--budget", "3s", "--run-dir", run_dir, *TINY_GAN,
                 "--eval-samples", "40", "--backbone", "standin", "--metrics", "fid,kid", "--device", "cpu",
                 "--no-progress", "--no-energy")
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_manifest(run_dir)
    assert m["status"] == "budget_exhausted" and "rank k % processes" in m["distributed"]["evaluation"]
    evals = [x for x in read_records(run_dir) if x["kind"] == "eval"]
    assert evals and len({x["step"] for x in evals}) == len(evals)  # rank 0 alone writes
    assert all("kid_standin_mean" in x and x["fid_standin_n"] == 40 for x in evals)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (NCCL)")
def test_nccl_evaluation_on_two_gpus(tmp_path):
    r = torchrun("-m", "harness", "run", "--method", "dcgan", "--budget", "10s", "--run-dir", tmp_path / "g",
                 "--set", "resolution=64", "--eval-samples", "1000", "--backbone", "standin", "--metrics", "fid,kid,prdc",
                 "--device", "cuda", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    evals = [x for x in read_records(tmp_path / "g") if x["kind"] == "eval"]
    assert evals and all(x["fid_standin_n"] == 1000 and "precision_standin" in x for x in evals)
