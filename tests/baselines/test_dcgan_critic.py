"""The critic schedules of the GAN stage: `fixed` (G after every n_critic D steps) and `official`
(the official train.py loop), against a transcription of that loop; resume keeps the schedule."""
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.dcgan import WGAN_CONFIG, GanStage, official_critic_count, official_g_step
from harness.engine.budget import parse_budget
from harness.config import apply_overrides
from harness.data.shapes import ShapesDataset
from harness.engine.energy import EnergyMeter
from harness.launch.prepare import prepare_run
from harness.launch.request import RunRequest
from harness.engine.loop import Trainer
from harness.engine.options import LoopOptions
from harness.engine.signals import Interrupted
from harness.method import Batch, StageContext
from harness.registry import get_method
from tests.conftest import read_manifest

TINY = {"resolution": 32, "width": 2, "batch_size": 4}


def official_loop(gan_type, critic, nb_epochs, num_batches):
    """(epoch, batch_idx) of every G step of the official train.py (lines 123-167), transcribed:
    the critic ratio from g_iter, one D step per batch, G when batch_idx % n_critic == 0."""
    g_steps, g_iter = [], 0
    for epoch in range(nb_epochs):
        for batch_idx in range(num_batches):
            if gan_type == "wgan":
                n_critic = 20 if g_iter < 50 or (g_iter + 1) % 500 == 0 else critic
            else:
                n_critic = critic
            if batch_idx % n_critic == 0:
                g_steps.append((epoch, batch_idx))
                g_iter += 1
    return g_steps


def harness_g_steps(loss, n_critic, nb_epochs, num_batches):
    """The same, from the harness's per-step decision: the loop's step numbers and the g counter."""
    out, g = [], 0
    for step in range(nb_epochs * num_batches):
        if official_g_step(loss, n_critic, g, step % num_batches):
            out.append(divmod(step, num_batches))
            g += 1
    return out


@pytest.mark.parametrize("loss, critic, num_batches", [("wgan", 5, 3165), ("wgan", 5, 1237), ("dcgan", 1, 50),
                                                       ("lsgan", 3, 7)])
def test_official_schedule_equals_the_official_loop(loss, critic, num_batches):
    epochs = 3 if num_batches > 1000 else 4
    assert harness_g_steps(loss, critic, epochs, num_batches) == \
        official_loop("gan" if loss == "dcgan" else loss, critic, epochs, num_batches)


def test_official_wgan_critic_counts_at_chosen_generator_steps():
    # train.py line 137, by hand: 20 before G steps 1..50 and before every 500th, else --critic 5
    for g_done, count in ((0, 20), (49, 20), (50, 5), (498, 5), (499, 20), (500, 5), (998, 5), (999, 20)):
        assert official_critic_count("wgan", 5, g_done) == count, g_done
    assert official_critic_count("dcgan", 1, 0) == official_critic_count("lsgan", 1, 499) == 1
    g = official_loop("wgan", 5, 1, 3165)  # the first epoch of CelebA at batch 64 (all 202,599 images)
    assert g[:50] == [(0, 20 * k) for k in range(50)]  # one G step per 20 batches, from batch 0
    assert g[50] == (0, 985)  # after the 50th (batch 980) the next multiple of 5
    # every 5th batch to the end of the epoch (486 G steps); batch_idx restarts at 0 in the next epoch,
    # which steps G at once; the 499th G step lands on batch 60, so the 500th waits for batch 80
    later = official_loop("wgan", 5, 2, 3165)
    assert len(g) == 50 + (3164 - 980) // 5 == 486 and later[486] == (1, 0)
    assert later[498] == (1, 60) and later[499] == (1, 80) and later[500] == (1, 85)


def test_fixed_schedule_counts_d_steps_since_the_last_g_step():
    cfg = apply_overrides(WGAN_CONFIG, {**TINY, "critic_schedule": "fixed"})
    stage = GanStage(cfg)
    data = ShapesDataset(32, "val")
    stage.init(StageContext(torch.device("cpu"), 0, data, data, Path("."), 1.0))
    images = data.images(np.arange(4))[0]
    with_g = [s for s in range(12) if "loss_g" in stage.train_step(Batch(images, torch.zeros(4, dtype=torch.long),
                                                                          s, 0.0, 0.0))]
    assert with_g == [4, 9] and stage.g_steps == 2  # every 5th D step: no warm-up, no batch index


def test_the_stage_steps_g_on_the_official_batches_across_epochs(tmp_path):
    """A real GanStage on an 11-batch epoch: batch 0 of every epoch and multiples of 20 (never
    reached) while fewer than 50 G steps are done; from 50 G steps on, multiples of 5."""
    cfg = apply_overrides(WGAN_CONFIG, TINY)
    assert cfg.critic_schedule == "official"
    data = ShapesDataset(32, "val")
    stage = GanStage(cfg)
    stage.init(StageContext(torch.device("cpu"), 0, data, data, tmp_path, 1.0))
    stage.batches_per_epoch = 11  # as if the dataset held 11 batches (the loop's step % 11 is the index)
    images, labels = data.images(np.arange(4))[0], torch.zeros(4, dtype=torch.long)
    steps = list(range(0, 24)) + list(range(11 * 60, 11 * 60 + 11))
    g_at = []
    for s in steps:
        if s == 11 * 60:
            stage.g_steps = 50  # skip ahead: the warm-up is over
        if "loss_g" in stage.train_step(Batch(images, labels, s, s / 11, 0.0)):
            g_at.append(s)
    assert g_at == [0, 11, 22, 660, 665, 670]  # 660 = batch 0 of epoch 60; then batches 5 and 10


def _trainer(run_dir, data, max_steps, interrupt_after=None):
    """A Trainer for a tiny paper-config WGAN on `data`, through the real launch path."""
    overrides = tuple(f"{k}={v}" for k, v in TINY.items())
    p = prepare_run(RunRequest(method="wgan", budget="1h", max_steps=max_steps, overrides=overrides, data=data,
                               run_dir=str(run_dir), eval_samples=0, energy=False, progress=False, device="cpu"))
    built = p.method
    trainer = Trainer(p.run, built, p.data, p.device,
                      LoopOptions(parse_budget("1h"), seed=0, max_steps=max_steps, progress=False),
                      EnergyMeter(p.run.path, "USA", enabled=False))
    stage = built.stages[0]
    step, g_steps = stage.train_step, []

    def train_step(batch):
        out = step(batch)
        if "loss_g" in out:
            g_steps.append(batch.step)
        if interrupt_after is not None and batch.step + 1 == interrupt_after:
            trainer.signals.received = signal.SIGINT
        return out

    stage.train_step = train_step
    return trainer, built, g_steps


def test_official_schedule_survives_resume_bitwise(tmp_path):
    rng = np.random.default_rng(0)  # 22 images: 1 held out, 21 train = 5 batches of 4 per epoch
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (22, 32, 32, 3), dtype=np.uint8))
    data = f"npz:{tmp_path / 'd.npz'}"
    straight, m1, g1 = _trainer(tmp_path / "straight", data, 13)
    assert straight.train() == "completed"
    assert g1 == [0, 5, 10]  # batch 0 of each epoch (warm-up: 20 critic steps, epochs of 5 batches)
    cut, _, g_before = _trainer(tmp_path / "cut", data, 13, interrupt_after=7)
    with pytest.raises(Interrupted):
        cut.train()
    assert read_manifest(tmp_path / "cut")["stage_state"]["gan"]["steps"] == 7 and g_before == [0, 5]
    resumed, m2, g_after = _trainer(tmp_path / "cut", data, 13)
    assert resumed.train() == "completed"
    assert g_after == [10]  # the resumed loop knows its batch index and G count
    a, b = m1.stages[0].state_dict(), m2.stages[0].state_dict()
    assert a["g_steps"] == b["g_steps"] == 3
    for net in ("G", "D"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_the_paper_configs_use_the_official_critic_schedule_for_wgan_only():
    assert get_method("wgan").config.critic_schedule == get_method("octave-wgan").config.critic_schedule == "official"
    for name in ("dcgan", "lsgan", "octave-dcgan", "octave-lsgan"):  # n_critic 1: both schedules are the same
        cfg = get_method(name).config
        assert cfg.critic_schedule == "fixed" and cfg.n_critic == 1
