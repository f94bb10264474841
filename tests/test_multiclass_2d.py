"""Multi-class segmentation on the 2D path, end to end: a synthetic set of three shapes on noise
(disc, square, triangle; the triangle rare), trained for a few dozen steps with the softmax Dice +
CE loss, evaluated per class and predicted as label maps with the data set's values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from medseg import losses
from medseg.config import EvalConfig, load_config
from medseg.data import sources
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.evaluate import evaluate_model
from medseg.engine.inference import load_model
from medseg.engine.predict import predict_files
from medseg.engine.train import train

LABEL_VALUES = (40, 80, 120)  # disc, square, triangle: label values that are not class indices
SIZE = 32


def shapes_image(rng: np.random.Generator, with_triangle: bool) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image with a bright disc, a brighter square and (maybe) a dark triangle, and its
    label map in :data:`LABEL_VALUES`."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = np.zeros((SIZE, SIZE), np.uint8)
    cy, cx, r = rng.integers(7, 11), rng.integers(7, 11), rng.integers(4, 7)
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r**2] = LABEL_VALUES[0]
    y0, x0, side = rng.integers(18, 22), rng.integers(4, 10), rng.integers(6, 9)
    labels[y0 : y0 + side, x0 : x0 + side] = LABEL_VALUES[1]
    if with_triangle:
        y0, x0, height = rng.integers(12, 16), rng.integers(17, 20), rng.integers(10, 13)
        inside = (yy >= y0) & (yy < y0 + height) & (np.abs(xx - x0 - height / 2) <= (yy - y0) / 2)
        labels[inside] = LABEL_VALUES[2]
    brightness = {0: 100.0, LABEL_VALUES[0]: 160.0, LABEL_VALUES[1]: 220.0, LABEL_VALUES[2]: 20.0}
    image = np.vectorize(brightness.get)(labels) + rng.normal(0.0, 12.0, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def shape_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for i in range(20):
        image, labels = shapes_image(rng, with_triangle=i % 3 == 0)  # the triangle: 1 image in 3
        Image.fromarray(image).save(root / f"case{i:02d}_image.png")
        Image.fromarray(labels).save(root / f"case{i:02d}_label.png")
    return root


def _config(root: Path, out: Path, extra: list[str] = ()) -> object:
    cfg = load_config(
        None,
        [
            "data.source=folder",
            f"data.options={{root: '{root}', images: '*_image.png', masks: '*_label.png', "
            f"labels: {list(LABEL_VALUES)}}}",
            "data.num_classes=4",
            f"data.image_size=[{SIZE}, {SIZE}]",
            "data.foreground_share=0.5",
            "data.split.val_cases=[case16, case17, case18, case19]",
            "model.name=unet",
            "model.options={features: [16, 32]}",
            "loss.name=dice_ce",
            "optim.lr=0.01",
            "optim.scheduler=constant",
            "augment.enabled=false",
            "train.epochs=12",
            "train.batch_size=4",
            "train.progress=false",
            "train.tensorboard=false",
            "eval.n_overlays=2",
            *extra,
        ],
    )
    cfg.output_dir = str(out)
    return cfg


@pytest.mark.parametrize("name", ["ce", "dice", "dice_ce"])
def test_the_losses_take_k_channels_and_class_index_targets(name: str) -> None:
    loss = losses.build(name)
    target = torch.randint(0, 4, (2, 1, 8, 8)).float()
    perfect = torch.nn.functional.one_hot(target[:, 0].long(), 4).movedim(-1, 1).float() * 20.0
    assert loss(perfect, target) < 0.01 < loss(torch.zeros(2, 4, 8, 8), target)


def test_2d_multiclass_training_learns_every_class_and_predicts_label_values(
    shape_folder: Path, tmp_path: Path
) -> None:
    result = train(_config(shape_folder, tmp_path / "run"))
    history = pd.DataFrame(result.history)
    assert len(history) == 12  # 16 images, batch 4: 48 steps
    assert history["train_loss"].iloc[-1] < 0.5 * history["train_loss"].iloc[0]
    assert history["val_dice"].iloc[-1] > history["val_dice"].iloc[0]
    state = load_checkpoint(result.last_checkpoint)
    assert state["class_values"] == [0, *LABEL_VALUES]

    # every class is predicted on the training images: a Dice > 0 for each
    model, cfg = load_model(result.last_checkpoint)
    assert model.num_classes == 4
    samples = sources.build("folder", **cfg.data.options).load_all()[:16]
    evaluation, predictions = evaluate_model(
        model, samples, cfg.data.image_size, cfg.data.intensity, EvalConfig(), torch.device("cpu"), False
    )
    per_class = evaluation.summary["per_class"]
    assert list(per_class) == [f"label {v}" for v in LABEL_VALUES]
    dice = {name: per_class[name]["dice"]["mean"] for name in per_class}
    assert all(value > 0.0 for value in dice.values()), dice
    assert per_class["label 120"]["n_both_empty"] > 0  # the rare triangle: absent from two images in three
    assert set().union(*(np.unique(p).tolist() for p in predictions.values())) == {0, 1, 2, 3}

    # predict writes label maps in the data set's values, at the input's size
    inputs = [shape_folder / f"case{i:02d}_image.png" for i in (0, 4, 16)]
    out = tmp_path / "pred"
    predicted = predict_files(result.last_checkpoint, inputs, out, device="cpu", save_overlays=True)
    values = set()
    for item in predicted:
        mask = np.asarray(Image.open(item.mask))
        assert mask.shape == (SIZE, SIZE) and item.overlay is not None and item.overlay.is_file()
        values |= set(np.unique(mask).tolist())
    assert values <= {0, *LABEL_VALUES} and len(values - {0}) >= 2


def test_2d_multiclass_trains_with_device_augmentation(shape_folder: Path, tmp_path: Path) -> None:
    extra = ["train.augment_on=device", "augment.enabled=true", "augment.prob=1.0", "train.epochs=2"]
    result = train(_config(shape_folder, tmp_path / "run", extra))
    assert len(result.history) == 2 and all(np.isfinite(h["train_loss"]) for h in result.history)
