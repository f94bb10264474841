"""Config checks: types and choices while loading (medseg.config), names and resume (config_validation)."""

from __future__ import annotations

import pytest

from medseg.config import Config, load_config
from medseg.config_validation import (
    check_registry_names,
    check_resume_config,
    config_differences,
    override_keys,
)
from medseg.errors import ConfigError


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=abc", r"^config key train\.epochs = 'abc': expected an integer$"),
        ("train.epochs=1.5", r"train\.epochs = 1\.5: expected an integer"),
        ("train.epochs=true", r"train\.epochs = True: expected an integer"),
        ("optim.lr=fast", r"optim\.lr = 'fast': expected a number"),
        ("train.deterministic=maybe", r"train\.deterministic = 'maybe': expected true or false"),
        ("data.image_size=abc", r"data\.image_size = 'abc': expected a list of an integer"),
        ("data.image_size=[1, 2.5]", r"data\.image_size\[1\] = 2\.5: expected an integer"),
        ("model.options=[1]", r"model\.options = \[1\]: expected a mapping"),
        ("train.device=3", r"train\.device = 3: expected a string"),
        ("data.intensity=loud", r"data\.intensity = 'loud': expected one of zscore, minmax, none"),
        ("eval.protocols=[volumetric, paper]", r"eval\.protocols = 'paper': expected one of volumetric"),
        ("data.split.method=loo", r"data\.split\.method = 'loo': expected one of holdout, kfold"),
    ],
)
def test_wrong_types_and_choices_are_one_line_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_lossless_conversions_are_kept() -> None:
    overrides = ["train.epochs=3.0", "optim.lr=1", "optim.weight_decay=1e-5", "train.grad_clip=none"]
    cfg = load_config(None, overrides)
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.weight_decay == pytest.approx(1e-5) and cfg.train.grad_clip is None


def test_registry_names_list_the_available_ones() -> None:
    check_registry_names(Config())
    for override, message in (
        ("model.name=unett", r"model\.name = 'unett': unknown model; available: .*\bunet\b"),
        ("loss.name=dise", r"loss\.name = 'dise': unknown loss; available: .*\bdice\b"),
        ("optim.name=adan", r"optim\.name = 'adan': unknown optim; available: adam, adamw, sam, sgd"),
        ("optim.scheduler=step", r"optim\.scheduler = 'step': unknown scheduler; available: budget, con"),
        ("data.source=kaggle", r"data\.source = 'kaggle': unknown source; available: busi, drive"),
        ("data.test_source=kaggle", r"data\.test_source = 'kaggle': unknown source"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_registry_names(load_config(None, [override]))


def test_config_differences_and_resume_check() -> None:
    stored = load_config(None, ["train.epochs=2"])
    same_but_longer = load_config(None, ["train.epochs=5", "train.progress=false"])
    assert config_differences(same_but_longer, stored) == []
    check_resume_config(same_but_longer, stored)
    other = load_config(None, ["optim.lr=0.01", "model.options={features: [8, 16]}"])
    diffs = config_differences(other, stored)
    assert diffs == [
        "model.options: stored {'features': [16, 32, 64, 128]} → given {'features': [8, 16]}",
        "optim.lr: stored 0.003 → given 0.01",
    ]
    with pytest.raises(ConfigError, match=r"--resume: the given config differs .*optim\.lr: stored 0\.003"):
        check_resume_config(other, stored)
    check_resume_config(other, stored, allowed={"optim.lr", "model.options"})
    with pytest.raises(ConfigError, match=r"model\.options"):
        check_resume_config(other, stored, allowed={"optim.lr"})


def test_override_keys() -> None:
    assert override_keys(["optim.lr=0.1", "train.epochs=3"]) == {"optim.lr", "train.epochs"}
    with pytest.raises(ConfigError, match="not of the form key=value"):
        override_keys(["optim.lr"])
