"""`harness prepare --data shapes`: the rendered images in the memmap real sets use, read back as the
same dataset (bitwise images, id, describe), chosen by open_dataset only when present, checked on
open, and refused without leaving anything behind where the disk is too small."""
import json
import shutil

import numpy as np
import pytest
import torch

import harness.data.shapes as shapes
from harness.data import open_dataset
from harness.data.shapes import PreparedShapes, ShapesDataset, prepare_shapes, prepared_folder, render
from harness.errors import DataError

R = 16


@pytest.fixture(autouse=True)
def small_splits(monkeypatch):
    """A preparation of 40 + 12 images (the split sizes are part of the id, so it gets its own)."""
    monkeypatch.setitem(shapes.SPLIT_SIZES, "train", 40)
    monkeypatch.setitem(shapes.SPLIT_SIZES, "val", 12)


def test_prepared_images_are_the_renderers_bitwise_with_the_same_id(tmp_path):
    folder = prepare_shapes(R, cache_dir=tmp_path)
    assert folder == tmp_path / "data" / ShapesDataset(R).id
    splits = open_dataset("shapes", R, cache_dir=tmp_path)
    for data in (splits.train, splits.val):
        rendered = ShapesDataset(R, data.split)
        assert isinstance(data, PreparedShapes) and data.storage == "prepared" and rendered.storage == "rendered"
        assert data.describe() == rendered.describe()
        assert (data.id, data.index_sha256, data.name, len(data)) == (rendered.id, rendered.index_sha256, "shapes",
                                                                      len(rendered))
        idx = np.random.default_rng(1).permutation(len(data))  # any order, as an epoch draws them
        x, y = data.images(idx)
        expected = [render(int(i), R, data.split) for i in idx]
        assert torch.equal(x, torch.from_numpy(np.stack([img for img, _ in expected])))
        assert y.dtype == torch.int64 and y.tolist() == [label for _, label in expected]
    with pytest.raises(IndexError):
        splits.val.images(np.array([12]))


def test_open_dataset_renders_where_no_preparation_exists_and_never_prepares(tmp_path):
    prepare_shapes(R, cache_dir=tmp_path)
    other = open_dataset("shapes", 2 * R, cache_dir=tmp_path)
    assert type(other.train) is ShapesDataset and other.train.storage == "rendered"
    assert not prepared_folder(2 * R, tmp_path).exists()
    assert type(open_dataset("shapes", R, cache_dir=tmp_path / "elsewhere").train) is ShapesDataset


def _flip_last_val_image(folder):
    images = np.load(folder / "images.npy", mmap_mode="r+")
    images[-1, 0, 0, 0] ^= 1
    images.flush()


def _wrong_id(folder):
    index = json.loads((folder / "index.json").read_text())
    index["shapes_id"] = "shapes-v0-16-000000000000"
    (folder / "index.json").write_text(json.dumps(index))


def _truncate(folder):
    with open(folder / "images.npy", "r+b") as f:
        f.truncate(1000)


def _no_val(folder):
    index = json.loads((folder / "index.json").read_text())
    index["splits"]["val"] = [40, 40]
    (folder / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("damage", [_flip_last_val_image, _wrong_id, _truncate, _no_val])
def test_a_stale_or_corrupt_preparation_is_a_data_error_naming_the_fix(tmp_path, damage):
    folder = prepare_shapes(R, cache_dir=tmp_path)
    damage(folder)
    with pytest.raises(DataError) as e:
        open_dataset("shapes", R, cache_dir=tmp_path)
    assert "\n" not in str(e.value)
    assert f"harness prepare --data shapes --resolution {R} --force" in str(e.value)
    prepare_shapes(R, cache_dir=tmp_path, force=True)
    assert isinstance(open_dataset("shapes", R, cache_dir=tmp_path).val, PreparedShapes)


def test_a_failed_preparation_leaves_the_previous_one_and_no_temporary(tmp_path, monkeypatch):
    folder = prepare_shapes(R, cache_dir=tmp_path)
    real = shapes.render

    def failing(index, resolution, split="train", seed=0):
        if split == "val" and index == 5:
            raise KeyboardInterrupt
        return real(index, resolution, split, seed)

    monkeypatch.setattr(shapes, "render", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_shapes(R, cache_dir=tmp_path, force=True)
    monkeypatch.setattr(shapes, "render", real)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    assert isinstance(open_dataset("shapes", R, cache_dir=tmp_path).train, PreparedShapes)


def test_prepare_cli_renders_shapes_and_says_its_size(cli, tmp_path):
    r = cli("prepare", "--data", "shapes", "--resolution", R, "--cache-dir", tmp_path)
    assert r.code == 0, r.err
    assert f"{ShapesDataset(R).id}: 40 train + 12 held-out images at 16x16" in r.out
    assert "writing 52 images at 16x16: 39.9 kB" in r.err  # 52 x 3 x 16 x 16 bytes
    again = cli("prepare", "--data", "shapes", "--resolution", R, "--cache-dir", tmp_path)
    assert again.code == 0 and "writing" not in again.err  # prepared already: nothing rendered


def test_prepare_cli_refuses_a_disk_without_the_space_in_one_line(cli, tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=52 * 3 * R * R // 2))
    r = cli("prepare", "--data", "shapes", "--resolution", R, "--cache-dir", tmp_path / "cache")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "needs 1.09 MB" in r.err and "has 20 kB free" in r.err  # 52 x 768 B images + labels + 1 MiB
    assert not (tmp_path / "cache").exists()
