"""BigGAN training: gradient accumulation equals the big batch, EMA arithmetic, both truncation
modes, config errors, and the `biggan` method through the CLI (smoke run, resume, eval)."""
import copy

import numpy as np
import pytest
import scipy.stats
import torch

from baselines.biggan import (BigGanConfig, d_backward, ema_decay_at, ema_update, g_backward, sample_z,
                              standing_statistics)
from baselines.biggan_nets import make_discriminator, make_generator
from harness.config import apply_overrides
from harness.errors import ConfigError
from harness.engine.loop import Interrupted
from harness.registry import get_method
from tests.conftest import SMOKE, method_trainer, read_manifest, read_records

TINY = ["--set", "resolution=32", "--set", "ch=4", "--set", "batch_size=8", "--set", "accumulate=2",
        "--set", "attn=0", "--set", "eval_batch_size=32"]


def tiny_nets(arch="biggan", n_classes=3):
    torch.manual_seed(0)
    kw = dict(ch=4, attn=16 if arch == "biggan" else 0, n_classes=n_classes, depth=1 if arch == "biggan" else 2,
              sn_eps=1e-6)
    G = make_generator(arch, 32, dim_z=20, shared_dim=8, bn_eps=1e-5, **kw)
    D = make_discriminator(arch, 32, **kw)
    return G, D


def grads(module):
    return [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize("arch", ["biggan", "biggan-deep"])
def test_accumulating_4_micro_batches_of_8_equals_one_batch_of_32(arch):
    """With batch statistics out of the comparison (eval mode: BN on running statistics, no power
    iteration), D's and G's gradients over 4 micro-batches of 8 equal those of one batch of 32."""
    G, D = (m.double().eval() for m in tiny_nets(arch))  # float64: summation order out of the comparison too
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(32, 3, 32, 32, generator=gen, dtype=torch.float64) * 2 - 1
    y = torch.randint(3, (32,), generator=gen)
    z = torch.randn(32, G.dim_z, generator=gen, dtype=torch.float64)
    y_fake = torch.randint(3, (32,), generator=gen)

    def d_grads(k):
        D.zero_grad(set_to_none=True)
        parts = d_backward(G, D, [(x[i::k], y[i::k], z[i::k], y_fake[i::k]) for i in range(k)])
        return grads(D), parts

    def g_grads(k):
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        loss = g_backward(G, D, [(z[i::k], y_fake[i::k]) for i in range(k)])
        return grads(G), loss

    (big_d, big_parts), (acc_d, acc_parts) = d_grads(1), d_grads(4)
    (big_g, big_loss), (acc_g, acc_loss) = g_grads(1), g_grads(4)
    assert len(big_d) == len(list(D.parameters())) and len(big_g) > 0
    for a, b in zip(acc_d + acc_g, big_d + big_g):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    for key in big_parts:
        torch.testing.assert_close(acc_parts[key], big_parts[key], rtol=1e-5, atol=0)
    torch.testing.assert_close(acc_loss, big_loss, rtol=1e-5, atol=0)
    assert all(p.grad is None for p in D.parameters())  # G's step leaves D without gradients


def test_ema_copies_before_ema_start_then_decays():
    cfg = BigGanConfig(ema_start=3, ema_decay=0.9)
    assert [ema_decay_at(s, cfg) for s in (1, 2, 3, 4)] == [0.0, 0.0, 0.9, 0.9]
    src = torch.nn.BatchNorm1d(4)
    target = copy.deepcopy(src)
    with torch.no_grad():
        src.weight.fill_(2.0)
        src.running_mean.fill_(1.0)
        src.num_batches_tracked.fill_(7)
    ema_update(target, src, 0.0)  # before ema_start: a copy
    assert torch.equal(target.weight, src.weight) and torch.equal(target.running_mean, src.running_mean)
    with torch.no_grad():
        src.weight.fill_(12.0)
        src.running_mean.fill_(11.0)
    ema_update(target, src, 0.9)
    torch.testing.assert_close(target.weight, torch.full((4,), 0.9 * 2.0 + 0.1 * 12.0))  # parameters
    torch.testing.assert_close(target.running_mean, torch.full((4,), 0.9 * 1.0 + 0.1 * 11.0))  # and buffers
    assert int(target.num_batches_tracked) == 7


def test_truncation_scale_multiplies_the_standard_deviation():
    z = sample_z(20_000, 16, 0.4, "scale", torch.Generator().manual_seed(0))
    z1 = sample_z(20_000, 16, 1.0, "scale", torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, z1 * 0.4)
    assert z.std().item() == pytest.approx(0.4, rel=0.01)


@pytest.mark.parametrize("t", [1.0, 0.5, 0.01])
def test_truncnorm_draws_the_truncated_normal(t):
    z = sample_z(20_000, 16, t, "truncnorm", torch.Generator().manual_seed(0)).double()
    assert z.abs().max().item() <= t
    ref = scipy.stats.truncnorm(-t, t)  # the independent reference
    assert z.std().item() == pytest.approx(ref.std(), rel=0.02)
    assert scipy.stats.kstest(z.flatten()[:5000].numpy(), ref.cdf).pvalue > 1e-3


def test_standing_statistics_replace_the_running_averages():
    G, _ = tiny_nets()
    bn = next(m for m in G.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_var.fill_(123.0)
    standing_statistics(G, G.dim_z, 3, 4, 8, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert not G.training and bn.momentum == 0.1  # back in eval mode, momentum restored
    assert bn.running_var.max().item() < 100.0 and int(bn.num_batches_tracked) == 4


@pytest.mark.parametrize("override,message", [
    ({"arch": "biggan-xl"}, "arch"),
    ({"attn": 48}, "attn 48 is not a block resolution"),
    ({"resolution": 64, "attn": 64}, "attn 64 is not a block resolution of biggan-deep G and D at 64"),
    ({"ch": 0}, "ch must be at least 1"),
    ({"accumulate": 0}, "accumulate must be at least 1"),
    ({"lr_g": float("nan")}, "expected a finite number"),
    ({"lr_g": -1.0}, "lr_g must be a positive number"),
    ({"resolution": 48}, "resolution must be one of"),
])
def test_bad_config_values_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(get_method("biggan").config, override)


def test_bad_config_is_one_line_on_the_cli(cli, tmp_path):
    r = cli("run", "--method", "biggan", "--budget", "1s", "--run-dir", tmp_path / "r", "--set", "attn=3", *SMOKE)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "attn 3" in r.err
    assert not (tmp_path / "r").exists()


def test_paper_config_of_the_biggan_method():
    info = get_method("biggan")
    cfg = info.config
    # the NSBGAN authors' baseline (launch_BigGAN_deep_baseline_bs64x32.slurm l.66-84)
    assert (cfg.arch, cfg.resolution, cfg.resolved("ch"), cfg.resolved("attn"), cfg.resolved("dim_z"), cfg.shared_dim) == \
        ("biggan-deep", 256, 128, 64, 128, 128)
    assert cfg.batch_size * cfg.accumulate == 2048 and (cfg.lr_g, cfg.lr_d, cfg.betas, cfg.adam_eps) == \
        (1e-4, 4e-4, (0.0, 0.999), 1e-6)
    plain = apply_overrides(cfg, {"arch": "biggan"})
    assert (plain.resolved("ch"), plain.resolved("dim_z")) == (96, 120)
    assert info.stages == ("gan",) and info.eval_every == "6h" and info.eval_samples == 50_000
    assert info.paper_devices == 8  # Sec. 5: "The baseline model trains with eight GPUs"
    assert apply_overrides(cfg, {"resolution": 32}).resolved("attn") == 16  # 64 is no block of D at 32
    assert apply_overrides(cfg, {"resolution": 64}).resolved("attn") == 32


def test_smoke_run_writes_samples_and_cost_then_evaluates_at_truncations(cli, tmp_path):
    run_dir = tmp_path / "r"
    r = cli("run", "--method", "biggan", "--budget", "3s", "--run-dir", run_dir, *TINY, *SMOKE)
    assert r.code == 0, r.err
    m = read_manifest(run_dir)
    assert m["status"] == "budget_exhausted"
    model = m["stage_state"]["gan"]["model"]
    assert model["g_params"] > 0 and model["d_params"] > 0 and model["g_macs"] > 0
    assert model["effective_batch"] == 16 and model["n_classes"] == 10  # shapes' own classes
    assert m["stage_state"]["gan"]["batch_size"] == 16  # the loop draws the effective batch per step
    evals = [x for x in read_records(run_dir) if x["kind"] == "eval"]
    assert evals[-1]["final"] and "fid_standin" in evals[-1] and "fid" not in evals[-1]
    assert list((run_dir / "samples").glob("gan-*-samples.png"))
    r = cli("eval", run_dir, "--truncation", "1.0,0.4", "--samples", "32", "--fid-backbone", "standin")
    assert r.code == 0, r.err
    sweep = [x for x in read_records(run_dir) if x["stage"] == "truncation"]
    assert [x["truncation"] for x in sweep] == [1.0, 0.4] and all(x["fid_standin"] >= 0 for x in sweep)


def _trainer(run_dir, max_steps, interrupt_after=None):
    return method_trainer("biggan", run_dir, max_steps, tuple(TINY[1::2]), interrupt_after)


def test_interrupt_on_an_optimiser_step_boundary_then_resume_equals_a_straight_run(tmp_path):
    straight, m1 = _trainer(tmp_path / "straight", 4)
    assert straight.train() == "completed"
    cut, _ = _trainer(tmp_path / "cut", 4, interrupt_after=2)
    with pytest.raises(Interrupted):
        cut.train()
    assert read_manifest(tmp_path / "cut")["stage_state"]["gan"]["steps"] == 2
    resumed, m2 = _trainer(tmp_path / "cut", 4)
    assert resumed.train() == "completed"
    a, b = m1.stages[0].state_dict(), m2.stages[0].state_dict()
    assert a["steps"] == b["steps"] == 4
    for net in ("G", "D", "G_ema"):
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs after resume"
    losses = [[x["loss_d"] for x in read_records(tmp_path / d) if x["kind"] == "train"] for d in ("straight", "cut")]
    assert np.isfinite(losses[0]).all() and losses[0][0] == losses[1][0]
