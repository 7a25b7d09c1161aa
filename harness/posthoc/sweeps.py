"""Evaluations of a finished run, appended to its metrics.jsonl: FID/IS against truncation
(`harness eval --truncation`, NSBGAN Fig. 3), the official sampler code's confidence filter, and an
external image source through the run's decoders (`--latents-from`, Fig. 3's approximation)."""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import torch

from harness.errors import DataError, MetricError
from harness.metrics.fid import FeatureAccumulator
from harness.metrics.scorer import ImageScorer
from harness.posthoc.confidence import DRAW_BATCH, OfficialConfidenceFilter
from harness.posthoc.restore import RestoredRun, sample_run
from harness.posthoc.sources import open_source


def confident_chunks(chunks: Iterable[torch.Tensor], scorer: ImageScorer, threshold: float, n: int,
                     max_draws: int) -> Iterator[torch.Tensor]:
    """The official NSBGAN sampler code's rejection (not in the paper): keep only the samples whose
    Inception top-1 probability exceeds `threshold`, until `n` are kept or `max_draws` were drawn
    (then a MetricError). Needs weights with the 1008-way logits."""
    if not scorer.backbone.has_logits or scorer.backbone.is_standin:
        raise MetricError(f"--min-confidence needs Inception weights with class logits (the NVlabs TorchScript, "
                          f"--inception PATH); {scorer.backbone.name} has none")
    kept = drawn = 0
    for chunk in chunks:
        drawn += len(chunk)
        acc = FeatureAccumulator(scorer.backbone, scorer.device, scorer.batch_size, mode=scorer.mode)
        acc.add(chunk)
        good = torch.from_numpy(acc.probabilities().max(axis=1) > threshold)
        take = chunk[good][: n - kept]
        kept += len(take)
        if len(take):
            yield take
        if kept >= n:
            return
        if drawn >= max_draws:
            raise MetricError(f"--min-confidence {threshold}: only {kept} of {drawn} samples passed; "
                              f"lower the threshold or draw more")


def truncation_sweep(restored: RestoredRun, scorer: ImageScorer, truncations: list[float], n: int,
                     seed: int = 0, log=print, min_confidence: float | None = None,
                     official_filter: OfficialConfidenceFilter | None = None) -> list[dict]:
    """FID/IS against the training split at each truncation level; each result is appended to the
    run's metrics.jsonl as an `eval` line with stage `truncation`, which says in `sample_filter`
    whether and how its samples were filtered: not at all (the paper), by `min_confidence` on the
    FID Inception's logits of the decoded sample (the harness's), or by `official_filter` (the
    official sampling script's, harness.posthoc.confidence)."""
    if n < 2:
        raise MetricError("--samples must be at least 2")
    if official_filter is not None and restored.method.sample_filtered is None:
        raise MetricError(f"method {restored.info.name} has no latent image for the official confidence filter")
    rows = []
    for t in truncations:
        if t <= 0:
            raise MetricError(f"truncation must be positive, got {t}")
        t0 = time.perf_counter()
        how = "none (as the paper)"
        if official_filter is not None:
            chunks = restored.method.sample_filtered(n, t, seed * 1_000_003 + 11, official_filter.keep, DRAW_BATCH,
                                                     50 * n)
            how = official_filter.describe()
        else:
            chunks = sample_run(restored, n if min_confidence is None else 50 * n, t, seed * 1_000_003 + 11)
        if min_confidence is not None:
            chunks = confident_chunks(chunks, scorer, min_confidence, n, 50 * n)
            how = (f"the harness's: the FID Inception's top-1 probability of the decoded sample > {min_confidence} "
                   f"(an approximation of the official sampling script's filter; not in the paper)")
        with torch.no_grad():
            fake = scorer.features(chunks, total=n, label=f"truncation {t}: sampling + features")
        metrics = scorer.score(fake, reference=restored.data.train)
        notes = scorer.missing(n)
        row = {"kind": "eval", "stage": "truncation", "truncation": t, "checkpoints": restored.checkpoints,
               "stage_steps": restored.steps, "step": sum(restored.steps.values()), "final": False,
               "eval_s": time.perf_counter() - t0, "time": time.time(), **metrics, "sample_filter": how}
        if min_confidence is not None:
            row["min_confidence"] = min_confidence
        if notes:
            row["notes"] = notes
        restored.run.metrics.append(row)
        rows.append(row)
        log(f"truncation {t:g}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    restored.run.update(fid=scorer.provenance())
    return rows


def latents_from(restored, source: str, scorer: ImageScorer, n: int, log=print) -> dict:
    """Fig. 3's approximation with an external generator (the paper encodes a pretrained BigGAN's
    samples): images of `source` (npz, folder, dataset spec, run directory) go through the run's
    deterministic encoder and its trained decoders, and the reconstructions are scored against the
    run's training split. The line is appended to metrics.jsonl with stage `latents-from`."""
    if restored.method.reconstruct is None:
        raise DataError(f"method {restored.info.name} has no encoder and decoders to pass images through")
    side = restored.cfg.resolution
    src = open_source(source, resolution=side, split="train", device=restored.device)
    if src.resolution is not None and src.resolution != side:
        raise DataError(f"{source} holds {src.resolution}x{src.resolution} images; the run's decoders take {side}x{side}")
    t0 = time.perf_counter()
    count = min(n, src.count) if src.count is not None else n

    def reconstructions() -> Iterator[torch.Tensor]:
        for batch in src.batches(count):
            if tuple(batch.shape[-2:]) != (side, side):
                raise DataError(f"{source}: an image of {tuple(batch.shape[-2:])}, the run's decoders take {side}x{side}")
            yield restored.method.reconstruct(batch)

    with torch.no_grad():
        fake = scorer.features(reconstructions(), total=count, label=f"reconstructions of {src.label}")
    metrics = scorer.score(fake, reference=restored.data.train)
    row = {"kind": "eval", "stage": "latents-from", "latents_from": src.label, "checkpoints": restored.checkpoints,
           "stage_steps": restored.steps, "step": sum(restored.steps.values()), "final": False,
           "eval_s": time.perf_counter() - t0, "time": time.time(), **metrics,
           "notes": ["images of an external source encoded and decoded by this run (Fig. 3's approximation "
                     "of a converged sampler), not samples of the run's own sampler"]}
    row["notes"] += scorer.missing(fake.count)
    restored.run.metrics.append(row)
    restored.run.update(fid=scorer.provenance())
    log(f"latents from {src.label}: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float)))
    return row
