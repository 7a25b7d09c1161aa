"""Datasets: the embedded shapes set, real-set readers, the memmap cache and the batch stream."""
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from harness.data import open_dataset, parse_data_spec
from harness.data.cache import prepare, square_resize
from harness.data.loader import BatchStream
from harness.data.shapes import CLASSES, ShapesDataset, render
from harness.errors import DataError


def test_shapes_is_deterministic_and_class_balanced():
    a, la = ShapesDataset(32).images(np.arange(30))
    b, lb = ShapesDataset(32).images(np.arange(30))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert a.dtype == torch.uint8 and a.shape == (30, 3, 32, 32)
    assert sorted(set(la.tolist())) == list(range(len(CLASSES))) and len(CLASSES) >= 10
    val, _ = ShapesDataset(32, "val").images(np.arange(5))
    assert not torch.equal(val, a[:5])
    other_seed, _ = ShapesDataset(32, seed=1).images(np.arange(5))
    assert not torch.equal(other_seed, a[:5])


@pytest.mark.parametrize("res", [32, 64, 128, 256])
def test_shapes_any_resolution_same_scene(res):
    img, label = render(7, res)
    assert img.shape == (3, res, res)
    small, _ = render(7, 32)
    # the same scene at two resolutions: block-averaged, the large one matches the small one
    f = res // 32
    down = img.astype(np.float64).reshape(3, 32, f, 32, f).mean(axis=(2, 4))
    assert np.abs(down - small).mean() < 12


def test_shapes_has_low_and_high_frequency_energy():
    x, _ = ShapesDataset(64).images(np.arange(20))
    g = x.double().mean(1)
    f = torch.fft.fftshift(torch.fft.fft2(g - g.mean(dim=(1, 2), keepdim=True)), dim=(-2, -1)).abs() ** 2
    yy, xx = torch.meshgrid(torch.arange(64) - 32, torch.arange(64) - 32, indexing="ij")
    r = torch.sqrt(xx.double() ** 2 + yy.double() ** 2)
    high = f[:, r > 16].sum() / f.sum()
    assert 0.005 < high < 0.5  # not a cartoon without detail, not noise


def test_data_spec_parsing():
    assert parse_data_spec("shapes").kind == "shapes"
    s = parse_data_spec("cifar10:/data/c")
    assert (s.kind, s.path) == ("cifar10", "/data/c")
    with pytest.raises(DataError):
        parse_data_spec("shapes:/x")


def _fake_cifar(tmp_path, per_batch=6):
    rng = np.random.default_rng(0)
    tar_path = tmp_path / "cifar-10-python.tar.gz"
    batches = {}
    with tarfile.open(tar_path, "w:gz") as tar:
        def add(name, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            y = list(rng.integers(0, 10, per_batch))
            batches[name] = (x, y)
            add(name, {b"data": x, b"labels": y})
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return tar_path, batches


def test_cifar10_tarball_official_split_without_resampling(tmp_path):
    tar_path, batches = _fake_cifar(tmp_path)
    splits = open_dataset(f"cifar10:{tar_path}", 32, cache_dir=tmp_path / "cache")
    assert len(splits.train) == 30 and len(splits.val) == 6 and splits.train.num_classes == 10
    x, y = splits.train.images(np.arange(6))
    want = batches["data_batch_1"][0].reshape(-1, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(want)) and y.tolist() == [int(v) for v in batches["data_batch_1"][1]]
    xv, _ = splits.val.images(np.arange(6))
    assert torch.equal(xv, torch.from_numpy(batches["test_batch"][0].reshape(-1, 3, 32, 32)))
    assert splits.train.id.startswith("cifar10-32-") and len(splits.train.index_sha256) == 64
    # the extracted folder gives the same data and the same identity
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    again = open_dataset(f"cifar10:{tmp_path / 'extracted'}", 32, cache_dir=tmp_path / "cache2")
    assert torch.equal(again.train.images(np.arange(6))[0], x)
    with pytest.raises(DataError, match="smaller than 64x64"):
        open_dataset(f"cifar10:{tar_path}", 64, cache_dir=tmp_path / "cache3")


def test_corrupt_cifar_tarball(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball at all")
    with pytest.raises(DataError, match="cannot read CIFAR-10"):
        open_dataset(f"cifar10:{bad}", 32, cache_dir=tmp_path / "cache")


def test_npz_with_labels_and_downscale(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    splits = open_dataset(f"npz:{tmp_path / 'd.npz'}", 16, cache_dir=tmp_path / "cache")
    assert len(splits.train) + len(splits.val) == 40 and len(splits.val) == 2  # 5% held out
    assert splits.train.num_classes == 4
    # held-out images are a fixed subset; every image is the PIL bicubic resize of its source
    idx = np.arange(len(splits.train))
    got, labels = splits.train.images(idx)
    sources = {tuple(square_resize(x[i], 16).transpose(2, 0, 1).ravel()): int(y[i]) for i in range(40)}
    for img, lab in zip(got, labels):
        assert sources[tuple(img.numpy().ravel())] == int(lab)


def test_folder_with_classes_and_celeba_crop(tmp_path):
    rng = np.random.default_rng(2)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for k in range(12):
            Image.fromarray(rng.integers(0, 256, (50, 40 + k, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{k}.png")
    splits = open_dataset(f"folder:{tmp_path / 'imgs'}", 32, cache_dir=tmp_path / "cache")
    assert len(splits.train) + len(splits.val) == 24 and splits.train.num_classes == 2
    celeba = tmp_path / "img_align_celeba"
    celeba.mkdir()
    faces = [rng.integers(0, 256, (109, 89, 3), dtype=np.uint8) for _ in range(20)]
    for k, f in enumerate(faces):
        Image.fromarray(f).save(celeba / f"{k:06d}.png")
    s = open_dataset(f"celeba:{tmp_path}", 64, cache_dir=tmp_path / "cache")
    first, _ = s.train.images(np.arange(len(s.train)))
    crop = faces[0][10:99, :]  # centre 89x89 of 89x109
    want = np.array(Image.fromarray(crop).resize((64, 64), Image.BICUBIC)).transpose(2, 0, 1).copy()
    assert any(torch.equal(img, torch.from_numpy(want)) for img in first)
    with pytest.raises(DataError, match="89x109"):
        open_dataset(f"celeba:{tmp_path}", 128, cache_dir=tmp_path / "cache")


def test_corrupt_image_is_named(tmp_path):
    d = tmp_path / "flat"
    d.mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d / "ok.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="broken.jpg"):
        prepare(f"folder:{d}", 32, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "data").glob("*")) or not any(
        (p / "index.json").exists() for p in (tmp_path / "cache" / "data").iterdir())


def test_batch_stream_resumes_exactly():
    data = ShapesDataset(16, "val")
    a = BatchStream(data, 64, seed=3)
    seen = [a.next() for _ in range(5)]
    b = BatchStream(data, 64, seed=3)
    for _ in range(2):
        b.next()
    c = BatchStream(data, 64, seed=3)
    c.load_state_dict(b.state_dict())
    rest = [c.next() for _ in range(3)]
    assert len(rest) == 3
    for (xa, ya), (xc, yc) in zip(seen[2:], rest):  # the same images, not only the same labels
        assert torch.equal(xa, xc) and torch.equal(ya, yc)
    assert not torch.equal(seen[1][0], rest[0][0])  # and not a stream that repeats one batch


def test_batch_stream_epochs_drop_last():
    data = ShapesDataset(8, "val")  # 5000 images
    s = BatchStream(data, 1024, seed=0)
    assert s.batches_per_epoch == 4
    firsts = [s.next()[1] for _ in range(4)]
    assert s.epochs_done == pytest.approx(1.0)
    s.next()
    assert s.epoch == 1 and s.epochs_done == pytest.approx(1.25)
    assert len(torch.cat(firsts).unique()) <= 10
    with pytest.raises(DataError, match="fewer than one batch"):
        BatchStream(data, 6000, seed=0)


@pytest.mark.parametrize("workers", [1, 3])
def test_prefetching_changes_when_batches_are_made_never_which(workers):
    data = ShapesDataset(8, "val")  # 5000 images: 4 batches of 1024 per epoch
    plain = BatchStream(data, 1024, seed=5)
    ahead = BatchStream(data, 1024, seed=5, workers=workers)
    for _ in range(6):  # across an epoch boundary
        (xa, ya), (xb, yb) = plain.next(), ahead.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert ahead.state_dict() == plain.state_dict()  # the position handed out, not the one prefetched
    resumed = BatchStream(data, 1024, seed=5, workers=workers)
    resumed.load_state_dict(ahead.state_dict())
    ahead.load_state_dict(ahead.state_dict())  # drops what was in flight, same place
    for _ in range(3):
        want_x, want = plain.next()
        (rx, ry), (ax, ay) = resumed.next(), ahead.next()
        assert torch.equal(ry, want) and torch.equal(ay, want)
        assert torch.equal(rx, want_x) and torch.equal(ax, want_x)
    ahead.close()
    resumed.close()
    assert ahead.next()[1].shape == (1024,)  # closing stops prefetching, not the stream
    ahead.close()
