"""Random state: seeding, saving and restoring it, and the seeds of stages and ranks.

One rule for every caller (the loop, `harness eval`, the benchmarks): stage `index` of a run with
seed `seed` draws from `stage_seed(seed, index)`, so stages have independent streams and a stage's
stream does not depend on which other stages ran in the same process; in a data-parallel run each
rank then reseeds with `rank_seed(stage seed, rank)` after the weights are built, so all ranks hold
the same initial weights but draw distinct noise.
"""
from __future__ import annotations

import random

import numpy as np
import torch

from harness.errors import ConfigError

# numpy seeds with 32 bits, torch with 64: a run's seed is a 32-bit number, and the stage and rank
# seeds derived from it (below) stay within torch's range
MAX_SEED = 2**32 - 1


def check_seed(seed: int, flag: str = "--seed") -> int:
    """`seed` if it is one a run can use (0 to MAX_SEED), else a ConfigError naming `flag`."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{flag} must be an integer from 0 to {MAX_SEED}, got {seed}")
    return seed


def stage_seed(seed: int, index: int) -> int:
    """The seed of the `index`-th stage (in training order) of a run seeded with `seed`."""
    return seed + 1000 * index


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random stream (noise, augmentation) in a data-parallel run."""
    return seed * 1_000_003 + 7919 * (rank + 1)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and every CUDA device's) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every global generator's state, for a checkpoint."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
