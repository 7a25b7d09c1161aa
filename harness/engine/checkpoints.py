"""Checkpoints of stages: what the loop saves and resumes from (`Checkpoints`), and stages loaded
with their trained weights (`TrainedStages`), the one way anything outside the training loop (the
whole-pipeline evaluation, `harness eval`, `harness fid RUN_DIR`, a stage that needs another
stage's weights) gets a trained stage out of a run directory."""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any, Callable

import torch

from harness.config import to_jsonable
from harness.rundir import records
from harness.engine.distributed import all_gather_object, broadcast_object
from harness.engine.energy import cluster_energy
from harness.engine.stage_run import StageProgress
from harness.errors import CheckpointError, HarnessError
from harness.method import Method, Stage, StageContext
from harness.registry import recorded_method
from harness.rundir.checkpoint_files import LoadedCheckpoint
from harness.rundir.rundir import RunDir
from harness.rundir.schema import NONE, NUMBER, Obj, problem
from harness.engine.seeding import rank_seed, rng_state, seed_everything, set_rng_state, stage_seed

if TYPE_CHECKING:
    from harness.data import DataSplits
    from harness.engine.distributed import Dist
    from harness.engine.energy import EnergyMeter
    from harness.engine.stage_run import StageRun

# what Checkpoints.save writes, as checked before a checkpoint is used; `config` is absent from
# checkpoints written before they carried it, `rng_ranks` and `energy_ranks` from single-process ones
REQUIRED = ("stage", "stage_state", "stream", "clock", "progress", "energy", "rng")
_PROGRESS = Obj(step=int, wall_s=NUMBER, last_eval=Obj(seconds=NUMBER, epochs=NUMBER, steps=NUMBER),
                last_checkpoint=Obj(seconds=NUMBER, epochs=NUMBER, steps=NUMBER), best=(NUMBER, NONE), evals=int,
                images=int, last_step_s=NUMBER)
_STATE = Obj(stage=str, stage_state=dict, stream=Obj(epoch=int, pos=int), clock=Obj(elapsed=NUMBER),
             progress=_PROGRESS, energy=dict, rng=Obj(python=tuple), config=dict)


def _one_line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:400]


def checked(loaded: LoadedCheckpoint, stage: str, manifest: dict) -> LoadedCheckpoint:
    """`loaded` if it holds what `Checkpoints.save` writes for `stage` and was trained with the
    config run.json records; otherwise a CheckpointError naming the file and what is wrong, before
    anything is built from it."""
    name, state = loaded.path.name, loaded.state
    for key in REQUIRED:
        if key not in state:
            raise CheckpointError(f"{loaded.path} lacks '{key}' (not a checkpoint this harness wrote, or edited); "
                                  f"it is not used")
    found = problem(state, _STATE, "checkpoint")
    if found is None and (extra := set(state["progress"]) - {f.name for f in dataclasses.fields(StageProgress)}):
        found = f"checkpoint.progress holds {', '.join(sorted(extra))}, which a stage's progress never does"
    if found is None and state["stage"] != stage:
        found = f"it holds stage {state['stage']!r}, not {stage!r}"
    if found:
        raise CheckpointError(f"{loaded.path}: {found}; it is not used")
    if state.get("config") is not None and manifest.get("config") is not None:
        changed = _config_changes(state["config"], manifest)
        if changed:
            raise CheckpointError(f"run.json's config differs from the one {name} was trained with in: "
                                  f"{'; '.join(changed)}; put run.json's value back (a run keeps its config), or "
                                  f"start a new run")
    return loaded


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    return {k: v for key, value in d.items() for k, v in _flat(value, f"{prefix}{key}.").items()}


def _config_changes(trained: dict, manifest: dict) -> list[str]:
    """`key (checkpoint's value in the checkpoint, run.json's in run.json)` for each key that differs,
    both read as today's config (keys an older harness wrote in today's names)."""
    _, now = recorded_method(manifest)
    try:
        _, then = recorded_method({**manifest, "config": trained}, "the checkpoint")
    except HarnessError as e:
        return [str(e)]
    a, b = _flat(to_jsonable(then)), _flat(to_jsonable(now))
    return [f"{k} ({json.dumps(a.get(k))} in the checkpoint, {json.dumps(b.get(k))} in run.json)"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def load_stage_state(stage: Stage, loaded: LoadedCheckpoint) -> None:
    """`stage.load_state_dict` of a checked checkpoint; weights that do not fit the stage built from
    run.json's config (a size edited, a key missing) are a CheckpointError, not a traceback."""
    try:
        stage.load_state_dict(loaded.state["stage_state"])
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{loaded.path.name} does not fit stage {stage.name} ({_one_line(e)}); was run.json's "
                              f"config or the checkpoint edited?") from None


class TrainedStages:
    """`trained(name)` -> the stage `name` of `method`, built (`init`, seeded with its stage
    seed) unless it already was in this process (`built`), and loaded from its `which`
    checkpoint of `run` (`last` falls back to `prev`; `best` falls back to `last` for a stage
    that never recorded a best). Each stage is loaded once per instance; `checkpoints` and
    `steps` say which file and step each came from."""

    def __init__(self, run: RunDir, method: Method, data: "DataSplits", device: torch.device, seed: int,
                 which: str = "last", built: set[str] | None = None):
        self.run, self.method, self.data, self.device, self.seed, self.which = run, method, data, device, seed, which
        self.built = built if built is not None else set()
        self.checkpoints: dict[str, str] = {}
        self.steps: dict[str, int] = {}

    def __call__(self, name: str) -> Stage:
        stage = self.method.stage(name)
        if name in self.steps:
            return stage
        loaded = self.run.checkpoints.load(name, self.which)
        if loaded is None and self.which == "best":
            loaded = self.run.checkpoints.load(name, "last")
        if loaded is None:
            raise CheckpointError(f"{self.run.path}: stage {name} has no checkpoint (train it first: "
                                  f"harness run --resume {self.run.path} --stage {name})")
        checked(loaded, name, self.run.manifest())
        if name not in self.built:  # built with its own seed; the caller's random streams are left as they were
            seed = stage_seed(self.seed, [s.name for s in self.method.stages].index(name))
            saved = rng_state()
            try:
                seed_everything(seed)
                data = self.data.for_stage(name)
                stage.init(StageContext(self.device, seed, data.train, data.val, self.run.path, 0.0, trained=self))
            finally:
                set_rng_state(saved)
            self.built.add(name)
        load_stage_state(stage, loaded)
        self.checkpoints[name] = loaded.path.name
        self.steps[name] = int(loaded.state["progress"]["step"])
        return stage

    def all(self) -> list[Stage]:
        """Every stage of the method, trained, in training order."""
        return [self(s.name) for s in self.method.stages]


CHECKPOINT_FORMAT = 1


class Checkpoints:
    """The loop's checkpoints of a stage in training: the stage's state with the batch stream's
    position, the budget clock, the loop's progress, the energy totals and every random state, so
    that a resumed stage continues exactly where it stopped. Rank 0 writes; in a data-parallel run
    `last` gathers every rank's random and energy state (and sums the nodes' energy), and every
    rank resumes from the one file rank 0 picked."""

    def __init__(self, run: RunDir, dist: "Dist", meter: "EnergyMeter", seed: int):
        self.run, self.dist, self.meter, self.seed = run, dist, meter, seed
        self.cluster: tuple[dict, list[dict]] | None = None  # (summed, per node) energy at the last save
        # the config the stages train with, in every checkpoint: resuming checks run.json against it
        self.manifest = run.manifest()

    def save(self, r: "StageRun", kind: str = "last") -> None:
        """Checkpoint `r` as `kind` (last | best). `last` is called on every rank together."""
        if kind == "last":
            r.progress.last_checkpoint = r.schedule_position()
        state = {"format": CHECKPOINT_FORMAT, "stage": r.stage.name, "stage_state": r.stage.state_dict(),
                 "stream": r.stream.state_dict(), "clock": r.clock.state_dict(), "progress": r.progress.__dict__.copy(),
                 "energy": self.meter.state_dict(), "rng": rng_state()}
        if self.manifest.get("config") is not None:
            state["config"] = self.manifest["config"]
        if self.dist.enabled and kind == "last":
            ranks = all_gather_object(self.dist, {"rng": state["rng"], "energy": state["energy"],
                                                  "status": self.meter.status, "measures": self.meter.enabled})
            state["rng_ranks"] = [x["rng"] for x in ranks]
            state["energy_ranks"] = [x["energy"] for x in ranks]
            self.cluster = cluster_energy(ranks, self.dist.local_world, self.meter.status)
        self.run.checkpoints.save(r.stage.name, state, kind)

    def load(self, name: str) -> LoadedCheckpoint | None:
        """The checkpoint to resume `name` from, checked (`checked`): rank 0 picks it (with its
        fallbacks); the others load that same file, or fail with rank 0's error."""
        if not self.dist.enabled:
            return self._checked(self.run.checkpoints.load(name), name)
        loaded, error = None, None
        if self.dist.main:
            try:
                loaded = self._checked(self.run.checkpoints.load(name), name)
            except CheckpointError as e:
                error = str(e)
        verdict = broadcast_object(self.dist, ("error", error) if error else ("path", str(loaded.path)) if loaded else None)
        if verdict is not None and verdict[0] == "error":
            raise CheckpointError(verdict[1])
        return loaded if self.dist.main or verdict is None else self.run.checkpoints.load_file(verdict[1])

    def _checked(self, loaded: LoadedCheckpoint | None, name: str) -> LoadedCheckpoint | None:
        return None if loaded is None else checked(loaded, name, self.manifest)

    def restore(self, r: "StageRun", loaded: LoadedCheckpoint) -> None:
        """Put `r` (stage, stream, clock, progress), the energy totals and the random state back
        as the checked checkpoint `loaded` holds them."""
        state = loaded.state
        load_stage_state(r.stage, loaded)
        try:
            self._restore_loop(r, state)
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as e:
            raise CheckpointError(f"{loaded.path.name} does not fit the loop ({_one_line(e)})") from None

    def _restore_loop(self, r: "StageRun", state: dict) -> None:
        r.stream.load_state_dict(state["stream"])
        r.clock.load_state_dict(state["clock"])
        for k, v in state["progress"].items():
            setattr(r.progress, k, v)
        d = self.dist
        energy, ranks = state.get("energy_ranks"), state.get("rng_ranks")
        mine = energy[d.rank] if d.enabled and energy and len(energy) == d.world else None
        self.meter.load_state_dict(mine if mine is not None else state.get("energy", {}))
        if not d.enabled:
            set_rng_state(state["rng"])
        elif ranks is not None and len(ranks) == d.world:
            set_rng_state(ranks[d.rank])
        else:  # a checkpoint saved without every rank's stream (a `best`): fresh, distinct streams
            seed_everything(rank_seed(self.seed + r.progress.step, d.rank))

    def resume(self, r: "StageRun", log: Callable[[str], None]) -> LoadedCheckpoint | None:
        """Continue `r` from its newest good checkpoint (returned), or checkpoint the fresh
        stage's step 0 (None returned), so that a diverging first step has a good state to evaluate.
        On a resume, metrics lines a dead process wrote past the checkpoint go to
        metrics.lost.jsonl and their compute is added up in stage_state[<stage>]["lost"]."""
        self.cluster = None  # no energy sum of another stage carries over
        gone = self.run.checkpoints.remove_stale_temporaries() if self.dist.main else []
        if gone:
            log(f"removed temporary files of writes interrupted by a dead process: {', '.join(gone)}")
        loaded = self.load(r.stage.name)
        if loaded is None:
            self.save(r)
            return None
        self.restore(r, loaded)
        lost = self.run.metrics.set_aside_lost(r.stage.name, r.progress.step)
        if lost is not None:
            prior = self.run.manifest().get("stage_state", {}).get(r.stage.name, {}).get("lost")
            self.run.update_stage(r.stage.name, lost=records.lost_total(
                prior, lost, r.clock.elapsed, r.progress.wall_s, self.meter.state_dict()["kwh_train"]))
            log(f"stage {r.stage.name}: {lost['lines']} metrics line(s) past the checkpoint (to step "
                f"{lost['to_step']}) moved to metrics.lost.jsonl")
        return loaded

    def energy(self) -> dict:
        """Energy so far: this process's meter, or in a data-parallel run every node's, summed."""
        return self.cluster[0] if self.dist.enabled and self.cluster is not None else self.meter.summary()

    def energy_by_node(self) -> list[dict] | None:
        return self.cluster[1] if self.dist.enabled and self.cluster else None
