"""Throughput of one DWT level on (64, 3, 256, 256) float32: this package, pywt and, when
importable, ptwt and pytorch_wavelets, on the CPU and (if present) the GPU.

    python benchmarks/wavelets.py [--batch 64] [--size 256] [--repeats 5] [--compile]
                                  [--refs DIR] [--device cpu|cuda|all]

Columns: images/s; GB/s = (input read + output written) / time, the bytes an ideal memory-bound
kernel moves; on the GPU the percentage of the theoretical memory bandwidth (memory clock x bus
width x 2, from the device properties; a measured device-to-device copy when the driver does not
report them). `err` is the largest difference from pywt.dwt2 on a float64 input, where the
implementation computes in float64. `--refs DIR` prepends DIR to sys.path for the reference
packages only (e.g. `pip install --no-deps --target DIR ptwt pytorch_wavelets "setuptools<70"`).
`--compile` adds torch.compile'd rows on the CPU too (on the GPU they are always tried): the
first call compiles, which can take a minute on a CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from methods.wavelets import dwt2, idwt2  # noqa: E402


@dataclass
class Row:
    impl: str
    mode: str
    device: str
    seconds: float | None  # per batch
    err: float | None = None
    note: str = ""


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_bandwidth(device: torch.device) -> tuple[float, str]:
    """Bytes/s: theoretical from the device properties, else a measured large copy."""
    props = torch.cuda.get_device_properties(device)
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8, "theoretical"
    a = torch.empty(512 * 2**20, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    seconds = timed(lambda: b.copy_(a), device, 10)
    return 2 * a.numel() / seconds, "measured copy"


def pywt_error(fn: Callable[[torch.Tensor], torch.Tensor], mode: str) -> float | None:
    """max |fn(x) - pywt TL| on a float64 input; None if fn does not keep float64."""
    import pywt  # here, not at the top: the GPU machine has it only once the wheels are staged
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = pywt.dwt2(x.numpy(), "bior2.2", mode=mode, axes=(-2, -1))[0]
    out = fn(x)
    if out.dtype != torch.float64:
        return None
    if mode == "zero" and out.shape[-1] != ref.shape[-1]:  # ours: the centre crop of pywt's
        k = (ref.shape[-1] - out.shape[-1]) // 2
        ref = ref[..., k:k + out.shape[-2], k:k + out.shape[-1]]
    return float(np.abs(out.cpu().numpy() - ref).max())


def our_rows(x: torch.Tensor, device: torch.device, repeats: int, compile_: bool) -> list[Row]:
    rows = []
    for mode in ("periodization", "zero"):
        err = pywt_error(lambda t: dwt2(t.to(device), mode=mode)[0], mode)
        rows.append(Row("dwt2 (this, eager)", mode, device.type, timed(lambda: dwt2(x, mode=mode), device, repeats), err))
    bands = dwt2(x)
    rows.append(Row("idwt2 (this, eager)", "periodization", device.type,
                    timed(lambda: idwt2(*bands), device, repeats)))
    if compile_:
        try:
            fn = torch.compile(lambda t: dwt2(t), dynamic=False)
            rows.append(Row("dwt2 (this, compiled)", "periodization", device.type, timed(lambda: fn(x), device, repeats)))
        except Exception as e:  # compilation needs a working toolchain: report, don't fail the table
            rows.append(Row("dwt2 (this, compiled)", "periodization", device.type, None,
                            note=f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:60]}"))
    return rows


def reference_rows(x: torch.Tensor, device: torch.device, repeats: int) -> list[Row]:
    rows = []
    try:
        import ptwt
    except ImportError as e:
        rows.append(Row("ptwt.wavedec2 (level 1)", "zero", device.type, None, note=f"skipped: {e}"))
    else:  # ptwt has no periodization; its zero mode keeps pywt's N/2 + 2 coefficients
        rows.append(Row("ptwt.wavedec2 (level 1)", "zero", device.type,
                        timed(lambda: ptwt.wavedec2(x, "bior2.2", mode="zero", level=1), device, repeats),
                        pywt_error(lambda t: ptwt.wavedec2(t.to(device), "bior2.2", mode="zero", level=1)[0], "zero")))
    try:
        from pytorch_wavelets import DWTForward
    except ImportError as e:
        rows.append(Row("pytorch_wavelets.DWTForward", "periodization", device.type, None, note=f"skipped: {e}"))
    else:
        dwt = DWTForward(J=1, wave="bior2.2", mode="periodization").to(device)
        err = pywt_error(lambda t: dwt.double()(t.to(device))[0], "periodization")
        dwt.float()
        rows.append(Row("pytorch_wavelets.DWTForward", "periodization", device.type,
                        timed(lambda: dwt(x), device, repeats), err))
    return rows


def pywt_row(x: torch.Tensor, repeats: int) -> Row:
    import pywt
    xn = x.numpy()
    seconds = timed(lambda: pywt.dwt2(xn, "bior2.2", mode="periodization", axes=(-2, -1)), torch.device("cpu"),
                    repeats)
    return Row("pywt.dwt2", "periodization", "cpu", seconds, note="the reference; single-threaded")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    p.add_argument("--compile", action="store_true", help="also time torch.compile on the CPU")
    p.add_argument("--refs", action="append", default=[], help="folder with ptwt / pytorch_wavelets")
    args = p.parse_args()
    sys.path[:0] = args.refs

    devices = []
    if args.device in ("cpu", "all"):
        devices.append(torch.device("cpu"))
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    cpu_x = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    nbytes = 2 * cpu_x.numel() * cpu_x.element_size()  # read the input, write four quarter-size bands

    rows: list[Row] = []
    peaks: dict[str, tuple[float, str]] = {}
    for device in devices:
        x = cpu_x.to(device)
        if device.type == "cuda":
            peaks["cuda"] = peak_bandwidth(device)
        rows += our_rows(x, device, args.repeats, compile_=args.compile or device.type == "cuda")
        if device.type == "cpu":
            rows.append(pywt_row(cpu_x, max(1, args.repeats // 2)))
        rows += reference_rows(x, device, args.repeats)

    print(f"one DWT level, bior2.2, ({args.batch}, 3, {args.size}, {args.size}) float32; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads" +
          (f", {torch.cuda.get_device_name()}" if "cuda" in peaks else ", no GPU"))
    for name, (bw, how) in peaks.items():
        print(f"{name} peak memory bandwidth {bw / 1e9:.0f} GB/s ({how})")
    header = f"{'implementation':30s} {'mode':13s} {'device':6s} {'ms/batch':>9s} {'images/s':>9s} {'GB/s':>7s} " \
             f"{'% peak':>7s} {'err vs pywt':>11s}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.seconds is None:
            print(f"{r.impl:30s} {r.mode:13s} {r.device:6s} {'-':>9s} {'-':>9s} {'-':>7s} {'-':>7s} {'-':>11s}  {r.note}")
            continue
        gbs = nbytes / r.seconds / 1e9
        peak = f"{100 * gbs * 1e9 / peaks[r.device][0]:.1f}" if r.device in peaks else "-"
        err = "-" if r.err is None else f"{r.err:.1e}"
        print(f"{r.impl:30s} {r.mode:13s} {r.device:6s} {1e3 * r.seconds:9.1f} {args.batch / r.seconds:9.1f} "
              f"{gbs:7.2f} {peak:>7s} {err:>11s}  {r.note}")


if __name__ == "__main__":
    main()
