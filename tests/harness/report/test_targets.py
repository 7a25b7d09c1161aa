"""Time-to-target arithmetic on synthetic run directories: the first evaluation at or below a
target, its hours, GPU-hours and kWh, grouped over seeds with k/N and "not reached"."""
import math

import pytest

from harness.report.collect import collect
from harness.report.targets import time_to_target

from tests.harness.report.conftest import make_run


def test_first_evaluation_at_or_below_each_target(two_methods):
    runs, grouped = time_to_target(collect([two_methods]), targets=[100.0, 60.0])
    r = runs.set_index(["run", "target"])
    assert r.loc[("dcgan-s0", 100.0), "train_h"] == 0.5  # 100 <= 100: reached at that evaluation
    assert r.loc[("dcgan-s1", 100.0), "train_h"] == 0.75
    assert r.loc[("dcgan-s1", 100.0), "kwh"] == pytest.approx(0.375)  # 0.5 kWh per training hour
    assert r.loc[("oct-s0", 100.0), "train_h"] == 0.25
    assert r.loc[("oct-s1", 100.0), "step"] == 200
    assert not r.loc[("dcgan-s0", 60.0), "reached"] and math.isnan(r.loc[("dcgan-s0", 60.0), "train_h"])
    assert r.loc[("oct-s0", 60.0), "train_h"] == 1.0 and not r.loc[("oct-s1", 60.0), "reached"]

    g = grouped.set_index(["method", "target"])
    assert g.loc[("dcgan", 100.0), "reached"] == "2/2"
    assert g.loc[("dcgan", 100.0), "train_h_mean"] == pytest.approx(0.625)
    assert g.loc[("octave-dcgan", 100.0), "train_h_mean"] == pytest.approx(0.375)
    assert g.loc[("octave-dcgan", 60.0), "reached"] == "1/2"
    assert g.loc[("octave-dcgan", 60.0), "train_h_mean"] == 1.0  # the mean over the seeds that reached it
    assert g.loc[("dcgan", 60.0), "reached"] == "0/2" and g.loc[("dcgan", 60.0), "result"] == "not reached"
    assert list(grouped["target"]) == [100.0, 100.0, 60.0, 60.0]  # easiest target first


def test_gpu_hours_follow_the_devices(tmp_path):
    make_run(tmp_path, "big", "biggan", 0, [(1.0, 80.0), (2.0, 40.0)], devices=4)
    runs, _ = time_to_target(collect([tmp_path]), targets=[50.0])
    assert runs.iloc[0]["train_h"] == 2.0 and runs.iloc[0]["gpu_h"] == 8.0


def test_default_targets_come_from_the_runs(two_methods):
    runs, grouped = time_to_target(collect([two_methods]))
    targets = sorted(set(grouped["target"]), reverse=True)
    # the worst configuration's best (dcgan: 90), the best one's (octave: 60), their midpoint
    assert targets == [90.0, 75.0, 60.0]
    g = grouped.set_index(["method", "target"])
    assert g.loc[("dcgan", 90.0), "reached"] == "1/2" and g.loc[("octave-dcgan", 90.0), "reached"] == "2/2"
    assert g.loc[("octave-dcgan", 60.0), "reached"] == "1/2"


def test_one_configuration_gets_targets_between_its_first_and_best(tmp_path):
    make_run(tmp_path, "a", "dcgan", 0, [(0.5, 300.0), (1.0, 150.0), (1.5, 120.0)])
    _, grouped = time_to_target(collect([tmp_path]))
    assert list(grouped["target"]) == [240.0, 180.0, 120.0]
    assert list(grouped["reached"]) == ["1/1"] * 3


def test_default_targets_round_up_so_that_every_configuration_reaches_the_first(tmp_path):
    # bests of 20.4007 and 20.4267: rounded to the nearest, the target would be 20.4, reached by neither
    make_run(tmp_path, "a", "dcgan", 0, [(0.5, 22.6), (1.0, 20.4007)], key="fid_standin")
    make_run(tmp_path, "b", "octave-dcgan", 0, [(0.5, 22.4), (1.0, 20.4267)], key="fid_standin")
    _, grouped = time_to_target(collect([tmp_path]))
    assert list(grouped["target"]) == [20.5, 20.5] and list(grouped["reached"]) == ["1/1", "1/1"]


def test_stand_in_scores_are_used_and_named_when_there_is_no_fid(tmp_path):
    make_run(tmp_path, "a", "dcgan", 0, [(0.5, 9.0), (1.0, 7.0)], key="fid_standin")
    runs, _ = time_to_target(collect([tmp_path]), targets=[8.0])
    assert set(runs["metric"]) == {"fid_standin"} and runs.iloc[0]["train_h"] == 1.0


def test_no_fid_curve_gives_empty_tables(tmp_path):
    make_run(tmp_path, "a", "dcgan", 0, [])
    runs, grouped = time_to_target(collect([tmp_path]))
    assert runs.empty and grouped.empty
