"""samples/ of a run directory: PNG grids of each evaluation, a grid of real training images
(`samples/real.png`, written when the run is created), and the final evaluation's samples, kept as
`samples/<stage>-final.npz` for metrics re-use.

The file holds `images`, (N, H, W, 3) uint8: the layout of `npz:PATH` datasets, of clean-fid's and
pytorch-fid's sample files, and of what `harness fid RUN_DIR ...` reads back. Samples stream
through: each chunk is appended to a raw temporary file while the scorer consumes it, and the npz
(uncompressed zip64, as `np.savez` writes) is assembled once the last chunk has passed, then
renamed into place, so 50k samples never sit in memory and a crash leaves no half file.
"""
from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from harness.rundir.atomic import atomic_path


REAL_GRID = "real"  # samples/real.png: training images in the layout of the sample grids, written at creation


def final_samples_path(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / "samples" / f"{stage}-final.npz"


def _write_npz(raw: Path, shape: tuple[int, ...], out: Path) -> None:
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("images.npy", "w", force_zip64=True) as f, open(raw, "rb") as src:
            np.lib.format.write_array_header_2_0(f, header)
            for block in iter(lambda: src.read(1 << 24), b""):
                f.write(block)


class SampleKeeper:
    """Keeps the first `limit` images (all if None) of the chunks given to `add`, in order, in `path`
    once `close` is called; `discard` (or a keeper never closed) writes nothing."""

    def __init__(self, path: Path, limit: int | None = None):
        self.path, self.limit = Path(path), limit
        self.raw = self.path.with_name(f".{self.path.name}.raw{os.getpid()}")
        self.kept, self.hw, self.file = 0, None, None

    def wants(self, start: int) -> bool:
        """Whether images from position `start` of the stream on are kept."""
        return self.limit is None or start < self.limit

    def add(self, chunk: torch.Tensor) -> None:
        """chunk: (k, 3, H, W) uint8, the next k images of the stream."""
        take = len(chunk) if self.limit is None else max(0, min(len(chunk), self.limit - self.kept))
        if not take:
            return
        x = chunk[:take].detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        if self.hw is not None and x.shape[1:] != self.hw:
            raise ValueError(f"sample chunks change size: {self.hw} then {x.shape[1:]}")
        self.hw = x.shape[1:]
        if self.file is None:
            self.file = open(self.raw, "wb")
        self.file.write(x.tobytes())
        self.kept += take

    def close(self) -> None:
        try:
            if self.file is not None:
                self.file.close()
                _write_npz(self.raw, (self.kept, *self.hw), self.path)
        finally:
            self.discard()

    def discard(self) -> None:
        if self.file is not None and not self.file.closed:
            self.file.close()
        self.raw.unlink(missing_ok=True)


def tee_npz(chunks: Iterable[torch.Tensor], path: Path, limit: int | None = None) -> Iterator[torch.Tensor]:
    """Yield `chunks` ((k, 3, H, W) uint8) unchanged and keep the first `limit` images (all if None)
    in `path` once the stream is exhausted. A stream abandoned early writes nothing."""
    keeper = SampleKeeper(path, limit)
    try:
        for chunk in chunks:
            keeper.add(chunk)
            yield chunk
        keeper.close()
    finally:
        keeper.discard()


def save_grid(folder: Path, images: torch.Tensor, name: str, nrow: int | None = None) -> Path:
    """Save (N, 3, H, W) uint8 images (the first 64) as one PNG grid, `folder`/samples/`name`.png."""
    import torchvision.utils

    images = images[:64].detach().cpu()
    nrow = nrow or max(1, int(len(images) ** 0.5))
    path = Path(folder) / "samples" / f"{name}.png"
    grid = torchvision.utils.make_grid(images.float() / 255.0, nrow=nrow, padding=2)
    with atomic_path(path) as tmp:
        torchvision.utils.save_image(grid, tmp)
    return path
