"""`harness run --profile N`: a Chrome trace of N steps and the top operators, in the run directory."""
import json

import pytest

from harness.cli import main
from harness.engine.profiling import PROFILE_WARMUP

TINY = ["run", "-m", "dcgan", "-b", "1h", "--set", "resolution=16", "--set", "width=2", "--set", "batch_size=8",
        "--eval-samples", "0", "--no-energy", "--no-progress"]


def test_profile_records_n_steps_after_warm_up(tmp_path, capsys):
    run_dir = tmp_path / "run"
    main(TINY + ["--max-steps", str(PROFILE_WARMUP + 1 + 3 + 2), "--profile", "3", "--run-dir", str(run_dir)])
    trace = json.loads((run_dir / "profile" / "gan-trace.json").read_text())
    names = [e.get("name", "") for e in trace["traceEvents"]]
    assert sum(n.startswith("ProfilerStep#") for n in names) == 3
    assert "aten::convolution_backward" in names  # D's backward pass was traced
    table = (run_dir / "profile" / "gan-top-ops.txt").read_text()
    assert "Self CPU" in table and "aten::" in table
    assert "stage gan: profile of 3 steps" in capsys.readouterr().err
    assert json.loads((run_dir / "run.json").read_text())["stage_state"]["gan"]["status"] == "completed"


def test_a_stage_shorter_than_the_warm_up_says_so(tmp_path, capsys):
    main(TINY + ["--max-steps", "3", "--profile", "5", "--run-dir", str(tmp_path / "run")])
    assert "no profile, it trained 3 steps" in capsys.readouterr().err
    assert not (tmp_path / "run" / "profile" / "gan-trace.json").exists()


def test_negative_profile_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(TINY + ["--max-steps", "3", "--profile", "-1", "--run-dir", str(tmp_path / "run")])
    assert e.value.code == 2
    assert "--profile takes a number of steps" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
