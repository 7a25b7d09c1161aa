"""NSBGAN's best-of-5 sampler instances (Sec. 5): the summary gives the best with its N, the
instances table every run, diverged ones included."""
import pandas as pd
import pytest

from harness.report.collect import Frames
from harness.report.tables import instances_table, summary_table


def five_instances() -> Frames:
    base = dict(method="nsbgan", variant=None, data="imagenet", resolution=256, budget="168h")
    rows = [dict(base, run=f"s{seed}", seed=seed, arch=arch, status=status, **{"pipeline/fid": fid})
            for seed, arch, status, fid in [(0, "biggan-deep", "budget_exhausted", 46.0),
                                             (1, "biggan-deep", "diverged", 180.0),
                                             (2, "biggan-deep", "budget_exhausted", 51.0),
                                             (3, "biggan", "budget_exhausted", 49.0),
                                             (4, "biggan", "diverged", 250.0)]]
    other = dict(base, method="biggan", run="b0", seed=0, arch="biggan", status="diverged", **{"pipeline/fid": None})
    return Frames(pd.DataFrame(rows + [other]), pd.DataFrame(), pd.DataFrame())


def test_best_of_five_with_its_n_and_every_instance():
    frames = five_instances()
    summary = summary_table(frames).set_index("method")
    row = summary.loc["nsbgan"]
    assert row["n_seeds"] == 5 and row["pipeline/fid_best_of_5"] == 46.0
    assert row["pipeline/fid_mean"] == pytest.approx((46 + 180 + 51 + 49 + 250) / 5)
    assert "divergedx2" in row["statuses"] and "budget_exhaustedx3" in row["statuses"]
    inst = instances_table(frames)
    assert list(inst["run"]) == ["s0", "s1", "s2", "s3", "s4"]  # a one-run configuration has no instances
    assert list(inst["arch"]) == ["biggan-deep"] * 3 + ["biggan"] * 2
    assert (inst["status"] == "diverged").sum() == 2
