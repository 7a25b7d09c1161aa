from dataclasses import dataclass, field
from typing import ClassVar, Literal

import pytest

from harness.config import Config, apply_overrides, config_keys, parse_overrides, to_jsonable, upgrade_recorded
from harness.errors import ConfigError


@dataclass(frozen=True)
class Cfg(Config):
    lr: float = 1e-4
    steps: int = 10
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    betas: tuple[float, float] = (0.5, 0.999)
    points: tuple[tuple[float, float], ...] = ((0.0, 0.2), (1.0, 0.7))
    maybe: int | None = None

    def validate(self):
        if self.steps < 0:
            raise ConfigError("steps must be >= 0")


def test_overrides_are_typed():
    cfg = apply_overrides(Cfg(), parse_overrides([
        "lr=3e-4", "steps=20", "name=hello", "flag=true", "mode=b", "betas=[0.0,0.99]",
        "points=[[0,0.2],[0.7,0.7],[1,0.7]]", "maybe=3"]))
    assert cfg.lr == 3e-4 and cfg.steps == 20 and cfg.name == "hello" and cfg.flag is True
    assert cfg.mode == "b" and cfg.betas == (0.0, 0.99) and cfg.maybe == 3
    assert cfg.points == ((0.0, 0.2), (0.7, 0.7), (1.0, 0.7))
    assert isinstance(cfg.points[0], tuple)
    assert apply_overrides(cfg, {"maybe": "null"}).maybe is None
    assert apply_overrides(Cfg(), {"lr": "1"}).lr == 1.0 and isinstance(apply_overrides(Cfg(), {"lr": "1"}).lr, float)
    assert apply_overrides(Cfg(), {"betas": "(0.1, 0.2)"}).betas == (0.1, 0.2)


def test_original_config_unchanged():
    base = Cfg()
    apply_overrides(base, {"lr": "1e-3"})
    assert base.lr == 1e-4


@pytest.mark.parametrize("pair,msg", [
    ("lr=fast", "expected float"), ("steps=1.5", "expected int"), ("flag=maybe", "expected bool"),
    ("mode=c", "one of a|b"), ("betas=[1,2,3]", "expected 2 values"), ("steps=true", "expected int"),
    ("points=[[0,1],[x]]", "expected"), ("steps=-1", "steps must be >= 0"),
])
def test_bad_values_are_config_errors(pair, msg):
    with pytest.raises(ConfigError, match=msg):
        apply_overrides(Cfg(), parse_overrides([pair]))


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError) as e:
        apply_overrides(Cfg(), {"learning_rate": "1"}, method="dcgan")
    assert "unknown config key 'learning_rate' for method 'dcgan'" in str(e.value)
    assert "lr, maybe, mode" in str(e.value)


@pytest.mark.parametrize("pair", ["noequals", "=3", ""])
def test_malformed_pairs(pair):
    with pytest.raises(ConfigError):
        parse_overrides([pair])


@dataclass(frozen=True)
class Inner(Config):
    lr: float = 1e-4
    size: int = 8

    def validate(self):
        if self.lr <= 0:
            raise ConfigError("lr must be positive")


@dataclass(frozen=True)
class Outer(Config):
    RENAMED: ClassVar[dict[str, str]] = {"inner_lr": "inner.lr", "inner": "inner.size"}
    scale: int = 2
    preset: Literal["free", "fixed"] = "free"
    steps: int = 10
    inner: Inner = field(default_factory=Inner)

    def implied(self):
        fixed = {"inner.size": (4 * self.scale, f"scale={self.scale}")}
        if self.preset == "fixed":
            fixed["steps"] = (100, "preset=fixed")
        return fixed


def test_nested_keys_are_set_with_a_dot_and_validated_with_their_path():
    cfg = apply_overrides(Outer(), parse_overrides(["inner.lr=3e-4", "scale=3"]))
    assert cfg.inner.lr == 3e-4 and cfg.inner.size == 12 and Outer().inner.size == 8 * 1  # default untouched
    assert apply_overrides(Outer(), {"inner": {"lr": 0.5}}).inner.lr == 0.5  # as run.json holds it
    with pytest.raises(ConfigError, match="^inner: lr must be positive$"):
        apply_overrides(Outer(), {"inner.lr": "-1"})
    with pytest.raises(ConfigError, match="unknown config key 'inner.depth'; valid keys: inner.lr, inner.size"):
        apply_overrides(Outer(), {"inner.depth": "1"})
    with pytest.raises(ConfigError, match="'scale' is not a nested config"):
        apply_overrides(Outer(), {"scale.x": "1"})
    with pytest.raises(ConfigError, match="'inner' is now 'inner.size'"):  # a renamed key given its old way
        apply_overrides(Outer(), {"inner": "3"})


def test_renamed_keys_are_one_line_errors_naming_the_new_key_and_old_records_are_read():
    with pytest.raises(ConfigError, match=r"^config key 'inner_lr' is now 'inner.lr': --set inner.lr=...$"):
        apply_overrides(Outer(), {"inner_lr": "1"})
    assert upgrade_recorded(Outer, {"inner_lr": 0.5, "scale": 2, "inner": 8}) == \
        {"inner.lr": 0.5, "scale": 2, "inner.size": 8}
    assert upgrade_recorded(Outer, {"inner": {"lr": 0.5}}) == {"inner": {"lr": 0.5}}  # today's form stays


def test_a_value_against_what_another_field_fixes_is_refused_never_overridden():
    cfg = apply_overrides(Outer(), {"preset": "fixed"})
    assert cfg.steps == 100 and cfg.inner.size == 8
    assert apply_overrides(Outer(), {"preset": "fixed", "steps": "100"}).steps == 100  # agreeing is fine
    with pytest.raises(ConfigError, match="steps=5 contradicts preset=fixed, which sets steps=100"):
        apply_overrides(Outer(), {"preset": "fixed", "steps": "5"})
    with pytest.raises(ConfigError, match="inner.size=3 contradicts scale=2, which sets inner.size=8"):
        apply_overrides(Outer(), {"inner.size": "3"})
    assert apply_overrides(Outer(), to_jsonable(cfg)) == cfg  # a recorded config names every key: no conflict


def test_config_keys_list_nested_keys_with_their_defaults():
    keys = {k: (tp, default) for k, tp, default, _ in config_keys(Outer())}
    assert keys["inner.lr"] == ("float", 1e-4) and keys["scale"] == ("int", 2) and "inner" not in keys


def test_protocol_table1_with_an_explicit_eval_images_or_mode_is_an_error():
    from harness.registry import get_method

    cfg = get_method("nsbgan").config
    assert apply_overrides(cfg, {"protocol": "table1"}).eval_images == 50_000
    for key, value in (("eval_images", "100"), ("mode", "periodization")):
        with pytest.raises(ConfigError, match=f"{key}={value} contradicts protocol=table1"):
            apply_overrides(cfg, {"protocol": "table1", key: value})
    with pytest.raises(ConfigError, match="'sampler_lr_g' is now 'sampler.lr_g'"):
        apply_overrides(cfg, {"sampler_lr_g": "2e-4"})
    with pytest.raises(ConfigError, match="'sampler' is now 'sampler_model'"):
        apply_overrides(cfg, {"sampler": "biggan"})
    assert apply_overrides(cfg, {"sampler.lr_g": "2e-4"}).sampler.lr_g == 2e-4


def test_round_trip_through_json():
    cfg = apply_overrides(Cfg(), {"points": "[[0,0.1],[1,1]]", "maybe": "7"})
    assert apply_overrides(Cfg(), to_jsonable(cfg)) == cfg


@pytest.mark.parametrize("method,key,value,message", [
    ("dcgan", "lr_g", "NaN", "expected a finite number"),
    ("dcgan", "lr_d", "Infinity", "expected a finite number"),
    ("dcgan", "lr_g", "-1", "lr_g and lr_d must be positive"),
    ("dcgan", "betas", "[1.5,0.9]", "betas must lie in"),
    ("nsbgan", "lr", "0", "lr, eps, eval_images and eval_batch_size must be positive"),
    ("biggan", "ema_decay", "1.0", "ema_decay and betas must lie in"),
])
def test_out_of_range_values_are_refused_before_anything_is_written(cli, tmp_path, method, key, value, message):
    r = cli("run", "--method", method, "--budget", "1s", "--run-dir", tmp_path / "r", "--set", f"{key}={value}",
            "--no-energy", "--fid-backbone", "standin")
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
