"""`harness eval` (truncation sweep of a finished run) and `harness fid A B` through the CLI."""
import numpy as np
import pytest
from PIL import Image

from harness.data.shapes import ShapesDataset
from tests.conftest import SMOKE, read_records

TINY = ["--set", "resolution=32", "--set", "width=2", "--set", "batch_size=8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from harness.cli import main

    path = tmp_path_factory.mktemp("eval") / "run"
    main(["run", "--method", "dcgan", "--budget", "2s", "--run-dir", str(path), *TINY, *SMOKE])
    return path


def test_truncation_sweep_appends_eval_lines(cli, run_dir):
    r = cli("eval", run_dir, "--truncation", "1.0,0.5,0.1", "--samples", "40", "--fid-backbone", "standin")
    assert r.code == 0, r.err
    rows = [x for x in read_records(run_dir) if x.get("stage") == "truncation"]
    assert [x["truncation"] for x in rows] == [1.0, 0.5, 0.1]
    assert all("fid_standin" in x and "fid" not in x and x["fid_standin_n"] == 40 for x in rows)
    assert rows[0]["checkpoints"] == {"gan": "gan-last.pt"}
    assert "reference statistics of shapes-" in r.out and "/train stratified n=40 seed=0:" in r.out and "standin" in r.out
    assert all(x["fid_standin_ref_selection"] == "stratified n=40 seed=0" for x in rows)  # the run's reference rule
    assert all(x["sample_filter"] == "none (as the paper)" for x in rows)


def test_eval_rejects_bad_truncations(cli, run_dir):
    r = cli("eval", run_dir, "--truncation", "1.0,abc", "--fid-backbone", "standin")
    assert r.code == 2 and "--truncation" in r.err
    r = cli("eval", run_dir, "--truncation", "0", "--samples", "8", "--fid-backbone", "standin")
    assert r.code == 2 and "positive" in r.err
    r = cli("eval", run_dir.parent / "nope", "--fid-backbone", "standin")
    assert r.code == 2 and "not a run directory" in r.err


def test_fid_between_folder_npz_dataset_and_run(cli, tmp_path, run_dir):
    imgs = ShapesDataset(32, "val").images(np.arange(30))[0]
    folder = tmp_path / "folder"
    folder.mkdir()
    for k, im in enumerate(imgs):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{k}.png")
    np.savez(tmp_path / "same.npz", images=imgs.permute(0, 2, 3, 1).numpy())
    r = cli("fid", folder, tmp_path / "same.npz", "--fid-backbone", "standin")
    assert r.code == 0, r.err
    value = float(next(line for line in r.out.splitlines() if line.startswith("fid_standin:")).split(":")[1])
    assert abs(value) < 1e-6  # the same images from two containers
    r = cli("fid", run_dir, "shapes", "--samples", "30", "--fid-backbone", "standin", "--reference", "first")
    assert r.code == 0, r.err
    assert "gan-final.npz, kept by its final evaluation" in r.out and "shapes-v1-32" in r.out
    assert "fid_standin_n: 30" in r.out
    r = cli("fid", tmp_path / "same.npz", "shapes", "--split", "val", "--fid-backbone", "standin", "--reference", "first")
    assert r.code == 0 and "val" in r.out


def test_fid_bad_sources(cli, tmp_path):
    r = cli("fid", tmp_path / "missing", "shapes", "--fid-backbone", "standin")
    assert r.code == 2 and "not an image folder" in r.err
    r = cli("fid", "shapes", "cifar10:/nope", "--fid-backbone", "standin")
    assert r.code == 2 and "--resolution" in r.err
