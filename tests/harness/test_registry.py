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
