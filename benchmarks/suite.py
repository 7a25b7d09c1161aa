"""Every benchmark in one call, one markdown table: benchmarks/results/<date>-<device>.md.

    python -m benchmarks.suite --device cuda                 # one GPU, about 8 minutes
    python -m benchmarks.suite --device cpu --quick          # this table's CPU form, under 5 minutes
    python -m benchmarks.suite --device cuda --biggan-reference ~/src/BigGAN-PyTorch

Rows: a training step of every registered method (GPU: its paper config and batch, halved until it
fits; `--quick`: tiny widths at 32-64 px, as `QUICK` lists), the batch stream from `shapes` to
normalised device tensors (64, 128, 256 px; rendered and prepared), FID end to end (resize, feature network, statistics,
Frechet distance; GPU: 10k and 50k samples, CPU: a few hundred), the Frechet distance of 2048-d
statistics (scipy sqrtm vs ours), one DWT level, the loop's overhead against a bare loop, and the
BigGAN reference comparison when `--biggan-reference` names a BigGAN-PyTorch checkout.

A benchmark that cannot run (a missing package on an unstaged GPU machine, no Inception weights,
an out-of-memory) gives a row saying why, never a number. Without the TF-Inception weights (not on
the GPU machine: see ../shared/gpu/README.md) FID rows time torchvision's Inception-v3 with random
weights: the same architecture and cost at 299x299, labelled so; their FID values mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"

# --quick: tiny configurations (CPU), chosen to take seconds per method; every method is built and stepped
QUICK = {
    "biggan": ("resolution=32", "ch=8", "batch_size=8", "accumulate=1", "attn=0"),
    "nsbgan": ("resolution=64", "levels=1", "width=8", "batch_sizes=[8]", "sampler.ch=8", "sampler.batch_size=8",
               "sampler.accumulate=1", "sampler.attn=0"),
    "nsbgan-pixel": ("resolution=64", "levels=1", "width=8", "batch_sizes=[8]", "sampler.ch=8",
                     "sampler.batch_size=8", "sampler.accumulate=1", "sampler.attn=0"),
}
QUICK_GAN = ("resolution=32", "width=4", "batch_size=16")  # dcgan, lsgan, wgan and their octave variants


@dataclasses.dataclass
class Row:
    benchmark: str
    setting: str
    result: str
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:140] if text else ''}"


# --- training steps ----------------------------------------------------------------------------
def _halved(cfg) -> list[str] | None:
    """Overrides that halve the config's batch, or None at a batch of one."""
    out = []
    for key, holder in (("batch_size", cfg), ("sampler.batch_size", getattr(cfg, "sampler", None))):
        value = getattr(holder, "batch_size", 0)
        if value > 1:
            out.append(f"{key}={value // 2}")
    if hasattr(cfg, "batch_sizes") and max(cfg.batch_sizes) > 1:
        out.append(f"batch_sizes={[max(1, b // 2) for b in cfg.batch_sizes]}")
    return out or None


def training_rows(device: torch.device, quick: bool, steps: int, warmup: int) -> list[Row]:
    from benchmarks.train import time_stage
    from harness.config import apply_overrides, parse_overrides
    from harness.data.shapes import ShapesDataset
    from harness.registry import all_methods

    rows = []
    for info in all_methods():
        overrides = list(QUICK.get(info.name, QUICK_GAN)) if quick else []
        for attempt in range(4):
            cfg = apply_overrides(info.config, parse_overrides(overrides), info.name)
            setting = f"{info.name} {' '.join(overrides) or 'paper config'}"
            method = None
            try:
                method = info.build(cfg)
                data = ShapesDataset(cfg.resolution, "val")
                for index, stage in enumerate(method.stages):
                    t, peak = time_stage(stage, index, data, device, steps, warmup)
                    mem = f", peak {peak / 2**30:.1f} GiB" if peak is not None else ""
                    rows.append(Row(f"train step: {info.name} / {stage.name}", f"{setting}; batch {stage.batch_size}",
                                    f"{t:.4f} s/step, {stage.batch_size / t:.1f} images/s{mem}",
                                    "batch halved to fit" if attempt else ""))
                break
            except torch.cuda.OutOfMemoryError:
                method = None  # its modules and optimiser states go before the retry
                torch.cuda.empty_cache()
                smaller = _halved(cfg)
                if smaller is None or attempt == 3:
                    rows.append(Row(f"train step: {info.name}", setting, "not measured", "out of memory"))
                    break
                overrides = [o for o in overrides if o.split("=")[0] not in {s.split("=")[0] for s in smaller}] + smaller
    return rows


# --- data --------------------------------------------------------------------------------------
def data_rows(device: torch.device, quick: bool) -> list[Row]:
    import tempfile

    from benchmarks.data import measure, prepared_shapes
    from harness.data.loader import default_workers
    from harness.data.shapes import ShapesDataset

    workers = default_workers(device)
    setting = f"batch 64, {workers} prefetch thread(s), to {device}"
    batches = 4 if quick else 12
    rows = []
    with tempfile.TemporaryDirectory(prefix="harness-suite-data-") as tmp:
        for res in (64, 128, 256):
            rendered = measure(ShapesDataset(res, "train"), 64, workers, batches, device)
            rows.append(Row(f"data stream: shapes {res}x{res}, rendered", setting, f"{rendered:.0f} images/s",
                            "rendered on the fly; uint8 batch -> normalised float on the device"))
            data, note = prepared_shapes(res, 2000 if quick else 5000, Path(tmp))
            prepared = measure(data, 64, workers, batches, device)
            rows.append(Row(f"data stream: shapes {res}x{res}, prepared", setting,
                            f"{prepared:.0f} images/s ({prepared / rendered:.1f}x rendered)",
                            f"`harness prepare --data shapes` memmap ({note}); the same normalisation"))
    return rows


# --- FID -----------------------------------------------------------------------------------------
def _fid_backbone(device: torch.device):
    """The resolved TF-Inception, else torchvision's Inception-v3 with random weights (timing only)."""
    from harness.errors import MetricError
    from harness.metrics.backbone import Backbone
    from harness.metrics.networks import resolve_backbone

    try:
        return resolve_backbone(None, "inception", device), ""
    except MetricError:
        import torchvision

        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).to(device).eval()
        net.fc = torch.nn.Identity()  # pool3: (N, 2048)
        backbone = Backbone("torchvision Inception-v3, random weights", "timing proxy", None, None,
                            lambda x: net((x - 128) / 128), None)
        return backbone, "no TF-Inception weights here: torchvision Inception-v3 with random weights (same cost)"


def fid_rows(device: torch.device, quick: bool) -> list[Row]:
    from harness.data.shapes import ShapesDataset
    from harness.metrics.features import stats_from_features
    from harness.metrics.fid import FeatureAccumulator, frechet_distance

    backbone, note = _fid_backbone(device)
    sizes = (32,) if quick else ((200,) if device.type == "cpu" else (10_000, 50_000))
    base = ShapesDataset(128).images(np.arange(1000 if device.type == "cuda" else max(sizes)))[0]
    rows = []
    with torch.no_grad():
        FeatureAccumulator(backbone, device, 250, want_probs=False).add(base[:8])  # warm-up (cuDNN)
        for n in sizes:
            _sync(device)
            t0 = time.perf_counter()
            acc = FeatureAccumulator(backbone, device, 250)
            for start in range(0, n, 1000):  # the 1000 rendered images, repeated: the pipeline's cost, not the data's
                acc.add(base[: min(1000, n - start)])
            t_feat = time.perf_counter() - t0
            feats = acc.features()
            half = len(feats) // 2
            t1 = time.perf_counter()
            frechet_distance(*stats_from_features(feats[:half]), *stats_from_features(feats[half:]), device)
            t_fd = time.perf_counter() - t1
            rows.append(Row(f"FID end to end: {n} samples", f"128x128 uint8 -> clean resize -> {backbone.name}, {device}",
                            f"{t_feat + t_fd:.1f} s ({n / t_feat:.0f} images/s features, {t_fd:.2f} s statistics + "
                            f"distance)", note))
    return rows


def frechet_rows(device: torch.device, quick: bool) -> list[Row]:
    from benchmarks.fid import frechet_timings

    rows = []
    repeats = 3  # best of 3, the two alternating: the first call of either pays its warm-up
    r = frechet_timings(2048, 4096, "cpu", scipy_too=True, repeats=repeats)
    rows.append(Row("Frechet distance, d=2048", f"cpu, {torch.get_num_threads()} threads, best of {repeats}",
                    f"scipy sqrtm {r['scipy_s']:.2f} s, ours {r['ours_s']:.2f} s: {r['ratio']:.1f}x",
                    f"relative difference {r['rel_diff']:.1e}"))
    if device.type == "cuda":
        g = frechet_timings(2048, 4096, device, scipy_too=False, repeats=repeats)
        rows.append(Row("Frechet distance, d=2048", str(device), f"ours {g['ours_s']:.3f} s: "
                        f"{r['scipy_s'] / g['ours_s']:.0f}x scipy on this machine's CPU",
                        f"|ours(cuda) - ours(cpu)| / FID = {abs(g['ours'] - r['ours']) / abs(r['ours']):.1e}"))
    return rows


# --- DWT, loop overhead, BigGAN reference ------------------------------------------------------------
def dwt_rows(device: torch.device, quick: bool) -> list[Row]:
    from benchmarks.wavelets import timed
    from methods.wavelets import dwt2

    batch = 8 if quick else 64
    x = torch.rand(batch, 3, 256, 256, device=device)
    rows = []
    for mode in ("periodization", "zero"):
        t = timed(lambda: dwt2(x, mode=mode), device, 3 if quick else 10)
        rows.append(Row(f"DWT: dwt2 bior2.2 {mode}", f"({batch}, 3, 256, 256) float32, {device}",
                        f"{t * 1e3:.2f} ms, {batch / t:.0f} images/s"))
    return rows


def loop_rows(device: torch.device, quick: bool) -> list[Row]:
    from benchmarks.loop_overhead import DEFAULT_SET, measure

    overrides, steps, warmup, rounds = (DEFAULT_SET, 40, 5, 7) if quick else (DEFAULT_SET, 200, 20, 5)
    threads = torch.get_num_threads()
    if device.type == "cpu":  # one thread: on a shared CPU, a busy core stalls every OpenMP step of two
        torch.set_num_threads(1)
    try:
        r = measure("dcgan", overrides, steps=steps, warmup=warmup, rounds=rounds, device=str(device),
                    progress=False, log=lambda msg: None)
    finally:
        torch.set_num_threads(threads)
    syncs = "not measured (CPU)" if r["syncs_per_step"] is None else f"{r['syncs_per_step']:.3f}"
    where = f"{device}, 1 thread" if device.type == "cpu" else str(device)
    return [Row("loop overhead: harness run vs bare loop", f"dcgan {' '.join(overrides)}, batch {r['batch']}, "
                f"prepared data, {where}",
                f"{r['ratio']:.3f}x ({r['harness_steps_per_s']:.1f} vs {r['bare_steps_per_s']:.1f} steps/s)",
                f"median of {rounds} interleaved rounds; host-device syncs per step: {syncs}")]


def biggan_reference_rows(device: torch.device, source: Path, quick: bool) -> list[Row]:
    import contextlib
    import io

    from benchmarks import biggan_reference

    args = ["--reference-src", str(source), "--device", device.type]
    args += ["--resolution", "32", "--ch", "8", "--attn", "0", "--batch", "4", "--steps", "2"] if quick else \
        ["--resolution", "128", "--ch", "96", "--batch", "64", "--steps", "5"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            biggan_reference.main(args)
    except SystemExit as e:  # its one-line errors (no checkout there, an unsupported config)
        raise RuntimeError(f"benchmarks.biggan_reference exited {e.code}") from None
    last = out.getvalue().strip().splitlines()
    return [Row("BigGAN: ours vs official BigGAN-PyTorch", " ".join(args[2:]), last[-1],
                " / ".join(line for line in last if line.startswith("| ours") or line.startswith("| official")))]


# --- the table -----------------------------------------------------------------------------------
def environment(device: torch.device) -> list[str]:
    lines = [f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- torch {torch.__version__}, CUDA {torch.version.cuda or '-'}, cuDNN "
             f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else '-'}, "
             f"Python {platform.python_version()}, numpy {np.__version__}",
             f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{torch.get_num_threads()} torch threads, load average at start {os.getloadavg()[0]:.2f}"]
    from harness.engine import allocator

    lines.append(f"- CPU allocator: {allocator.state() or 'the C library defaults'}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"- device: {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
                     f"driver CUDA {torch.version.cuda}")
    else:
        lines.append("- device: cpu (no GPU: every GPU figure is not measured)")
    return lines


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny configurations (the CPU form: under 5 minutes)")
    ap.add_argument("--biggan-reference", type=Path, default=None, help="a BigGAN-PyTorch checkout to compare with")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of the markdown table")
    ap.add_argument("--only", default=None, help="comma-separated sections: train,data,fid,frechet,dwt,loop,biggan")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.exit(2, "error: --device cuda: no CUDA device here\n")
    device = torch.device(args.device)
    quick = args.quick
    sections = {
        "train": lambda: training_rows(device, quick, steps=2 if quick else 3, warmup=1),
        "data": lambda: data_rows(device, quick),
        "fid": lambda: fid_rows(device, quick),
        "frechet": lambda: frechet_rows(device, quick),
        "dwt": lambda: dwt_rows(device, quick),
        "loop": lambda: loop_rows(device, quick),
    }
    if args.biggan_reference is not None:
        sections["biggan"] = lambda: biggan_reference_rows(device, args.biggan_reference, quick)
    chosen = args.only.split(",") if args.only else list(sections)
    if device.type == "cpu":
        from harness.engine.allocator import keep_freed_memory

        keep_freed_memory()  # every row runs as `harness run` does on a CPU (harness.allocator)
    head = environment(device)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in chosen:
        t0 = time.perf_counter()
        try:
            rows += sections[name]()
        except (ImportError, RuntimeError, OSError, ValueError) as e:  # a row that says why, never a number
            rows.append(Row(name, "-", "not measured", _short(e)))
            traceback.print_exc()
        print(f"[suite] {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    wall = time.perf_counter() - started
    tag = "cpu" if device.type == "cpu" else "cuda-" + torch.cuda.get_device_name(device).lower().replace(" ", "-")
    path = args.out / f"{datetime.date.today():%Y-%m-%d}-{tag}{'-quick' if quick else ''}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    table = ["| benchmark | setting | result | note |", "|---|---|---|---|"]
    table += [f"| {r.benchmark} | {r.setting} | {r.result} | {r.note} |" for r in rows]
    command = "python -m benchmarks.suite " + " ".join(argv if argv is not None else sys.argv[1:])
    text = [f"# Benchmark suite: {tag}{' (quick)' if quick else ''}", "", f"`{command}`", "", *head,
            f"- suite wall time: {wall:.0f} s, load average at the end {os.getloadavg()[0]:.2f}", "", *table, ""]
    path.write_text("\n".join(text))
    print("\n".join(text))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
