"""`--log tensorboard`: the run's metrics lines and sample grids as TensorBoard events, with the
same values as metrics.jsonl."""
import pytest

from tests.conftest import SMOKE, read_records


def test_tensorboard_events_hold_the_metrics_lines(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    r = cli("run", "--method", "dcgan", "--budget", "1m", "--max-steps", "4", "--eval-every", "2steps",
            "--set", "resolution=16", "--set", "width=2", *SMOKE, "--run-dir", run, "--log", "tensorboard")
    assert r.code == 0, r.err
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    evals = [x for x in read_records(run) if x["kind"] == "eval"]
    got = [(e.step, e.value) for e in events.Scalars("gan/eval/fid_standin")]
    assert len(got) == len(evals) == 2
    for (step, value), line in zip(got, evals):
        assert step == line["step"] and value == pytest.approx(line["fid_standin"], rel=1e-6)
    trains = [x for x in read_records(run) if x["kind"] == "train"]
    assert [e.step for e in events.Scalars("gan/train/loss_d")] == [x["step"] for x in trains]
    assert [e.step for e in events.Images("samples/gan-samples")] == [x["step"] for x in evals]


def test_an_unknown_logger_is_one_line_before_anything_is_written(cli, tmp_path):
    r = cli("run", "--method", "dcgan", "--budget", "1m", *SMOKE, "--run-dir", tmp_path / "run", "--log", "wandb")
    assert r.code == 2 and "--log takes one of: tensorboard" in r.err
    assert not (tmp_path / "run").exists()
