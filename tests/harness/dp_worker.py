"""Run by test_distributed.py under `torchrun --nproc-per-node 2` (gloo, CPU): one data-parallel
job that exercises harness.distributed and writes what each rank saw to OUT (rank 0)."""
import signal
import sys

import torch

from harness import distributed
from harness.distributed import agree, all_gather_object, attach, broadcast_object


class Toy:
    """A stage-shaped holder: a model and an optimiser as attributes, as real stages have."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)


def main(out: str) -> None:
    d = distributed.from_env()
    distributed.init(d, torch.device("cpu"))
    toy = Toy(seed=100 + d.rank)  # different weights on purpose: attach must broadcast rank 0's
    attach(d, toy)
    params0 = [p.detach().clone() for p in toy.model.parameters()]
    gen = torch.Generator().manual_seed(123)
    x, y = torch.randn(8, 6, generator=gen), torch.randn(8, 3, generator=gen)
    per = len(x) // d.world
    for _ in range(3):
        xs, ys = x[d.rank * per:(d.rank + 1) * per], y[d.rank * per:(d.rank + 1) * per]
        loss = torch.nn.functional.mse_loss(toy.model(xs), ys)
        toy.opt.zero_grad()
        loss.backward()
        toy.opt.step()
    params = [p.detach().clone() for p in toy.model.parameters()]
    agreed = agree(d, torch.device("cpu"), elapsed=5.0 + d.rank, checkpoint_due=d.main,
                   signum=signal.SIGTERM if d.rank == 1 else None, losses={"a": float(d.rank), "b": 1.0})
    nonfinite = agree(d, torch.device("cpu"), 1.0, False, None, {"a": float("nan") if d.rank else 0.0})
    gathered = all_gather_object(d, {"rank": d.rank, "params": params, "params0": params0,
                                     "agreed": agreed.__dict__, "nan": nonfinite.losses["a"]})
    told = broadcast_object(d, f"from rank {d.rank}")
    if d.main:
        torch.save({"ranks": gathered, "told": told}, out)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
