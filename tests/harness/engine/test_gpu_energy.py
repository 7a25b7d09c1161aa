"""GPU energy from each device's NVML counter, on a fake NVML: joules per training stretch, per step
and per evaluation, per device; what run.json says about each figure's source; counters that fail."""
import pytest
import torch

from harness.data import DataSplits
from harness.data.shapes import ShapesDataset
from harness.engine import nvml
from harness.engine.budget import parse_budget, parse_every
from harness.engine.energy import EnergyMeter, cluster_energy
from harness.engine.loop import Trainer
from harness.engine.options import LoopOptions
from harness.method import Method
from harness.rundir.rundir import RunDir
from tests.conftest import read_manifest, read_records
from tests.harness.engine.fake_nvml import FakeGpu, install
from tests.harness.engine.test_loop import FakeStage


@pytest.fixture
def no_codecarbon(monkeypatch):
    """codecarbon failing to start (its figures missing) must leave the counters measuring."""
    import codecarbon

    def fail(*a, **k):
        raise RuntimeError("no codecarbon in this test")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", fail)


def two_gpus(monkeypatch, **kw):
    # each counter read advances the counter by 0.5 J (cuda:0) and 1.5 J (cuda:1): every segment reads
    # each device twice, so a segment is 0.5 J and 1.5 J
    install(monkeypatch, FakeGpu("GPU-a", mj_per_read=500, **kw), FakeGpu("GPU-b", mj_per_read=1500, **kw))
    return nvml.open_gpus([("cuda:0", "GPU-a", None), ("cuda:1", "GPU-b", None), ("cuda:2", "GPU-gone", None)])


def test_a_segment_is_the_counters_difference_per_device(tmp_path, monkeypatch, no_codecarbon):
    syncs = []
    meter = EnergyMeter(tmp_path, "USA", gpus=two_gpus(monkeypatch), sync=lambda: syncs.append(1))
    assert [g.label for g in meter.gpus] == ["cuda:0", "cuda:1"]  # a device NVML does not find is left out
    with meter.segment("train"):
        pass
    assert meter.last == {"cuda:0": 0.5, "cuda:1": 1.5} and len(syncs) == 2  # synchronised before each read
    with meter.segment("eval"):
        pass
    with meter.segment("train"):
        pass
    s = meter.summary()
    assert s["gpu_j_train"] == pytest.approx(4.0) and s["gpu_j_eval"] == pytest.approx(2.0)
    assert s["gpu_j_by_device"]["cuda:1"] == {"train": 3.0, "eval": 1.5}
    assert s["kwh_train"] is None  # codecarbon's figures missing, the counters' kept
    sources = meter.describe()["sources"]
    assert sources["gpu_j"].startswith("counter: nvmlDeviceGetTotalEnergyConsumption of cuda:0, cuda:1")
    assert sources["kwh"].startswith("none") and sources["kg_co2e"] == "none"


def test_the_counters_persist_through_a_checkpoint(tmp_path, monkeypatch, no_codecarbon):
    meter = EnergyMeter(tmp_path, "USA", gpus=two_gpus(monkeypatch))
    with meter.segment("train"):
        pass
    state = meter.state_dict()
    resumed = EnergyMeter(tmp_path, "USA", gpus=meter.gpus)
    resumed.load_state_dict(state)
    with resumed.segment("train"):
        pass
    assert resumed.summary()["gpu_j_train"] == pytest.approx(4.0)


def test_a_gpu_without_the_counter_reports_none(tmp_path, monkeypatch, no_codecarbon):
    meter = EnergyMeter(tmp_path, "USA", gpus=two_gpus(monkeypatch, counter=False))
    with meter.segment("train"):
        pass
    assert meter.last == {} and meter.summary()["gpu_j_train"] is None
    assert meter.counter_status.startswith("unavailable on cuda:0, cuda:1")
    assert meter.describe()["sources"]["gpu_j"].startswith("none (unavailable")


def test_a_counter_that_fails_once_marks_the_total_partial(tmp_path, monkeypatch, no_codecarbon):
    fake = install(monkeypatch, FakeGpu("GPU-a", mj_per_read=500))
    meter = EnergyMeter(tmp_path, "USA", gpus=nvml.open_gpus([("cuda:0", "GPU-a", None)]))
    with meter.segment("train"):
        pass
    fake.gpus["GPU-a"].counter = False
    with meter.segment("train"):
        pass
    assert meter.counter_status.startswith("partial") and meter.summary()["gpu_j_train"] == pytest.approx(0.5)


def test_no_nvml_no_gpus(monkeypatch):
    monkeypatch.setattr(nvml, "library", lambda: None)
    assert nvml.open_gpus([("cuda:0", "GPU-a", None)]) == []


def test_nodes_sum_their_gpu_joules():
    node = {"kwh_train": 1.0, "kwh_eval": 0.0, "kg_train": 0.0, "kg_eval": 0.0,
            "gpu_j": {"cuda:0": {"train": 5.0, "eval": 1.0}}}
    ranks = [{"energy": node, "status": "measured", "measures": True}, {"energy": {}, "status": "x", "measures": False},
             {"energy": node, "status": "measured", "measures": True}]
    total, _ = cluster_energy(ranks, per_node=2, own_status="measured")
    assert total["gpu_j_train"] == 10.0 and total["gpu_j_eval"] == 2.0


def test_stretch_and_eval_lines_carry_each_gpu_joules(tmp_path, monkeypatch, no_codecarbon):
    gpus = two_gpus(monkeypatch)
    run = RunDir.create(tmp_path / "r", {"method": "fake"})
    stage = FakeStage(max_steps=6)
    trainer = Trainer(run, Method(stages=[stage]), DataSplits(ShapesDataset(8, "train"), ShapesDataset(8, "val")),
                      torch.device("cpu"), LoopOptions(parse_budget("1h"), progress=False,
                                                       eval_every=parse_every("4steps")),
                      EnergyMeter(run.path, "USA", gpus=gpus))
    stage.trainer = trainer
    assert trainer.train() == "completed"
    lines = read_records(run.path)
    stretches = [x for x in lines if x["kind"] == "stretch"]
    assert [x["steps"] for x in stretches] == [4, 2]  # one stretch to the evaluation at 4, one to the end
    assert stretches[0]["joules"] == {"cuda:0": 0.5, "cuda:1": 1.5}
    assert stretches[0]["joules_per_step"] == {"cuda:0": 0.125, "cuda:1": 0.375}
    evals = [x for x in lines if x["kind"] == "eval"]
    assert [x["joules"] for x in evals] == [{"cuda:0": 0.5, "cuda:1": 1.5}] * 2
    # like kwh and kwh_eval: training so far, and every evaluation so far (this one included)
    assert evals[-1]["gpu_j"] == pytest.approx(4.0) and evals[-1]["gpu_j_eval"] == pytest.approx(4.0)
    totals = read_manifest(run.path)["totals"]
    assert totals["gpu_j_train"] == pytest.approx(4.0) and totals["gpu_j_eval"] == pytest.approx(4.0)
