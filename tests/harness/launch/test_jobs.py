"""harness.launch.jobs: the one runner of the parallel layout's stage jobs and of compare's runs."""
import pytest

from harness.launch.compare import Entry, Job


def test_jobs_run_side_by_side_one_per_slot_and_their_logs_are_closed(tmp_path):
    import os
    import sys
    import time

    from harness.launch.jobs import Launch, run_jobs

    jobs = [Job(f"j{k}", Entry("dcgan"), k, tmp_path / f"j{k}") for k in range(5)]
    events = []

    def launch(job, slot):
        events.append(("start", job.name, slot, time.monotonic()))
        code = 3 if job.name == "j1" else 0
        return Launch([sys.executable, "-c", f"import time, sys; print('hi'); time.sleep(0.3); sys.exit({code})"],
                      dict(os.environ), tmp_path / f"{job.name}.log")

    done = {}
    fds = len(os.listdir("/proc/self/fd"))
    run_jobs(jobs, launch, ["0", "1"], lambda job, code: done.__setitem__(job.name, code))
    assert done == {"j0": 0, "j1": 3, "j2": 0, "j3": 0, "j4": 0}  # j1's failure stopped nothing
    slots = [e[2] for e in events]
    assert slots[:2] == ["0", "1"] and set(slots) == {"0", "1"}
    # never more jobs at once than slots: the third started only after one of the first two ended
    assert events[2][3] - events[0][3] >= 0.25
    assert all((tmp_path / f"j{k}.log").read_text() == "hi\n" for k in range(5))
    assert len(os.listdir("/proc/self/fd")) == fds  # every log file closed


def test_ctrl_c_is_passed_on_to_the_running_jobs_and_no_new_one_starts(tmp_path):
    import os
    import signal
    import sys
    import threading
    import time

    from harness.engine.signals import Interrupted
    from harness.launch.jobs import Launch, run_jobs

    jobs = [Job(f"j{k}", Entry("dcgan"), k, tmp_path / f"j{k}") for k in range(3)]
    started, done = [], {}
    ready = tmp_path / "ready"
    child = ("import pathlib, signal, sys, time; signal.signal(signal.SIGINT, lambda *a: sys.exit(130)); "
             f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")

    def interrupt_once_ready() -> None:  # the child's handler is installed before the signal comes
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    def launch(job, slot):
        started.append(job.name)
        threading.Thread(target=interrupt_once_ready, daemon=True).start()
        return Launch([sys.executable, "-c", child], dict(os.environ))

    with pytest.raises(Interrupted):
        run_jobs(jobs, launch, [None], lambda job, code: done.__setitem__(job.name, code))
    assert started == ["j0"] and done == {"j0": 130}  # the job stopped itself; j1, j2 never started
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_a_job_does_not_outlive_the_runner_killed_with_minus_9(tmp_path):
    """The runner's death (kill -9, a lost machine session) ends its jobs: each gets SIGTERM from
    the kernel (Linux parent-death signal), so a harness job checkpoints and stops."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    pidfile = tmp_path / "child.pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    parent = ("import os, sys\n"
              "from harness.launch.jobs import Launch, run_jobs\n"
              f"run_jobs([0], lambda job, slot: Launch([sys.executable, '-c', {child!r}], dict(os.environ)), [None],\n"
              "         lambda job, code: None)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not (pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        child = int(pidfile.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{child}") and "zombie" not in _state(child):
            assert time.monotonic() < deadline, "the job outlived its runner"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pidfile.exists() and os.path.exists(f"/proc/{pidfile.read_text()}"):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(line for line in f if line.startswith("State:")).lower()
    except (OSError, StopIteration):
        return "zombie"


def test_a_job_that_is_not_ready_waits_while_the_others_run(tmp_path):
    import os
    import sys
    import time

    from harness.launch.jobs import Launch, run_jobs

    free_at = time.monotonic() + 0.5
    started = []

    def launch(job, slot):
        started.append(job)
        return Launch([sys.executable, "-c", "pass"], dict(os.environ))

    run_jobs(["held", "free"], launch, [None], lambda job, code: None,
             ready=lambda job: job != "held" or time.monotonic() >= free_at, poll_s=0.05)
    assert started == ["free", "held"]


def test_a_job_runs_on_the_cpus_it_is_given(tmp_path):
    import os
    import sys

    from harness.launch.jobs import Launch, run_jobs

    cpu = min(os.sched_getaffinity(0))
    code = "import os, time; time.sleep(0.2); print(sorted(os.sched_getaffinity(0)))"  # after the runner pinned it
    run_jobs(["j"], lambda job, slot: Launch([sys.executable, "-c", code], dict(os.environ), tmp_path / "j.log", (cpu,)),
             [None], lambda job, code: None)
    assert (tmp_path / "j.log").read_text() == f"[{cpu}]\n"
