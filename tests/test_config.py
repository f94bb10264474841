from pathlib import Path

import pytest

from medseg.config import (
    Config,
    apply_overrides,
    config_diff,
    config_from_dict,
    flatten_config,
    load_config,
    parse_override,
    save_config,
)
from medseg.errors import ConfigError


def test_defaults_are_the_demo_recipe() -> None:
    cfg = Config()
    assert cfg.data.source == "phantom"
    assert cfg.model.name == "unet"
    assert cfg.eval.hd95_mode == "pooled"


def test_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nmodel:\n  options:\n    features: [8, 16]\n")
    cfg = load_config(path, ["train.batch_size=4", "optim.lr=0.01", "data.image_size=[64, 64]"])
    assert cfg.train.epochs == 3
    assert cfg.train.batch_size == 4
    assert cfg.optim.lr == pytest.approx(0.01)
    assert cfg.model.options == {"features": [8, 16]}
    assert cfg.data.image_size == [64, 64]
    assert cfg.data.split.val_fraction == pytest.approx(0.2)  # untouched nested default


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="epoch"):
        load_config(None, ["train.epoch=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {}\n")
    with pytest.raises(ConfigError, match="trian"):
        load_config(bad)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(broken)


def test_parse_override() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=none") == ("a", None)
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_round_trip_and_diff(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.epochs=7"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert config_diff(cfg) == {"train.epochs": 7}
    assert config_from_dict(cfg.to_dict()) == cfg


def test_repo_configs_load() -> None:
    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(p for p in configs.glob("*.yaml") if not p.name.startswith("compare_")):
        load_config(path)


def test_apply_overrides_returns_a_validated_copy() -> None:
    base = Config()
    changed = apply_overrides(base, ["train.epochs=3", "model.options={features: [8, 16]}"])
    assert changed.train.epochs == 3 and base.train.epochs != 3
    with pytest.raises(ConfigError):
        apply_overrides(base, ["train.nope=1"])


def test_exponent_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    # YAML 1.1 reads "1e-3" as a string; configs and overrides both turn it into a float
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n")
    assert load_config(path).optim.lr == 0.001
    assert load_config(None, ["optim.lr=5e-5"]).optim.lr == 5e-5


def test_flatten_config_keeps_options_whole() -> None:
    tree = {"train": {"lr": 0.1, "sched": {"name": "poly"}}, "model": {"options": {"a": {"b": 1}}}, "x": {}}
    assert flatten_config(tree) == {
        "train.lr": 0.1,
        "train.sched.name": "poly",
        "model.options": {"a": {"b": 1}},
        "x": {},
    }
