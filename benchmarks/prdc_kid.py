"""KID and PRDC time and memory on random 2048-d features: the harness's (float64, row chunks, on
--device) against the `prdc` package (three full sklearn distance matrices, CPU) and clean-fid's
`kernel_distance` (numpy, CPU).

    python -m benchmarks.prdc_kid --device cuda --sizes 10000,50000
    python -m benchmarks.prdc_kid --device cpu --sizes 10000,50000 --measure-max 10000   # 50k PRDC extrapolated

Prints a markdown table. N = M = size. Peak memory is what the step adds on top of the features:
torch's allocator peak on CUDA, the process's resident set sampled every 10 ms on CPU (Linux).
PRDC costs 3 N^2 D multiply-adds (three distance matrices), so sizes above --measure-max get a row
extrapolated from the largest measured size by (N / N0)^2, labelled as such. KID's cost does not
depend on N (100 subsets of 1000 a side).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import threading
import time
import warnings

import numpy as np
import torch
from cleanfid.fid import kernel_distance

from harness.metrics.kid import kid
from harness.metrics.prdc import DC_K, PR_K, prdc


def random_features(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float64 non-negative features (pool3 is a mean of ReLUs); each seed 1% wider than the
    last, which keeps 2048-d PRDC away from 0 and 1 (precision ~0.2, recall ~0.55 at seeds 0, 1)."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(0.0, 1.0 + 0.01 * seed, size=(n, d)))


class PeakMemory:
    """Peak bytes added during the `with` block: torch's CUDA allocator on a GPU, else the resident
    set from /proc/self/statm, sampled every 10 ms (None where neither is readable)."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, None

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        self.base = self._rss()
        self.top, self.stop = self.base, threading.Event()

        def sample():
            while not self.stop.wait(0.01):
                self.top = max(self.top, self._rss() or 0)

        self.thread = threading.Thread(target=sample, daemon=True)
        if self.base is not None:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        elif self.base is not None:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.top, self._rss() or 0) - self.base


def timed(where: torch.device, fn, *args, **kwargs):
    """fn(*args, **kwargs), its seconds and the peak memory it added on `where`."""
    with PeakMemory(where) as mem:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if where.type == "cuda":
            torch.cuda.synchronize(where)
        seconds = time.perf_counter() - t0
    return out, seconds, mem.peak


def package_prdc(real: np.ndarray, fake: np.ndarray) -> dict:
    """One call of the package, at k = DC_K (it takes one k for all four; the harness gets both of
    its k's from the same distances)."""
    from prdc import compute_prdc

    return compute_prdc(real, fake, DC_K)


def package_bytes(n: int) -> int:
    """The package's peak: an (n, n) float64 distance matrix and argpartition's (n, n) int64 indices."""
    return 16 * n * n


def gib(b) -> str:
    return "n/a" if b is None else f"{b / 2**20:.0f} MiB" if b < 2**30 else f"{b / 2**30:.1f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="10000,50000", help="comma-separated N (= M)")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--chunk-size", type=int, default=1024)
    ap.add_argument("--measure-max", type=int, default=None,
                    help="extrapolate PRDC above this N instead of measuring it (default: measure all)")
    ap.add_argument("--package-max", type=int, default=10_000, help="run the prdc package up to this N (CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--skip-reference", action="store_true", help="skip the prdc package and clean-fid")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rows = []  # (metric, implementation, device, N, seconds text, memory text, note)
    measured_prdc = None  # (N, seconds) of the largest measured PRDC
    kid(np.ones((4, 8)), np.ones((4, 8)), subsets=1, device=device)  # first-call initialisation (BLAS, CUDA)

    for n in sizes:
        real, fake = random_features(n, args.dim, 0), random_features(n, args.dim, 1)
        (kid_mean, _), t, mem = timed(device, kid, real, fake, device=device)
        rows.append(("KID", "harness (float64)", device.type, n, f"{t:.1f}", gib(mem),
                     "subsets of min(N, 1000): flat above 1000"))
        if not args.skip_reference and n <= args.package_max:
            np.random.seed(0)
            ref, t_ref, mem_ref = timed(torch.device("cpu"), kernel_distance, real, fake)
            rows.append(("KID", "clean-fid kernel_distance", "cpu", n, f"{t_ref:.1f}", gib(mem_ref),
                         f"{t_ref / t:.2f}x the harness's time; same subsets, agree to {abs(ref - kid_mean):.1e}"))

        fits = package_bytes(n) < memory / 2
        run_package = not args.skip_reference and n <= args.package_max and fits
        if args.measure_max is None or n <= args.measure_max:
            ours, t, mem = timed(device, prdc, real, fake, device=device, chunk_size=args.chunk_size)
            measured_prdc = (n, t)
            rows.append(("PRDC", f"harness (float64, chunks of {args.chunk_size})", device.type, n, f"{t:.1f}",
                         gib(mem), ""))
            if run_package:
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # its "Num real: ..."
                    warnings.simplefilter("ignore")
                    ref, t_ref, mem_ref = timed(torch.device("cpu"), package_prdc, real, fake)
                diff = max(abs(ours[k] - float(ref[k])) for k in ("density", "coverage"))
                rows.append(("PRDC", f"prdc package, one call, k = {DC_K}", "cpu", n, f"{t_ref:.1f}", gib(mem_ref),
                             f"{t_ref / t:.2f}x the harness's time; density, coverage agree to {diff:.1e}"))
        elif measured_prdc is not None:
            n0, t0 = measured_prdc
            estimate = t0 * (n / n0) ** 2
            seconds = f"~{estimate:.0f}" if estimate >= 10 else f"~{estimate:.1f}"
            rows.append(("PRDC", f"harness (float64, chunks of {args.chunk_size})", device.type, n,
                         f"{seconds} (extrapolated)", "-",
                         f"NOT MEASURED: {t0:.1f} s at N={n0} x ({n}/{n0})^2"))
        if not args.skip_reference and not run_package:
            why = (f"needs ~16 N^2 bytes, this machine has {gib(memory)}" if not fits
                   else f"above --package-max {args.package_max}")
            rows.append(("PRDC", f"prdc package, one call, k = {DC_K}", "cpu", n, "not run",
                         f"~{gib(package_bytes(n))}", why))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"\nKID (100 subsets of 1000) and PRDC (k = {PR_K} / {DC_K}), {args.dim}-d random features, N = M, "
          f"{name}, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}\n")
    print("| metric | implementation | device | N = M | seconds | peak memory added | note |")
    print("|---|---|---|---:|---:|---:|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    main()
