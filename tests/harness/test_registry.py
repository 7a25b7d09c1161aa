from harness.registry import all_methods, get_method
from harness.errors import ConfigError
import pytest


def test_baselines_are_registered_with_provenance():
    names = {m.name for m in all_methods()}
    assert {"dcgan", "lsgan", "wgan"} <= names
    info = get_method("wgan")
    assert info.paper == "soft-octave-gans" and info.stages == ("gan",)
    assert info.config.loss == "wgan" and info.config.optimizer == "rmsprop" and info.config.clip == 0.05
    assert info.eval_every == "1epoch" and info.eval_samples == 10_000


def test_build_matches_registered_stages():
    for info in all_methods():
        method = info.build(info.config)
        assert tuple(s.name for s in method.stages) == info.stages


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError, match="registered methods: .*dcgan"):
        get_method("biggan-xl")


def test_list_command(cli):
    r = cli("list")
    assert r.code == 0
    for name in ("dcgan", "lsgan", "wgan"):
        assert name in r.out


def test_list_of_one_method_shows_its_nested_keys_with_their_paper_sources(cli):
    r = cli("list", "nsbgan")
    assert r.code == 0, r.err
    assert "sampler.lr_g" in r.out and "sampler.arch" in r.out and "latent_norm_images" in r.out
    assert "Table 3" in r.out  # a field's source comment is its documentation
    assert "sampler_lr_g" not in r.out


@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_run_builds_its_method_once_per_process(cli, tmp_path, monkeypatch, command):
    """Preparing, training and evaluating a run build the method once and hand it on."""
    import dataclasses

    from harness import registry
    from tests.conftest import SAMPLER_TINY, SMOKE

    sets = [a for kv in ["resolution=32", "levels=1", "width=4", "batch_sizes=[8]", "patch=8", "eval_images=8",
                         *SAMPLER_TINY] for a in ("--set", kv)]
    run_dir = tmp_path / "r"
    if command == "eval":
        assert cli("run", "--method", "nsbgan", "--budget", "1h", "--max-steps", "1", "--run-dir", run_dir, *sets,
                   *SMOKE).code == 0
    built = []
    info = registry.get_method("nsbgan")

    def factory(cfg):
        built.append(cfg)
        return info.factory(cfg)

    monkeypatch.setitem(registry._REGISTRY, "nsbgan", dataclasses.replace(info, factory=factory))
    if command == "run":
        r = cli("run", "--method", "nsbgan", "--budget", "1h", "--max-steps", "1", "--run-dir", run_dir, *sets, *SMOKE)
    else:
        r = cli("eval", str(run_dir), "--samples", "16", "--fid-backbone", "standin", "--device", "cpu")
    assert r.code == 0, r.err
    assert len(built) == 1
