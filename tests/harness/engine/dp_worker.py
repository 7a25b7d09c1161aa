"""Run by test_distributed.py under `torchrun --nproc-per-node 2` (gloo, CPU):

    dp_worker.py grads OUT       harness.distributed's pieces; rank 0 writes what each rank saw to OUT
    dp_worker.py diverge RUN     the loop, with a non-finite loss on rank 1 only at step 5
"""
import signal
import sys

import torch

from harness.engine import distributed
from harness.engine.distributed import agree, all_gather_object, attach, broadcast_object


class Toy:
    """A stage-shaped holder that declares its model and optimiser (the Stage contract's
    `modules()` / `optimizers()`) and keeps them in a dict, where attribute discovery would
    see them too: data parallelism must use what is declared."""

    name = "toy"

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
        self.parts = {"model": model, "opt": torch.optim.Adam(model.parameters(), lr=1e-2)}
        self.model = model

    def modules(self):
        return [self.parts["model"]]

    def optimizers(self):
        return [self.parts["opt"]]


def grads(out: str) -> None:
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
        toy.parts['opt'].zero_grad()
        loss.backward()
        toy.parts['opt'].step()
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


def diverge(run_dir: str) -> None:
    from harness.engine.budget import parse_budget
    from harness.engine.energy import EnergyMeter
    from harness.launch.prepare import prepare_all
    from harness.launch.request import RunRequest
    from harness.engine.loop import Trainer
    from harness.engine.options import LoopOptions

    d = distributed.from_env()
    device = distributed.init(d, torch.device("cpu"))
    req = RunRequest(method="dcgan", budget="1h", max_steps=8, overrides=("resolution=32", "width=2", "batch_size=8"),
                     run_dir=run_dir, eval_samples=0, energy=False, progress=False, device="cpu")
    p, _ = prepare_all(req, d, device)
    method = p.method
    stage = method.stages[0]
    step = stage.train_step
    if d.rank == 1:
        stage.train_step = lambda batch: {**step(batch), "loss_d": float("nan")} if batch.step == 4 else step(batch)
    trainer = Trainer(p.run, method, p.data, p.device, LoopOptions(parse_budget("1h"), max_steps=8, progress=False),
                      EnergyMeter(p.run.path, "USA", enabled=False), dist=d)
    print(f"rank {d.rank}: {trainer.train()}", flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    {"grads": grads, "diverge": diverge}[sys.argv[1]](sys.argv[2])
