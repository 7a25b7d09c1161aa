from dataclasses import dataclass
from typing import Literal

import pytest

from harness.config import apply_overrides, parse_overrides, to_jsonable
from harness.errors import ConfigError


@dataclass(frozen=True)
class Cfg:
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
