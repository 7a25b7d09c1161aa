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


# --- preparation options (issue 14): each one changes what it says, and the dataset id ----------------
def _celeba(tmp_path, faces, held_out=(3, 7)):
    """A CelebA folder of PNGs with an official partition file; `held_out` images are val/test."""
    folder = tmp_path / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for k, f in enumerate(faces):
        Image.fromarray(f).save(folder / f"{k:06d}.png")
        lines.append(f"{k:06d}.png {1 if k in held_out else 0}")
    (folder.parent / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder.parent


def test_resize_squash_is_the_bilinear_full_frame_and_split_all_trains_on_every_image(tmp_path):
    import torchvision.transforms as T

    rng = np.random.default_rng(3)
    faces = [rng.integers(0, 256, (218, 178, 3), dtype=np.uint8) for _ in range(10)]  # CelebA's 178x218
    root = _celeba(tmp_path, faces)
    s = open_dataset(f"celeba:{root},split=all,resize=squash", 128, cache_dir=tmp_path / "cache")
    assert len(s.train) == 10 and len(s.val) == 2  # every image trained on; the official held-out kept
    assert "-squash-all-" in s.train.id and s.train.options == {"resize": "squash", "split": "all"}
    got, _ = s.train.images(np.arange(10))
    # the official resize_celeba.py: scipy.misc.imresize(img, (128, 128)) = PIL bilinear of the frame;
    # torchvision's Resize((128, 128)) on a PIL image is the same call
    resize = T.Resize((128, 128), interpolation=T.InterpolationMode.BILINEAR)
    want = {tuple(np.asarray(resize(Image.fromarray(f))).transpose(2, 0, 1).ravel()) for f in faces}
    assert {tuple(img.numpy().ravel()) for img in got} == want
    held, _ = s.val.images(np.arange(2))
    assert {tuple(h.numpy().ravel()) for h in held} <= want
    crop = faces[0][20:198, :]  # the default's centre 178x178 differs from the squashed frame
    assert tuple(np.asarray(resize(Image.fromarray(crop))).transpose(2, 0, 1).ravel()) not in want
    official = open_dataset(f"celeba:{root}", 128, cache_dir=tmp_path / "cache")
    assert len(official.train) == 8 and official.train.id != s.train.id and "squash" not in official.train.id
    assert official.train.options == {}


@pytest.mark.parametrize("hw", [(300, 280), (256, 300), (200, 270), (255, 255), (101, 257)])
def test_crop_native_equals_torchvision_center_crop_and_pads_small_images(hw):
    import torchvision.transforms as T

    from harness.data.cache import center_crop

    img = np.random.default_rng(hw[0]).integers(1, 256, (*hw, 3), dtype=np.uint8)
    want = np.asarray(T.CenterCrop(256)(Image.fromarray(img)))  # pads with zeros where smaller
    got = center_crop(img, 256)
    assert got.shape == (256, 256, 3) and np.array_equal(got, want)
    if min(hw) < 256:
        assert (got == 0).all(axis=2).any()  # the padding is there, not a resize


def test_crop_long_edge_is_biggan_pytorchs_centre_crop_then_bilinear_resize():
    import torchvision.transforms as T

    from harness.data.cache import long_edge_resize

    img = np.random.default_rng(5).integers(0, 256, (301, 400, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    # hanseungwook/BigGAN-PyTorch utils.CenterCropLongEdge = center_crop(img, min(img.size)), then Resize(R)
    want = np.asarray(T.Resize(64, interpolation=T.InterpolationMode.BILINEAR)(T.functional.center_crop(pil, 301)))
    assert np.array_equal(long_edge_resize(img, 64), want)
    with pytest.raises(DataError, match="crop=native"):
        long_edge_resize(img, 512)


def test_native_and_long_edge_prepare_their_own_cache_and_id(tmp_path):
    import torchvision.transforms as T

    rng = np.random.default_rng(6)
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    imgs = [rng.integers(0, 256, (40 + 7 * k, 50 - 3 * k, 3), dtype=np.uint8) for k in range(6)]
    for k, im in enumerate(imgs):
        Image.fromarray(im).save(tmp_path / "imgs" / "a" / f"{k}.png")
    spec = f"folder:{tmp_path / 'imgs'}"
    native = open_dataset(f"{spec},crop=native", 48, cache_dir=tmp_path / "cache")
    got = {tuple(x.numpy().ravel()) for x in native.train.images(np.arange(len(native.train)))[0]}
    want = {tuple(np.asarray(T.CenterCrop(48)(Image.fromarray(im))).transpose(2, 0, 1).ravel()) for im in imgs}
    assert got <= want and len(native.train) + len(native.val) == 6  # small images padded, none refused
    long_edge = open_dataset(f"{spec},crop=long-edge", 32, cache_dir=tmp_path / "cache")
    centre = open_dataset(spec, 32, cache_dir=tmp_path / "cache")
    ids = {native.train.id, long_edge.train.id, centre.train.id}
    assert len(ids) == 3 and "-native-" in native.train.id and "-long-edge-" in long_edge.train.id
    a, _ = long_edge.train.images(np.arange(len(long_edge.train)))
    b, _ = centre.train.images(np.arange(len(centre.train)))
    assert not torch.equal(a, b)  # bilinear vs the harness's bicubic


def test_data_options_are_checked_and_method_defaults_yield_to_the_spec(tmp_path):
    s = parse_data_spec("imagenet:/data/in,b,crop=native")
    assert s.path == "/data/in,b" and s.options == (("crop", "native"),)
    for bad, msg in [("cifar10:/x,crop=native", "does not apply to cifar10"), ("celeba:/x,colour=grey", "unknown data option"),
                     ("celeba:/x,crop=native,resize=squash", "resize=squash"), ("npz:/x.npz,split=all", "does not apply to npz"),
                     ("celeba:/x,split=half", "split=official|all"), ("shapes:split=all", "takes no path")]:
        with pytest.raises(DataError, match=msg):
            parse_data_spec(bad)
    octave = "split=all,resize=squash"
    assert str(parse_data_spec("celeba:/c").with_defaults(octave)) == "celeba:/c,resize=squash,split=all"
    # what the user wrote wins, key by key; crop and resize go together
    assert str(parse_data_spec("celeba:/c,split=official").with_defaults(octave)) == "celeba:/c,resize=squash"
    assert str(parse_data_spec("celeba:/c,crop=native").with_defaults(octave)) == "celeba:/c,crop=native,split=all"
    # defaults a kind does not take are skipped (npz has no partition; shapes takes no options)
    assert str(parse_data_spec("npz:/d.npz").with_defaults(octave)) == "npz:/d.npz,resize=squash"
    # kind-qualified defaults hold for that kind only: the octave code's CelebA split says nothing of CIFAR-10
    celeba_only = "celeba:split=all,resize=squash"
    assert str(parse_data_spec("celeba:/c").with_defaults(celeba_only)) == "celeba:/c,resize=squash,split=all"
    assert str(parse_data_spec("cifar10:/t.tar.gz").with_defaults(celeba_only)) == "cifar10:/t.tar.gz"
    assert str(parse_data_spec("folder:/f").with_defaults(celeba_only + ";folder:crop=native")) == "folder:/f,crop=native"
    with pytest.raises(DataError, match="unknown dataset kind 'lsun'"):
        parse_data_spec("celeba:/c").with_defaults("lsun:crop=native")
    splits = open_dataset("shapes", 32, defaults=octave, stage_defaults={"sampler": "crop=long-edge"})
    assert splits.train.name == "shapes" and splits.for_stage("sampler") is splits


def test_a_stage_with_its_own_data_options_gets_its_own_preparation(tmp_path):
    from types import SimpleNamespace

    from harness.data import open_run_data

    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (40, 40, 48, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x)
    cfg = SimpleNamespace(resolution=32, data_options="crop=native")
    data = open_run_data(f"npz:{tmp_path / 'd.npz'}", cfg, {"sampler": "crop=long-edge"}, cache_dir=tmp_path / "cache")
    assert "-native-" in data.train.id and data.for_stage("decoder-l1") is data
    sampler = data.for_stage("sampler")
    assert "-long-edge-" in sampler.train.id and len(sampler.train) == len(data.train)


def test_prepare_cli_takes_options_and_refuses_bad_ones_in_one_line(cli, tmp_path):
    rng = np.random.default_rng(8)
    root = _celeba(tmp_path, [rng.integers(0, 256, (218, 178, 3), dtype=np.uint8) for _ in range(6)], held_out=(1,))
    r = cli("prepare", "--data", f"celeba:{root},split=all,resize=squash", "--resolution", "64",
            "--cache-dir", tmp_path / "cache")
    assert r.code == 0, r.err
    assert "celeba-64-squash-all-" in r.out and "6 train + 1 held-out" in r.out
    bad = cli("prepare", "--data", f"celeba:{root},crop=middle", "--resolution", "64", "--cache-dir", tmp_path / "cache")
    assert bad.code == 2 and len(bad.err.strip().splitlines()) == 1 and "crop=centre|native|long-edge" in bad.err


@pytest.mark.parametrize("labels, needle", [
    (np.array([str(k % 4) for k in range(40)]), "integers"),  # strings
    (np.arange(40) % 4 + 0.5, "integers"),  # floats
    ((np.arange(40) % 4).astype(np.float64), "integers"),  # floats, even whole ones
    (np.stack([np.arange(40) % 4] * 2, axis=1), "1-D"),  # one row per image, two columns
    (np.arange(40) % 4 - 1, "-1"),  # a negative label (biggan's embedding would fail much later)
    (np.where(np.arange(40) == 7, 20_000_000, np.arange(40) % 4), "20000000"),  # one huge label
    (np.arange(40) % 4 * 2, "0..3"),  # 4 distinct labels, not 0..3
    (np.array([True, False] * 20), "integers"),
])
def test_npz_labels_must_be_integers_from_0_to_n(cli, tmp_path, labels, needle):
    """Labels are 1-D integers in [0, n), n the number of distinct labels (or of the npz's
    `class_names`): checked when the set is prepared, in one line, before anything is written."""
    import time

    x = np.zeros((40, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=labels)
    t0 = time.perf_counter()
    r = cli("prepare", "--data", f"npz:{tmp_path / 'd.npz'}", "--resolution", "16", "--cache-dir", tmp_path / "cache")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
    assert "labels" in r.err and needle in r.err
    assert time.perf_counter() - t0 < 10 and not any((tmp_path / "cache").rglob("index.json"))


def test_npz_class_names_give_the_number_of_classes(tmp_path):
    x = np.zeros((40, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(40) % 3 * 2, class_names=np.array(list("abcdef")))
    splits = open_dataset(f"npz:{tmp_path / 'd.npz'}", 16, cache_dir=tmp_path / "cache")
    assert splits.train.num_classes == 6  # classes 1, 3 and 5 have no image here
    np.savez(tmp_path / "e.npz", images=x, labels=np.arange(40) % 7, class_names=np.array(list("abcdef")))
    with pytest.raises(DataError, match="labels must lie in 0..5"):
        open_dataset(f"npz:{tmp_path / 'e.npz'}", 16, cache_dir=tmp_path / "cache")


def test_a_cifar_batch_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    """CIFAR-10's python batches are pickles: they are read with an unpickler that builds only the
    containers and numpy arrays such a batch holds."""
    import os

    class RunsCode:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'ran'}",)

    tar_path, _ = _fake_cifar(tmp_path)
    folder = tmp_path / "extracted"
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    (folder / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps({b"data": RunsCode(), b"labels": []}))
    with pytest.raises(DataError, match="data_batch_3.*posix.system"):
        open_dataset(f"cifar10:{folder}", 32, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "ran").exists()
