"""Checkpoints of stages: what the loop saves and resumes from (`Checkpoints`), and stages loaded
with their trained weights (`TrainedStages`), the one way anything outside the training loop (the
whole-pipeline evaluation, `harness eval`, `harness fid RUN_DIR`, a stage that needs another
stage's weights) gets a trained stage out of a run directory."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from harness.rundir import records
from harness.engine.distributed import all_gather_object, broadcast_object
from harness.engine.energy import cluster_energy
from harness.errors import CheckpointError
from harness.method import Method, Stage, StageContext
from harness.rundir.checkpoint_files import LoadedCheckpoint
from harness.rundir.rundir import RunDir
from harness.engine.seeding import rank_seed, rng_state, seed_everything, set_rng_state, stage_seed

if TYPE_CHECKING:
    from harness.data import DataSplits
    from harness.engine.distributed import Dist
    from harness.engine.energy import EnergyMeter
    from harness.engine.stage_run import StageRun


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
        stage.load_state_dict(loaded.state["stage_state"])
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

    def save(self, r: "StageRun", kind: str = "last") -> None:
        """Checkpoint `r` as `kind` (last | best). `last` is called on every rank together."""
        if kind == "last":
            r.progress.last_checkpoint = r.schedule_position()
        state = {"format": CHECKPOINT_FORMAT, "stage": r.stage.name, "stage_state": r.stage.state_dict(),
                 "stream": r.stream.state_dict(), "clock": r.clock.state_dict(), "progress": r.progress.__dict__.copy(),
                 "energy": self.meter.state_dict(), "rng": rng_state()}
        if self.dist.enabled and kind == "last":
            ranks = all_gather_object(self.dist, {"rng": state["rng"], "energy": state["energy"],
                                                  "status": self.meter.status, "measures": self.meter.enabled})
            state["rng_ranks"] = [x["rng"] for x in ranks]
            state["energy_ranks"] = [x["energy"] for x in ranks]
            self.cluster = cluster_energy(ranks, self.dist.local_world, self.meter.status)
        self.run.checkpoints.save(r.stage.name, state, kind)

    def load(self, name: str) -> LoadedCheckpoint | None:
        """The checkpoint to resume `name` from: rank 0 picks it (with its fallbacks); the others
        load that same file, or fail with rank 0's error."""
        if not self.dist.enabled:
            return self.run.checkpoints.load(name)
        loaded, error = None, None
        if self.dist.main:
            try:
                loaded = self.run.checkpoints.load(name)
            except CheckpointError as e:
                error = str(e)
        verdict = broadcast_object(self.dist, ("error", error) if error else ("path", str(loaded.path)) if loaded else None)
        if verdict is not None and verdict[0] == "error":
            raise CheckpointError(verdict[1])
        return loaded if self.dist.main or verdict is None else self.run.checkpoints.load_file(verdict[1])

    def restore(self, r: "StageRun", state: dict) -> None:
        """Put `r` (stage, stream, clock, progress), the energy totals and the random state back
        as `state` holds them."""
        r.stage.load_state_dict(state["stage_state"])
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
        self.restore(r, loaded.state)
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
