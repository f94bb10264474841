"""Training promptable models through the engine: box prompts, dict outputs, learned loss weights, SAM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from medseg.config import load_config
from medseg.data.prompts import PromptSampler
from medseg.data.sample import Sample
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.inference import load_model
from medseg.engine.predict import predict_probabilities
from medseg.engine.train import train
from medseg.errors import ConfigError
from medseg.models import build

QUIET = Console(quiet=True)


def test_prompt_sampler_tight_boxes_jitter_and_empty_targets() -> None:
    target = torch.zeros(2, 1, 10, 12)
    target[0, 0, 2:5, 3:9] = 1  # rows 2..4, columns 3..8 → (x0, y0, x1, y1) = (3, 2, 8, 4)
    tight = PromptSampler(0).boxes(target, jitter=False)
    assert tight[0].tolist() == [3.0, 2.0, 8.0, 4.0]
    assert tight[1].tolist() == [0.0, 0.0, 11.0, 9.0]  # empty target → the whole image
    torch.manual_seed(0)
    jittered = PromptSampler(2).boxes(target.repeat(50, 1, 1, 1)[:50], jitter=True)[0::2]
    grow = (jittered - tight[0]) * torch.tensor([-1, -1, 1, 1])
    assert grow.min() >= 0 and grow.max() <= 2 and grow.max() > 0  # outward by 0..shift
    with pytest.raises(ValueError, match="B×1×H×W"):
        PromptSampler(0).boxes(torch.zeros(1, 10, 10))


def test_prompt_sampler_for_model_checks_the_input_size() -> None:
    cfg = load_config(None, ["data.image_size=[32, 32]"])
    assert PromptSampler.for_model(build("unet"), cfg) is None
    model = build("litemedsam", variant="tiny", img_size=32)
    sampler = PromptSampler.for_model(model, cfg)
    assert sampler is not None and sampler.shift == 1  # MedSAM's 5 px at 256, scaled to 32
    cfg.data.image_size = [64, 64]
    with pytest.raises(ConfigError, match="image_size"):
        PromptSampler.for_model(model, cfg)


def _cfg(tmp_path: Path, *extra: str):
    cfg = load_config(
        None,
        [
            "data.options={n_patients: 3, seed: 0, shape: [4, 32, 32]}",
            "data.image_size=[32, 32]",
            "data.intensity=minmax",
            "model.name=litemedsam",
            "model.options={variant: tiny}",
            "optim.lr=1e-3",
            "train.epochs=1",
            "train.batch_size=2",
            "train.progress=false",
            "train.tensorboard=false",
            *extra,
        ],
    )
    cfg.output_dir = str(tmp_path / "run")
    return cfg


def test_litemedsam_trains_with_umedsam_and_sam_and_resumes(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "loss.name=umedsam", "optim.name=sam", "optim.options={base: adamw, rho: 0.05}")
    result = train(cfg, console=QUIET)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    state = load_checkpoint(result.last_checkpoint)
    sigmas = [k for k in state["loss"] if "sigma" in k or "log" in k]
    assert sigmas, f"the learned loss weights are checkpointed, got {list(state['loss'])}"
    # the σ_k are in a param group without weight decay
    groups = state["optimizer"]["param_groups"]
    assert any(g["weight_decay"] == 0 for g in groups) and len(groups) == 2
    cfg.train.epochs = 2
    resumed = train(cfg, resume=True, console=QUIET)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_litemedsam_baseline_loss_reads_the_iou_head(tmp_path: Path) -> None:
    result = train(_cfg(tmp_path, "loss.name=litemedsam_baseline", "optim.name=adamw"), console=QUIET)
    assert np.isfinite(result.history[0]["val_loss"])
    model, stored = load_model(result.best_checkpoint)
    image = np.random.default_rng(0).random((1, 2, 32, 32)).astype(np.float32)
    mask = np.zeros((2, 32, 32), np.uint8)
    mask[0, 8:20, 8:20] = 1  # slice 1 has no object: nothing to prompt, predicted empty
    sample = Sample(image, {"expert": mask}, "expert", (1.0, 1.0, 1.0), "case")
    probs = predict_probabilities(model, sample, [32, 32], "minmax", torch.device("cpu"))
    assert probs.shape == (2, 32, 32) and probs[1].max() < 1e-6
