"""torchrun across two hosts: two Linux network namespaces joined by a veth pair (`.ci/netns-hosts.sh`),
each running `torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d` with gloo. Data-parallel
steps equal single-process steps at the same global batch, each node measures its own energy, rank 0
alone writes the run directory, and a node killed ends the other with one line naming the lost rank
(then `--resume` on both continues). Skipped where namespaces cannot be made (needs root)."""
import itertools
import os
import subprocess
import sys
import time

import pytest

from harness.engine.distributed import lost_ranks
from tests.conftest import read_manifest, read_records
from tests.harness.engine.test_distributed import ENV, ROOT, TINY_GAN, check_data_parallel_result

HOSTS = ROOT / ".ci" / "netns-hosts.sh"
NS, IFACE, IP = ("harness-a", "harness-b"), ("hv-a", "hv-b"), ("10.77.0.1", "10.77.0.2")
_PORTS = itertools.count(29431)  # a fresh rendezvous port per launch (no wait on a closing one)


@pytest.fixture(scope="module")
def hosts():
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux's")
    r = subprocess.run(["bash", str(HOSTS), "up"], capture_output=True, text=True, timeout=120)
    if r.returncode == 2:
        pytest.skip(r.stderr.strip() or "network namespaces cannot be made here")
    assert r.returncode == 0, r.stderr
    yield
    if "PYTEST_XDIST_WORKER" not in os.environ:  # under xdist another worker may still be using them
        subprocess.run(["bash", str(HOSTS), "down"], capture_output=True, timeout=60)


def on_two_hosts(*args, tag: str) -> list[subprocess.Popen]:
    """`torchrun --nnodes 2 --nproc-per-node 1 ARGS` in each namespace, node 0 hosting the rendezvous."""
    port, procs = next(_PORTS), []
    for k in (0, 1):
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", NS[k], "env", f"GLOO_SOCKET_IFNAME={IFACE[k]}", "HARNESS_DIST_TIMEOUT_S=60",
             sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
             "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{IP[0]}:{port}", "--rdzv-id", f"{tag}-{port}",
             "--rdzv-conf", "is_host=1,join_timeout=60" if k == 0 else "join_timeout=60", "--local-addr", IP[k],
             "--max-restarts", "0", *map(str, args)],
            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs, timeout=240) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each."""
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


def test_lost_ranks_are_named_by_the_address_gloo_reports():
    addresses = ["10.0.0.1", "10.0.0.2", "10.0.0.2", "10.0.0.3"]
    assert lost_ranks("Connection closed by peer [10.0.0.3]:41234", 0, addresses) == [3]
    assert lost_ranks("Connection reset by peer [10.0.0.2]:5", 1, addresses) == [2]
    assert lost_ranks("Timed out waiting 60000ms", 2, addresses) == [0, 1, 3]


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_two_hosts_train_as_one_process_each_node_measures_energy_and_rank_0_writes(hosts, tmp_path):
    out = tmp_path / "dp.pt"
    results = finish(on_two_hosts(ROOT / "tests" / "harness" / "engine" / "dp_worker.py", "grads", out, tag="dp"))
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    check_data_parallel_result(out)  # three steps on two hosts == three on the whole batch, to 1e-6

    run_dir = tmp_path / "run"
    results = finish(on_two_hosts("-m", "harness", "run", "--method", "dcgan", "--budget", "1h", "--max-steps", "6",
                                  "--run-dir", run_dir, *TINY_GAN, "--eval-samples", "0", "--device", "cpu",
                                  "--no-progress", tag="run"))
    assert all(code == 0 for code, _, _ in results), [e[-2000:] for _, _, e in results]
    assert results[0][1].strip().endswith(f"completed: {run_dir}") and "completed:" not in results[1][1]
    m = read_manifest(run_dir)
    assert m["distributed"]["nodes"] == 2 and m["distributed"]["processes"] == 2
    gan = m["stage_state"]["gan"]
    assert gan["steps"] == 6 and gan["images"] == 8 * 6  # the global batch
    assert gan["energy"]["status"] == "measured (2 node(s))" and [n["node"] for n in gan["energy_by_node"]] == [0, 1]
    assert (run_dir / "energy.csv").is_file() and (run_dir / "energy" / "node1" / "energy.csv").is_file()
    train = [x["step"] for x in read_records(run_dir) if x["kind"] == "train"]
    assert len(train) == len(set(train))  # metrics.jsonl written once, by rank 0
    assert not list(tmp_path.glob("run?*")) and not list(run_dir.glob("error*.log"))


@pytest.mark.slow  # over ~20 s on two cores: `-m "not slow"` leaves it out
def test_a_killed_node_ends_the_other_with_one_line_and_both_resume(hosts, tmp_path):
    run_dir = tmp_path / "run"
    args = ["-m", "harness", "run", "--method", "dcgan", "--budget", "1h", "--max-steps", "300", *TINY_GAN,
            "--eval-samples", "0", "--device", "cpu", "--no-progress", "--no-energy"]
    procs = on_two_hosts(*args, "--run-dir", run_dir, "--checkpoint-every", "10steps", tag="kill")
    end = time.monotonic() + 180
    while not (run_dir / "checkpoints" / "gan-prev.pt").exists():  # a checkpoint past step 0
        assert time.monotonic() < end and all(p.poll() is None for p in procs), "no checkpoint within 180 s"
        time.sleep(0.2)
    pids = subprocess.run(["ip", "netns", "pids", NS[1]], capture_output=True, text=True).stdout.split()
    subprocess.run(["kill", "-9", *pids], check=True)  # node 1 is gone: its agent and its worker
    killed = time.monotonic()
    code, _, err = finish(procs[:1], timeout=120)[0]
    assert time.monotonic() - killed < 60  # no hang on the dead peer
    procs[1].wait(timeout=30)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code != 0 and lines == [lines[0]] and lines[0].startswith(f"error: rank 0 lost rank 1 ({IP[1]}): "), err
    assert "--resume" in lines[0] and "Traceback" not in err.split("error: rank 0")[0]
    assert read_manifest(run_dir)["status"] == "failed"

    results = finish(on_two_hosts(*args, "--resume", run_dir, tag="resume"))
    assert all(c == 0 for c, _, _ in results), [e[-2000:] for _, _, e in results]
    m = read_manifest(run_dir)
    assert m["status"] == "completed" and m["stage_state"]["gan"]["steps"] == 300
    assert "resumed at step" in results[0][2] and "resumed at step 0," not in results[0][2]
