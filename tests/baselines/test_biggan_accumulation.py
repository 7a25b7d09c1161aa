"""The two accumulation loops of BigGAN, against plainly written ones: `interleaved` (the NSBGAN
authors' baseline, train_baseline.py l.182-262: per micro-batch a D then a G micro-step, optimiser
steps at the last, the EMA at every micro-step) and `ajbrock` (BigGAN-PyTorch's GAN_training_function)."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from baselines.biggan import BigGanConfig, BigGanStage, ema_decay_at
from harness.config import apply_overrides
from harness.data.shapes import ShapesDataset
from harness.images import uint8_to_signed
from harness.method import Batch, StageContext

K = 3  # micro-batches per optimiser step


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def tiny(accumulation: str, accumulate: int = K) -> BigGanStage:
    cfg = apply_overrides(BigGanConfig(), {"arch": "biggan", "resolution": 16, "ch": 8, "attn": 0, "dim_z": 6,
                                           "shared_dim": 4, "batch_size": 4, "accumulate": accumulate,
                                           "accumulation": accumulation, "ema_start": 2, "data_options": ""})
    data = ShapesDataset(16, "val")
    torch.manual_seed(0)
    stage = BigGanStage(cfg)
    stage.init(StageContext(torch.device("cpu"), 0, data, data, None, 1.0))
    return stage


def batches(stage: BigGanStage, steps: int) -> list[Batch]:
    data = ShapesDataset(16, "val")
    n = stage.batch_size
    return [Batch(*data.images(np.arange(s * n, (s + 1) * n)), s, 0.0, 0.0) for s in range(steps)]


def plain_interleaved(G, D, G_ema, opt_g, opt_d, batch: Batch, itr: int, cfg: BigGanConfig, n_classes: int) -> int:
    """The authors' loop body, written out plainly (one optimiser step over K micro-batches)."""
    xs, ys = uint8_to_signed(batch.images).chunk(K), batch.labels.chunk(K)
    opt_g.zero_grad()
    opt_d.zero_grad()
    for i in range(K):
        n = len(xs[i])
        z, yf = torch.randn(n, G.dim_z), torch.randint(n_classes, (n,))
        with torch.no_grad():
            fake = G(z, yf)
        out = D(torch.cat([fake, xs[i]]), torch.cat([yf, ys[i]]))
        ((F.relu(1 - out[n:]).mean() + F.relu(1 + out[:n]).mean()) / K).backward()
        if i == K - 1:
            opt_d.step()
        z, yf = torch.randn(n, G.dim_z), torch.randint(n_classes, (n,))
        for p in D.parameters():
            p.requires_grad_(False)
        (-D(G(z, yf), yf).mean() / K).backward()
        for p in D.parameters():
            p.requires_grad_(True)
        if i == K - 1:
            opt_g.step()
            itr += 1
        decay = 0.0 if itr and itr < cfg.ema_start else cfg.ema_decay  # BigGAN-PyTorch utils.ema.update
        with torch.no_grad():
            source = dict(G.named_parameters()) | dict(G.named_buffers())
            for name, t in list(G_ema.named_parameters()) + list(G_ema.named_buffers()):
                t.copy_(t * decay + source[name] * (1 - decay) if t.is_floating_point() else source[name])
    return itr


def test_interleaved_accumulation_equals_the_authors_loop_written_plainly(float64):
    stage = tiny("interleaved")
    G, D, G_ema = (copy.deepcopy(m) for m in (stage.G, stage.D, stage.G_ema))
    cfg = stage.cfg
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.betas, eps=cfg.adam_eps)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas, eps=cfg.adam_eps)
    itr = 0
    for step, batch in enumerate(batches(stage, 2)):
        torch.manual_seed(100 + step)
        stage.train_step(batch)
        torch.manual_seed(100 + step)
        G.train(), D.train()
        itr = plain_interleaved(G, D, G_ema, opt_g, opt_d, batch, itr, cfg, stage.n_classes)
    assert stage.steps == itr == 2
    for ours, theirs in ((stage.G, G), (stage.D, D), (stage.G_ema, G_ema)):
        for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


def test_the_two_loops_agree_at_one_micro_batch_and_differ_with_accumulation(float64):
    def after_two_steps(accumulation: str, accumulate: int) -> dict:
        stage = tiny(accumulation, accumulate)
        for step, batch in enumerate(batches(stage, 2)):
            torch.manual_seed(7 + step)
            stage.train_step(batch)
        return {**stage.G.state_dict(), **{f"D.{k}": v for k, v in stage.D.state_dict().items()},
                **{f"ema.{k}": v for k, v in stage.G_ema.state_dict().items()}}

    one = [after_two_steps(a, 1) for a in ("interleaved", "ajbrock")]
    assert all(torch.equal(one[0][k], one[1][k]) for k in one[0])
    many = [after_two_steps(a, K) for a in ("interleaved", "ajbrock")]
    assert not all(torch.allclose(many[0][k].double(), many[1][k].double()) for k in many[0] if "weight" in k)


def test_ema_decay_follows_the_reference_rule_itr_zero_included():
    cfg = BigGanConfig()
    assert ema_decay_at(0, cfg) == cfg.ema_decay  # `if itr and ...`: the interleaved loop's first micro-steps
    assert ema_decay_at(1, cfg) == ema_decay_at(19_999, cfg) == 0.0 and ema_decay_at(20_000, cfg) == 0.9999


def test_the_paper_config_is_the_authors_baseline():
    cfg = BigGanConfig()
    assert (cfg.arch, cfg.resolved("ch"), cfg.resolved("dim_z"), cfg.shared_dim, cfg.resolved("attn"), cfg.depth) == \
        ("biggan-deep", 128, 128, 128, 64, 2)
    assert (cfg.batch_size, cfg.accumulate, cfg.accumulation, cfg.num_d_steps) == (64, 32, "interleaved", 1)
    assert (cfg.lr_g, cfg.lr_d, cfg.betas, cfg.adam_eps, cfg.ema_decay, cfg.ema_start) == \
        (1e-4, 4e-4, (0.0, 0.999), 1e-6, 0.9999, 20_000)
    with pytest.raises(Exception, match="accumulation=interleaved .* one D step"):
        apply_overrides(cfg, {"num_d_steps": 2})
