"""Run directories: atomic checkpoints with their sha256, and the fallback to `prev`."""
import pytest
import torch

from harness.errors import CheckpointError
from harness.run import RunDir


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path / "r", {"method": "dcgan"})
    good = {"w": torch.arange(10.0), "step": 1}
    run.save_checkpoint("gan", good)

    import harness.run as hr

    real_replace = hr.os.replace

    def crash(*a, **k):  # the process dies right before the new file is renamed into place
        raise KeyboardInterrupt

    monkeypatch.setattr(hr.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint("gan", {"w": torch.zeros(10), "step": 2})
    monkeypatch.setattr(hr.os, "replace", real_replace)
    loaded = RunDir(run.path).load_checkpoint("gan")
    assert loaded.state["step"] == 1 and torch.equal(loaded.state["w"], good["w"])

    # a torn write of the file itself (no rename): `last` fails its sha256, `prev` is used and named
    run.save_checkpoint("gan", {"w": torch.ones(10), "step": 3})
    last = run.checkpoint_path("gan")
    last.write_bytes(last.read_bytes()[:100])
    loaded = RunDir(run.path).load_checkpoint("gan")
    assert loaded.state["step"] == 1 and "resumed from gan-prev.pt" in loaded.note
    run.checkpoint_path("gan", "prev").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no loadable checkpoint"):
        RunDir(run.path).load_checkpoint("gan")
