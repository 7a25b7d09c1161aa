"""Kept final samples (samples/<stage>-final.npz): the streaming writer against numpy, and the
round trip `harness run` -> `harness fid RUN_DIR` reproducing the logged score."""
import numpy as np
import pytest
import torch

from harness.rundir.samples import tee_npz
from tests.conftest import SMOKE, read_records

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]


def _chunks(sizes, hw=(5, 7), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (k, 3, *hw), generator=gen, dtype=torch.uint8) for k in sizes]


@pytest.mark.parametrize("limit", [None, 6, 100])
def test_tee_passes_chunks_through_and_keeps_them_as_npz(tmp_path, limit):
    chunks = _chunks([4, 4, 3])
    path = tmp_path / "s.npz"
    seen = list(tee_npz(iter(chunks), path, limit))
    assert all(a is b for a, b in zip(seen, chunks))
    expected = torch.cat(chunks).permute(0, 2, 3, 1).numpy()[:limit]
    with np.load(path) as d:
        assert d.files == ["images"]
        np.testing.assert_array_equal(d["images"], expected)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temporary left behind


def test_tee_abandoned_early_writes_nothing(tmp_path):
    stream = tee_npz(iter(_chunks([4, 4])), tmp_path / "s.npz")
    next(stream)
    stream.close()
    assert list(tmp_path.iterdir()) == []


def test_tee_refuses_chunks_of_changing_size(tmp_path):
    chunks = _chunks([2]) + _chunks([2], hw=(6, 6))
    with pytest.raises(ValueError, match="change size"):
        list(tee_npz(iter(chunks), tmp_path / "s.npz"))
    assert list(tmp_path.iterdir()) == []


def test_fid_of_a_run_reuses_its_kept_samples(cli, tmp_path):
    run_dir = tmp_path / "run"
    r = cli("run", "--method", "dcgan", "--budget", "2s", "--run-dir", run_dir, *TINY, *SMOKE)
    assert r.code == 0, r.err
    kept = run_dir / "samples" / "gan-final.npz"
    with np.load(kept) as d:
        assert d["images"].shape == (64, 32, 32, 3) and d["images"].dtype == np.uint8
    final = [x for x in read_records(run_dir) if x["kind"] == "eval" and x.get("final")][-1]
    # the run's reference rule on shapes: a stratified subset as large as the samples
    r = cli("fid", run_dir, "shapes", "--fid-backbone", "standin", "--samples", "64", "--reference", "stratified")
    assert r.code == 0, r.err
    assert "gan-final.npz, kept by its final evaluation" in r.out
    score = float(next(line for line in r.out.splitlines() if line.startswith("fid_standin:")).split()[1])
    # the same images; printed to 6 significant digits, i.e. within half a unit of the 6th: 5e-6 relative
    assert score == pytest.approx(final["fid_standin"], rel=5e-6)


def test_keep_samples_zero_keeps_none_and_fid_samples_the_checkpoint(cli, tmp_path):
    run_dir = tmp_path / "run"
    r = cli("run", "--method", "dcgan", "--budget", "2s", "--run-dir", run_dir, "--keep-samples", "0", *TINY, *SMOKE)
    assert r.code == 0, r.err
    assert not list((run_dir / "samples").glob("*.npz"))
    r = cli("fid", run_dir, "shapes", "--fid-backbone", "standin", "--samples", "32", "--reference", "stratified")
    assert r.code == 0, r.err
    assert "samples of dcgan" in r.out
    r = cli("run", "--method", "dcgan", "--budget", "2s", "--run-dir", tmp_path / "bad", "--keep-samples", "-1")
    assert r.code == 2 and "--keep-samples" in r.err and not (tmp_path / "bad").exists()
