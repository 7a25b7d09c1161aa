"""Throughput of the training batch stream: images/s from the dataset to normalised tensors on the
device (`BatchStream.next()`, then uint8 -> float in [-1, 1] as the methods' `uint8_to_signed`), for the
embedded `shapes` data rendered on the fly and read from its prepared memmap (`harness prepare
--data shapes`) side by side, or for a prepared real dataset, by prefetch threads.

    python -m benchmarks.data [--data shapes] [--shapes both|rendered|prepared] [--prepared-images 5000]
                              [--resolutions 64,128,256] [--batch 64] [--workers 0,1,2,4,8]
                              [--batches 12] [--device cpu|cuda]

`workers 0` reads each batch when it is asked for; `workers N` keeps N batches in flight in a
thread pool (what the loop uses: 1 thread on a CPU, up to 8 per process on a GPU). The consumer
here does nothing, so the figure is the stream's ceiling: a training step slower than
batch / (images/s) never waits for data.

The prepared stream reads the harness cache's full preparation where one exists; otherwise the
first `--prepared-images` training images are rendered into a memmap in a temporary folder (0:
prepare all 55,000 there, 10.8 GB at 256). 5,000 images are 1 GB at 256 and 61 MB at 64: larger
than any CPU cache, so batches are read from memory (the page cache) as from a full preparation
that fits in RAM. The `uint8 only` row is the stream without `uint8_to_signed`, and the last line of each
resolution splits a prepared batch's time between reading it and normalising it. On a CPU at 256
the normalisation dominates: its (64, 3, 256, 256) float tensor (50 MB) is above glibc's largest
mmap threshold (32 MB), so with the C library's defaults it is fresh memory paid for in page
faults at every batch. On a CPU this benchmark tunes the allocator as `harness run` does there
(harness.allocator; the header says so): HARNESS_MALLOC=default shows the stream without it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness.images import uint8_to_signed  # noqa: E402
from harness import allocator  # noqa: E402
from harness.engine.allocator import keep_freed_memory  # noqa: E402
from harness.data import ImageDataset, open_dataset  # noqa: E402
from harness.data.loader import BatchStream  # noqa: E402


def measure(data, batch: int, workers: int, batches: int, device: torch.device | str = "cpu",
            normalise: bool = True) -> float:
    """Images/s of `batches` batches on `device` (normalised by `uint8_to_signed` unless `normalise` is
    False) after one warm-up batch."""
    device = torch.device(device)
    stream = BatchStream(data, batch, seed=0, device=device, workers=workers)
    unit = uint8_to_signed if normalise else (lambda x: x)
    unit(stream.next()[0])  # warm-up: starts the pool, first batches in flight
    t0 = time.perf_counter()
    for _ in range(batches):
        x = unit(stream.next()[0])
    if device.type == "cuda":
        x.sum().item()  # the last batch has arrived
    dt = time.perf_counter() - t0
    stream.close()
    return batch * batches / dt


def prepared_shapes(resolution: int, count: int, root: Path) -> tuple[ImageDataset, str]:
    """The `shapes` train split read from a prepared memmap, and a note on which: the harness cache's
    full preparation if `harness prepare --data shapes` made one, else the first `count` training
    images rendered into a memmap under `root` (count 0: the full preparation, into `root`)."""
    from harness.data.store import MemmapDataset, prepared_bytes, write_prepared
    from harness.ui.units import format_bytes
    from harness.data.shapes import CLASSES, SPLIT_SIZES, open_shapes, prepare_shapes, render

    cached = open_dataset("shapes", resolution).train
    if getattr(cached, "storage", "") == "prepared":
        return cached, f"the cache's full preparation, {len(cached):,} images"
    total = sum(SPLIT_SIZES.values())
    if count <= 0 or count >= total:
        prepare_shapes(resolution, cache_dir=root)
        data = open_shapes(resolution, root).train
        return data, f"a full preparation, {len(data):,} train images, {format_bytes(prepared_bytes(total, resolution))}"
    folder = root / "data" / f"shapes-first-{count}-{resolution}"
    if not (folder / "index.json").is_file():
        index = {"kind": "shapes", "resolution": resolution, "num_classes": len(CLASSES), "count": count,
                 "splits": {"train": [0, count], "val": [count, count]},
                 "processing": f"the first {count} images of harness.data.shapes.render(i, {resolution}, 'train')"}
        write_prepared(folder, lambda k: render(k, resolution, "train")[0], count, resolution,
                       np.arange(count, dtype=np.int64) % len(CLASSES), index)
    return (MemmapDataset(folder, "train"),
            f"the first {count:,} train images, a {format_bytes(prepared_bytes(count, resolution))} memmap")


def batch_costs(data, batch: int, device: torch.device | str = "cpu", repeats: int = 10) -> tuple[float, float]:
    """Median ms of one batch's `data.images` (random indices, as an epoch draws them) and of its
    `uint8_to_signed` on `device` (the transfer included)."""
    device = torch.device(device)
    rng = np.random.default_rng(0)
    read, norm = [], []
    for _ in range(repeats + 1):
        idx = rng.choice(len(data), batch, replace=False)
        t0 = time.perf_counter()
        x = data.images(idx)[0]
        t1 = time.perf_counter()
        y = uint8_to_signed(x.to(device))
        if device.type == "cuda":
            y.sum().item()
        t2 = time.perf_counter()
        read.append(t1 - t0)
        norm.append(t2 - t1)
    return float(np.median(read[1:]) * 1e3), float(np.median(norm[1:]) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--shapes", default="both", choices=("both", "rendered", "prepared"),
                    help="for --data shapes: rendered on the fly, read from its prepared memmap, or both")
    ap.add_argument("--prepared-images", type=int, default=5000,
                    help="images in the benchmark's own prepared memmap where the cache has none (0: all 55,000)")
    ap.add_argument("--resolutions", default="64,128,256")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", default="0,1,2,4,8")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    shapes = args.data == "shapes"
    if torch.device(args.device).type == "cpu":
        keep_freed_memory()  # as `harness run` on a CPU
    print(f"CPU allocator: {allocator.state() or 'the C library defaults'}")
    print(f"{args.data}, batch {args.batch}, {args.batches} batches after one warm-up, "
          f"{os.cpu_count()} CPUs, to {args.device}; images/s by prefetch threads; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'res':>5} {'stream':<20} " + " ".join(f"{f'w={w}':>8}" for w in workers))

    def row(res: int, label: str, values: list[float], fmt: str = "{:>8.0f}") -> None:
        print(f"{res:>5} {label:<20} " + " ".join(fmt.format(v) for v in values), flush=True)

    with tempfile.TemporaryDirectory(prefix="harness-bench-data-") as tmp:
        for res in (int(r) for r in args.resolutions.split(",")):
            if not shapes:
                data = open_dataset(args.data, res).train
                row(res, "prepared", [measure(data, args.batch, w, args.batches, args.device) for w in workers])
                continue
            rates = {}
            if args.shapes in ("both", "rendered"):
                from harness.data.shapes import ShapesDataset

                rates["rendered"] = [measure(ShapesDataset(res, "train"), args.batch, w, args.batches, args.device)
                                     for w in workers]
                row(res, "rendered", rates["rendered"])
            if args.shapes in ("both", "prepared"):
                t0 = time.perf_counter()
                data, note = prepared_shapes(res, args.prepared_images, Path(tmp))
                made = time.perf_counter() - t0
                rates["prepared"] = [measure(data, args.batch, w, args.batches, args.device) for w in workers]
                row(res, "prepared", rates["prepared"])
                if len(rates) == 2:
                    row(res, "prepared/rendered", [p / r for p, r in zip(rates["prepared"], rates["rendered"])],
                        "{:>7.1f}x")
                row(res, "prepared, uint8 only",
                    [measure(data, args.batch, w, args.batches, args.device, normalise=False) for w in workers])
                read, norm = batch_costs(data, args.batch, args.device)
                print(f"{'':>5} prepared from {note} (made in {made:.0f} s); a batch: images() {read:.1f} ms, "
                      f"uint8_to_signed {norm:.1f} ms", flush=True)
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
