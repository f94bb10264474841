"""A checkpoint's postprocessing: decided on validation cases, stored, applied by predict/evaluate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import torch
from typer.testing import CliRunner

from medseg.cli import app
from medseg.config import EvalConfig, load_config
from medseg.data.sample import Sample
from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.engine.choose_postprocessing import choose_postprocessing, predict_label_map
from medseg.engine.evaluate import evaluate_model
from medseg.engine.inference import load_model, sliding_window_from_config
from medseg.engine.postprocess import (
    POSTPROCESSING_KEY,
    postprocess_labels,
    store_postprocessing,
    stored_postprocessing,
)
from medseg.engine.predict import predict_files
from medseg.errors import DataError
from medseg.metrics.postprocess import (
    PostprocessingDecision,
    decide_postprocessing,
    largest_component,
    largest_component_per_class,
)
from medseg.models import build_from_config

SHAPE = (12, 40, 40)
COMMON = [
    "data.spatial_dims=3",
    "data.patch_size=[8, 16, 16]",
    "model.name=unet",
    "model.options={features: [4, 8]}",
]


def make_checkpoint(path: Path, num_classes: int | None) -> Path:
    """A random 3D U-Net whose classes are all predicted somewhere, saved as a medseg checkpoint."""
    overrides = [*COMMON, "eval.threshold=0.5"]
    if num_classes is not None:
        overrides.append(f"data.num_classes={num_classes}")
    cfg = load_config(None, overrides)
    torch.manual_seed(3)
    model = build_from_config(cfg).eval()
    with torch.no_grad():  # centre the logits so that every class wins somewhere
        logits = model(torch.randn(2, 1, 8, 16, 16))
        model.head.bias.sub_(logits.mean(dim=(0, 2, 3, 4)) if num_classes else logits.median())
    extra = {"class_values": [0, 3, 5][:num_classes]} if num_classes else {}
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), **extra}, path)


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def sample(seed: int, truth: np.ndarray, num_classes: int | None) -> Sample:
    meta = {"num_classes": num_classes} if num_classes else {}
    return Sample(image(seed)[None], {"expert": truth}, "expert", (1.0, 1.0, 1.0), f"case{seed}", meta=meta)


def components(mask: np.ndarray) -> int:
    import cc3d

    return int(cc3d.connected_components(mask.astype(np.uint8), connectivity=26).max())


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("mc") / "best.pt", 3)


def raw_classes(checkpoint: Path, seed: int = 0) -> np.ndarray:
    model, cfg = load_model(checkpoint)
    return predict_label_map(
        model, cfg, sample(seed, np.zeros(SHAPE, np.uint8), model.num_classes), torch.device("cpu")
    )


def test_a_checkpoint_without_a_decision_has_none(tmp_path: Path) -> None:
    assert stored_postprocessing({"model": {}}) is None
    labels = np.array([[1, 0, 1]])
    assert postprocess_labels(labels, None) is labels
    with pytest.raises(DataError, match=r"best\.pt: .*not a mapping"):
        stored_postprocessing({POSTPROCESSING_KEY: [1]}, tmp_path / "best.pt")
    with pytest.raises(DataError, match=r"best\.pt: unreadable postprocessing"):
        stored_postprocessing({POSTPROCESSING_KEY: {"num_classes": 2}}, tmp_path / "best.pt")


def test_store_keeps_the_rest_of_the_checkpoint(multiclass: Path, tmp_path: Path) -> None:
    path = tmp_path / "copy.pt"
    path.write_bytes(multiclass.read_bytes())
    decision = PostprocessingDecision(3, False, (2,))
    store_postprocessing(path, decision)
    state, original = load_checkpoint(path), load_checkpoint(multiclass)
    assert stored_postprocessing(state, path) == decision
    assert state["class_values"] == original["class_values"] and state.keys() - original.keys() == {
        POSTPROCESSING_KEY
    }
    assert all(torch.equal(state["model"][k], original["model"][k]) for k in original["model"])


def test_predict_applies_the_stored_decision_and_old_checkpoints_predict_unchanged(
    multiclass: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "in" / "ct.nrrd"
    volume.parent.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(image()), str(volume))
    raw = raw_classes(multiclass)
    assert max(components(raw == c) for c in (1, 2)) > 1  # the random model leaves stray blobs

    def predicted(checkpoint: Path, out: str, **options: bool) -> np.ndarray:
        (item,) = predict_files(checkpoint, [volume], tmp_path / out, device="cpu", **options)
        return sitk.GetArrayFromImage(sitk.ReadImage(str(item.mask)))

    values = np.array([0, 3, 5])
    old = predicted(multiclass, "old")  # no decision stored: the plain argmax, in label values
    np.testing.assert_array_equal(old, values[raw])

    decided = tmp_path / "decided.pt"
    decided.write_bytes(multiclass.read_bytes())
    store_postprocessing(decided, PostprocessingDecision(3, False, (1, 2)))
    np.testing.assert_array_equal(predicted(decided, "new"), values[largest_component_per_class(raw, [1, 2])])
    np.testing.assert_array_equal(predicted(decided, "off", postprocess=False), old)
    done = CliRunner().invoke(
        app, ["predict", str(decided), str(volume), "--out", str(tmp_path / "cli"), "--no-postprocess"]
    )
    assert done.exit_code == 0, done.output
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "cli" / "ct_mask.nrrd"))), old
    )


def test_choose_postprocessing_decides_on_the_predictions_and_stores_it(
    multiclass: Path, tmp_path: Path
) -> None:
    path = tmp_path / "best.pt"
    path.write_bytes(multiclass.read_bytes())
    raw = [raw_classes(path, seed) for seed in (0, 1)]
    # case 0's truth is its prediction without stray blobs (keeping the largest component helps);
    # case 1's truth is its own prediction (any removal hurts)
    truths = [largest_component_per_class(raw[0], [1, 2]), raw[1]]
    samples = [sample(seed, truth, 3) for seed, truth in zip((0, 1), truths, strict=True)]
    decision = choose_postprocessing(path, samples, device="cpu")
    assert decision == decide_postprocessing(raw, truths, 3)
    assert stored_postprocessing(load_checkpoint(path), path) == decision
    assert decision.n_cases == 2 and [s.step for s in decision.steps] == ["foreground", "class 1", "class 2"]


def test_binary_checkpoints_use_the_same_rule(tmp_path: Path) -> None:
    path = make_checkpoint(tmp_path / "binary.pt", None)
    raw = raw_classes(path)
    assert set(np.unique(raw)) == {0, 1} and components(raw) > 1
    decision = choose_postprocessing(
        path, [sample(0, largest_component(raw).astype(np.uint8), None)], device="cpu"
    )
    assert decision.largest_component_classes == (1,) and [s.step for s in decision.steps] == ["class 1"]
    hurt = choose_postprocessing(path, [sample(0, raw, None)], device="cpu")
    assert not hurt.changes_anything and hurt.steps[0].dice_before == 1.0


def test_evaluation_scores_the_postprocessed_prediction(multiclass: Path) -> None:
    model, cfg = load_model(multiclass)
    raw = raw_classes(multiclass)
    truth = largest_component_per_class(raw, [1, 2])
    decision = PostprocessingDecision(3, False, (1, 2))
    kwargs = {"window": sliding_window_from_config(cfg), "progress": False}
    args = (model, [sample(0, truth, 3)], (0, 0), cfg.data.intensity, EvalConfig(), torch.device("cpu"))
    plain, _ = evaluate_model(*args, **kwargs)
    processed, predictions = evaluate_model(*args, postprocessing=decision, **kwargs)
    assert processed.per_patient["dice"].iloc[0] == pytest.approx(1.0)
    assert plain.per_patient["dice"].iloc[0] < 1.0 and "postprocessing" not in plain.summary
    assert processed.summary["postprocessing"] == decision.summary()
    np.testing.assert_array_equal(next(iter(predictions.values())), truth)


def test_predict_mirroring_is_switchable(multiclass: Path, tmp_path: Path) -> None:
    volume = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(image()), str(volume))
    model, cfg = load_model(multiclass)
    assert cfg.inference.tta_flips is False
    cfg.inference.tta_flips = True
    mirrored = predict_label_map(model, cfg, sample(0, np.zeros(SHAPE, np.uint8), 3), torch.device("cpu"))
    assert not np.array_equal(mirrored, raw_classes(multiclass))  # a random model is not flip-invariant
    done = CliRunner().invoke(
        app, ["predict", str(multiclass), str(volume), "--out", str(tmp_path / "m"), "--mirror"]
    )
    assert done.exit_code == 0, done.output
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "m" / "ct_mask.nrrd")))
    np.testing.assert_array_equal(written, np.array([0, 3, 5])[mirrored])


def test_a_2d_multiclass_checkpoint_gets_a_label_map_on_the_input_grid(tmp_path: Path) -> None:
    # the 2D multi-class path predicts slice by slice; it used to be refused as "3D only"
    cfg = load_config(
        None,
        [
            "model.name=unet",
            "model.options={features: [4, 8]}",
            "data.num_classes=3",
            "data.image_size=[32, 32]",
        ],
    )
    torch.manual_seed(0)
    model = build_from_config(cfg).eval()
    path = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "2d.pt")
    loaded, loaded_cfg = load_model(path)
    shape = (5, 40, 36)
    case = Sample(
        image(0)[None, :5, :40, :36],
        {"expert": np.zeros(shape, np.uint8)},
        "expert",
        (1.0, 1.0, 1.0),
        "case0",
        meta={"num_classes": 3},
    )
    labels = predict_label_map(loaded, loaded_cfg, case, torch.device("cpu"))
    assert labels.shape == shape and set(np.unique(labels)) <= {0, 1, 2}
