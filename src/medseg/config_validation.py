"""Checks of a :class:`~medseg.config.Config` that need the registries, run before training starts.

Types and fixed choices are checked while the config is loaded (:mod:`medseg.config`); here the
names that pick a registered component (model, loss, optimizer, scheduler, data source), and
whether a run may resume with the config it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from medseg.config import Config, flatten_config
from medseg.errors import ConfigError

# keys that may differ between a stored run and its resumption without changing what is trained:
# where and how it runs (the global batch is the same for any accumulation, engine/README "DDP")
RESUME_FREE_KEYS = (
    "output_dir",
    "train.epochs",
    "train.progress",
    "train.num_workers",
    "train.tensorboard",
    "train.device",
    "train.accumulate_steps",
    "train.find_unused_parameters",
)


def _registries() -> dict[str, Callable[[], list[str]]]:
    from medseg import losses, models, optim
    from medseg.data.sources import SOURCES

    return {
        "model.name": models.available,
        "loss.name": losses.available,
        "optim.name": optim.available,
        "optim.scheduler": optim.available_schedulers,
        "data.source": SOURCES.available,
        "data.test_source": SOURCES.available,
    }


_KINDS = {"optim.scheduler": "scheduler", "data.source": "source", "data.test_source": "source"}


def check_registry_names(cfg: Config) -> None:
    """Raise a :class:`ConfigError` naming the key, the value and the available names."""
    flat = flatten_config(cfg.to_dict())
    for key, available in _registries().items():
        value = flat.get(key)
        if value is None and key == "data.test_source":
            continue
        names = available()
        if value not in names:
            kind = _KINDS.get(key, key.split(".")[0])
            raise ConfigError(f"config key {key} = {value!r}: unknown {kind}; available: {', '.join(names)}")


def config_differences(
    requested: Config, stored: Config, ignore: Iterable[str] = RESUME_FREE_KEYS
) -> list[str]:
    """``key: stored → requested`` for every entry that differs (``ignore`` aside)."""
    skip = set(ignore)
    old, new = flatten_config(stored.to_dict()), flatten_config(requested.to_dict())
    missing = object()
    out = []
    for key in sorted(set(old) | set(new)):
        if key in skip:
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a != b:
            out.append(f"{key}: stored {_show(a)} → given {_show(b)}")
    return out


def _show(value: Any) -> str:
    plain = (str, int, float, bool, list, dict, type(None))
    return repr(value) if isinstance(value, plain) else "(absent)"


def override_keys(overrides: Iterable[str]) -> set[str]:
    """The dotted keys of ``key=value`` overrides (``--set``)."""
    from medseg.config import parse_override

    return {parse_override(o)[0] for o in overrides}


def check_resume_config(requested: Config, stored: Config, allowed: Iterable[str] = ()) -> None:
    """Raise a :class:`ConfigError` listing how ``requested`` differs from the stored run's config.

    Differences in ``allowed`` keys (or below them: ``model.options`` allows ``model.options.x``)
    are accepted: the user changes them on purpose with ``--set``.
    """
    allowed = set(allowed)
    differ = [
        d
        for d in config_differences(requested, stored)
        if not any(d.split(":", 1)[0] == k or d.startswith(k + ".") for k in allowed)
    ]
    if differ:
        raise ConfigError(
            "--resume: the given config differs from the stored run's config ("
            + "; ".join(differ)
            + "). Resume without a config file to continue the stored run, or change a key on "
            "purpose with --set key=value"
        )
