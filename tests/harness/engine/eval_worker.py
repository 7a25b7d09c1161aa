"""Run by test_distributed.py: one evaluation (generator_metrics with an extra reference) with the
stand-in network, as one plain process or under `torchrun --nproc-per-node 2` (gloo, CPU):

    eval_worker.py FOLDER [fail|failkeep]   each rank saves what it got to FOLDER/rank<k>.pt; `fail`:
                                            rank 1's draws raise a MetricError, `failkeep`: rank 0 cannot
                                            write the kept samples; either must stop both ranks
"""
import sys
from pathlib import Path

import numpy as np
import torch

from harness.data.shapes import ShapesDataset
from harness.engine import distributed
from harness.errors import HarnessError, MetricError
from harness.method import EvalContext
from harness.metrics.inception import standin_backbone
from harness.metrics.scorer import ImageScorer, generator_metrics

SAMPLES, CHUNK = 110, 40  # three chunks of 40, 40 and 30: rank 0 draws chunks 0 and 2, rank 1 chunk 1


def sample(n: int, truncation: float = 1.0, seed: int = 0) -> torch.Tensor:
    """(n, 3, 32, 32) uint8 images that depend on `seed` only."""
    images = ShapesDataset(32, "val").images(np.arange(seed % 997, seed % 997 + n) % 5000)[0]
    noise = torch.randint(0, 16, images.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return images // 2 + noise


def main(folder: str, fail: str = "") -> None:
    d = distributed.from_env()
    distributed.init(d, torch.device("cpu"))
    folder = Path(folder)
    scorer = ImageScorer(standin_backbone(torch.device("cpu")), cache_dir=folder / "cache", metrics="fid,kid,prdc,ci",
                         resamples=20, chunk=CHUNK)
    scorer.group = distributed.EvalGroup(d)
    data = ShapesDataset(32, "val")
    draw = sample
    if fail == "fail" and d.rank == 1:
        def draw(n, truncation=1.0, seed=0):
            raise MetricError("this rank cannot sample")
    ctx = EvalContext(device=torch.device("cpu"), seed=3, data=data, val=data, run_dir=folder, stage="gan", step=1,
                      final=True, eval_samples=SAMPLES, scorer=scorer, save_grid=lambda images, name: folder,
                      samples_path=folder / ("missing/kept.npz" if fail == "failkeep" else "kept.npz"), samples_limit=None)
    recon = scorer.sampled_features(lambda k: sample(30, seed=100 + k), [30, 30], "a second reference")
    if recon is not None:
        recon.label = "given"
    try:
        metrics = generator_metrics(ctx, draw, extra={"fid_star": recon})
        torch.save({"metrics": metrics, "notes": ctx.notes, "recon_none": recon is None}, folder / f"rank{d.rank}.pt")
    except HarnessError as e:
        torch.save({"error": str(e), "kind": type(e).__name__}, folder / f"rank{d.rank}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], fail=sys.argv[2] if len(sys.argv) > 2 else "")
