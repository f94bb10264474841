"""Multi-class (softmax) segmentation on the 3D path: class-index masks from the folder source's
``labels``, ``data.num_classes`` → K logit channels, per-class validation/evaluation, label maps."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk  # noqa: N813
import torch
from torch import nn

from medseg.config import EvalConfig, load_config
from medseg.data import sources
from medseg.data.sample import Sample
from medseg.data.volumes import VolumeDataset, sample_patch_start
from medseg.engine.checkpoint import load_checkpoint
from medseg.engine.evaluate import evaluate_checkpoint, evaluate_files, evaluate_model
from medseg.engine.inference import SlidingWindow, class_index_to_value, load_model
from medseg.engine.predict import predict_files
from medseg.engine.train import train
from medseg.engine.validation import validate_volumes
from medseg.errors import ConfigError, DataError
from medseg.losses import build as build_loss
from medseg.models import SegmentationModel, build_from_config

SPACING_XYZ = (0.5, 0.5, 2.0)  # ITK order; medseg's (sz, sy, sx) is (2.0, 0.5, 0.5)


def _write(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_XYZ)
    sitk.WriteImage(image, str(path))


def _labels(shift: int = 0) -> np.ndarray:
    """8×24×24 label map with values 0, 3 (a block), 5 (a bar) and 2 (not a class: background)."""
    lab = np.zeros((8, 24, 24), np.int16)
    lab[2:6, 4 + shift : 12 + shift, 4:12] = 3
    lab[1:7, 14:20, 6 + shift : 20] = 5
    lab[0, 0:3, 0:3] = 2
    return lab


def _write_case(root: Path, name: str, shift: int = 0) -> np.ndarray:
    lab = _labels(shift)
    rng = np.random.default_rng(shift)
    # distinct intensities per label, plus noise: learnable in a couple of epochs
    image = (lab * 100 + rng.normal(0, 20, lab.shape)).astype(np.float32)
    _write(root / f"{name}_image.nrrd", image)
    _write(root / f"{name}_label.nrrd", lab)
    return lab


@pytest.fixture()
def label_folder(tmp_path: Path) -> Path:
    root = tmp_path / "vols"
    root.mkdir()
    _write_case(root, "a", 0)
    _write_case(root, "b", 2)
    return root


# ---------------------------------------------------------------- source and sample
def test_folder_labels_become_class_indices(label_folder: Path) -> None:
    src = sources.build(
        "folder", root=label_folder, images="*_image.nrrd", masks="*_label.nrrd", labels=[3, 5]
    )
    (sample,) = src.load_case("a")
    lab = _labels()
    expected = np.select([lab == 3, lab == 5], [1, 2], 0)
    np.testing.assert_array_equal(sample.target_mask, expected)  # 2 is no class: background
    assert sample.target_mask.dtype == np.uint8
    assert sample.meta["num_classes"] == 3 and sample.meta["class_values"] == [0, 3, 5]
    # without labels the same file is binarised only on purpose (label: any = non-zero is
    # foreground); by default a multi-label map is an error (the mask policy)
    (binary,) = sources.build(
        "folder", root=label_folder, images="*_image.nrrd", masks="*_label.nrrd", label="any"
    ).load_case("a")
    np.testing.assert_array_equal(binary.target_mask, (lab != 0).astype(np.uint8))
    assert "num_classes" not in binary.meta
    with pytest.raises(DataError, match=r"a_label\.nrrd: mask holds several labels \{0, 2, 3, 5\}"):
        sources.build("folder", root=label_folder, images="*_image.nrrd", masks="*_label.nrrd").load_case("a")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"labels": [3, 5], "label": 3}, "either"),
        ({"labels": [0, 3]}, "non-zero"),
        ({"labels": [3, 3]}, "distinct"),
        ({"labels": []}, "distinct"),
        ({"labels": "3"}, "list"),
    ],
)
def test_folder_labels_option_errors(label_folder: Path, options: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        sources.build("folder", root=label_folder, images="*_image.nrrd", masks="*_label.nrrd", **options)


def test_sample_accepts_class_indices_only_with_num_classes() -> None:
    mask = np.array([[0, 1], [2, 2]], np.int64)
    base = {"image": np.zeros((1, 2, 2)), "target": "e", "spacing": (1.0, 1.0), "case_id": "c"}
    sample = Sample(masks={"e": mask}, meta={"num_classes": 3}, **base)
    assert sample.target_mask.dtype == np.uint8 and sample.target_mask.max() == 2
    with pytest.raises(DataError, match="binary"):
        Sample(masks={"e": mask}, **base)
    with pytest.raises(DataError, match="class indices 0..1"):
        Sample(masks={"e": mask}, meta={"num_classes": 2}, **base)
    with pytest.raises(DataError, match="class indices"):
        Sample(masks={"e": np.array([[0, 0.5], [1, 1]])}, meta={"num_classes": 3}, **base)
    with pytest.raises(DataError, match="class indices"):
        Sample(masks={"e": -mask}, meta={"num_classes": 3}, **base)
    for bad in (1, 300, 2.0, True):
        with pytest.raises(DataError, match="num_classes"):
            Sample(masks={"e": mask}, meta={"num_classes": bad}, **base)


def test_volume_dataset_needs_the_matching_num_classes(label_folder: Path) -> None:
    src = sources.build(
        "folder", root=label_folder, images="*_image.nrrd", masks="*_label.nrrd", labels=[3, 5]
    )
    samples = src.load_all()
    with pytest.raises(DataError, match="data.num_classes: 3"):
        VolumeDataset(samples, 1)
    with pytest.raises(DataError, match="gives 3 classes"):
        VolumeDataset(samples, 1, num_classes=4)
    dataset = VolumeDataset(samples, 1, patch_size=(8, 16, 16), num_classes=3, foreground_ratio=1.0)
    assert dataset.class_values == [0, 3, 5]
    item = dataset[0]
    assert item["target"].shape == (1, 8, 16, 16)
    assert set(item["target"].unique().tolist()) <= {0.0, 1.0, 2.0}  # nearest neighbour: still indices
    binary = Sample(np.zeros((1, 4, 8, 8)), {"expert": np.zeros((4, 8, 8))}, "expert", (1, 1, 1), "z")
    binary.masks["expert"][0, 0, 0] = 1
    assert VolumeDataset([binary], 1, num_classes=2).class_values is None  # {0, 1}: two classes


def test_volume_dataset_keeps_the_common_label_names() -> None:
    """``label_names`` (class index → name) come from the samples' meta when they agree."""
    mask = np.zeros((4, 8, 8))
    mask[1, 2:4, 2:4] = 2

    def sample(names: list[str] | None) -> Sample:
        meta = {"num_classes": 3, **({"label_names": names} if names else {})}
        return Sample(np.zeros((1, 4, 8, 8)), {"expert": mask.copy()}, "expert", (1, 1, 1), "z", meta=meta)

    names = ["background", "kidney", "tumour"]
    assert VolumeDataset([sample(names), sample(None)], 1, num_classes=3).label_names == names
    assert VolumeDataset([sample(None)], 1, num_classes=3).label_names is None
    disagree = [sample(names), sample(["background", "a", "b"])]
    assert VolumeDataset(disagree, 1, num_classes=3).label_names is None


# ---------------------------------------------------------------- model building
def test_model_out_channels_follow_num_classes(tmp_path: Path) -> None:
    common = ["data.spatial_dims=3", "data.patch_size=[8, 16, 16]", "model.options={features: [4, 8]}"]
    cfg = load_config(None, [*common, "data.num_classes=4"])
    model = build_from_config(cfg)
    assert model(torch.zeros(1, 1, 8, 16, 16)).shape[1] == 4 and model.num_classes == 4
    binary = build_from_config(load_config(None, common))
    assert binary(torch.zeros(1, 1, 8, 16, 16)).shape[1] == 1 and binary.num_classes is None
    # a binary task whose baseline needs a boundary channel: model.options.out_channels
    two = load_config(
        None, [*common, "model.name=monai_unet", "model.options={features: [4, 8], out_channels: 2}"]
    )
    assert build_from_config(two)(torch.zeros(1, 1, 8, 16, 16)).shape[1] == 2
    with pytest.raises(ConfigError, match="differs"):
        build_from_config(
            load_config(
                None, [*common, "data.num_classes=3", "model.options={features: [4], out_channels: 2}"]
            )
        )
    # Res-UNet still appends its boundary channel to its single mask channel
    resunet = load_config(None, [*common, "model.name=resunet_r", "model.options={features: [4, 4, 4]}"])
    assert build_from_config(resunet)(torch.zeros(1, 1, 4, 16, 16)).shape[1] == 2
    # 2D multi-class: K logit channels too
    model_2d = build_from_config(
        load_config(None, ["data.num_classes=3", "model.options={features: [4, 8]}"])
    )
    assert model_2d(torch.zeros(1, 1, 16, 16)).shape[1] == 3 and model_2d.num_classes == 3
    with pytest.raises(ConfigError, match="out_channels must be 1"):  # a box gives one mask
        build_from_config(
            load_config(
                None,
                [
                    "data.num_classes=3",
                    "data.image_size=[64, 64]",
                    "model.name=litemedsam",
                    "model.options={variant: tiny}",
                ],
            )
        )
    with pytest.raises(ConfigError, match="num_classes"):
        build_from_config(load_config(None, [*common, "data.num_classes=1"]))


# ---------------------------------------------------------------- metrics on an exact model
class ClassFromIntensity(SegmentationModel):
    """Logit of class c is −(x − c)²: the argmax is the image value rounded to a class index."""

    spatial_dims = 3

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(self.num_classes, dtype=x.dtype, device=x.device).view(1, -1, 1, 1, 1)
        return -((x[:, :1] - classes) ** 2) * self.scale


def _class_volume(num_classes: int = 3) -> tuple[np.ndarray, Sample]:
    gt = np.zeros((6, 20, 20), np.uint8)
    gt[1:5, 2:10, 2:10] = 1  # 4 slices of class 1
    gt[1:4, 12:18, 12:18] = 2  # 3 slices of class 2
    pred = gt.copy()
    pred[4] = 0  # the prediction misses the last slice of class 1: Dice 2·3/(3+4) = 6/7
    meta = {"num_classes": num_classes, "class_values": [0, 3, 5, 7][:num_classes]}
    image = pred.astype(np.float32)[None]
    return gt, Sample(image, {"expert": gt}, "expert", (2.0, 0.5, 0.5), "v", meta=meta)


def test_validation_dice_is_the_mean_over_foreground_classes() -> None:
    _, sample = _class_volume()
    dataset = VolumeDataset([sample], 1, intensity="none", num_classes=3)
    loss, dice = validate_volumes(
        ClassFromIntensity(3), dataset, build_loss("ce"), torch.device("cpu"), SlidingWindow((4, 8, 8))
    )
    assert dice == pytest.approx((6 / 7 + 1.0) / 2) and np.isfinite(loss)
    # a class absent from both ground truth and prediction counts 1 (binary empty-mask policy)
    dice4 = validate_volumes(
        ClassFromIntensity(4),
        VolumeDataset([_class_volume(4)[1]], 1, intensity="none", num_classes=4),
        build_loss("dice"),
        torch.device("cpu"),
        SlidingWindow((4, 8, 8)),
    )[1]
    assert dice4 == pytest.approx((6 / 7 + 1.0 + 1.0) / 3)


def test_evaluation_has_per_class_rows_and_their_mean() -> None:
    gt, sample = _class_volume()
    result, predictions = evaluate_model(
        ClassFromIntensity(3),
        [sample],
        (0, 0),
        "none",
        EvalConfig(),
        torch.device("cpu"),
        False,
        window=SlidingWindow((4, 8, 8)),
    )
    assert result.per_class is not None
    classes = result.per_class.set_index("class_index")
    assert list(classes["class_value"]) == [3, 5] and list(classes["class_name"]) == ["label 3", "label 5"]
    assert classes.loc[1, "dice"] == pytest.approx(6 / 7) and classes.loc[2, "dice"] == pytest.approx(1.0)
    assert classes.loc[2, "hd95_mm"] == pytest.approx(0.0) and classes.loc[1, "hd_mm"] == pytest.approx(2.0)
    # volumes in mL: 4 slices of 8×8 voxels of 2 × 0.5 × 0.5 mm³ for class 1 (the prediction: 3)
    assert classes.loc[1, "volume_gt_ml"] == pytest.approx(4 * 64 * 0.5 / 1000)
    assert classes.loc[1, "volume_pred_ml"] == pytest.approx(3 * 64 * 0.5 / 1000)
    assert (result.per_class["level"] == "patient").all()  # no per-slice class rows
    patient = result.per_patient.iloc[0]
    assert patient["dice"] == pytest.approx((6 / 7 + 1.0) / 2)
    assert patient["hd95_mm"] == pytest.approx(classes["hd95_mm"].mean())
    assert set(np.unique(predictions["v"])) == {0, 1, 2}
    assert len(result.per_case) == 6 and "dice_c2" not in result.per_case
    assert result.summary["per_class"]["label 3"]["dice"]["mean"] == pytest.approx(6 / 7)
    assert result.summary["over_classes"]["dice"]["mean"] == pytest.approx((6 / 7 + 1.0) / 2)
    assert result.summary["class_values"] == [0, 3, 5] and result.summary["num_classes"] == 3
    with pytest.raises(ValueError, match="microsegnet"):
        evaluate_model(
            ClassFromIntensity(3),
            [sample],
            (0, 0),
            "none",
            EvalConfig(protocols=["microsegnet"]),
            torch.device("cpu"),
            False,
            window=SlidingWindow((4, 8, 8)),
        )


def test_label_files_with_every_label_give_the_model_evaluation_per_class_table(tmp_path: Path) -> None:
    gt, sample = _class_volume()
    other_gt = gt.copy()
    other_gt[other_gt == 2] = 0  # a second case without class 2 in the ground truth or prediction
    meta = dict(sample.meta)
    other = Sample(
        other_gt.astype(np.float32)[None], {"expert": other_gt}, "expert", sample.spacing, "w", meta=meta
    )
    result, predictions = evaluate_model(
        ClassFromIntensity(3),
        [sample, other],
        (0, 0),
        "none",
        EvalConfig(),
        torch.device("cpu"),
        False,
        window=SlidingWindow((4, 8, 8)),
    )
    values = np.array([0, 3, 5], np.int16)  # the label values the files hold
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name, labels in (("v", gt), ("w", other_gt)):
        _write(tmp_path / "gt" / f"{name}.nrrd", values[labels])
        _write(tmp_path / "pred" / f"{name}.nrrd", values[predictions[name]])
    files = evaluate_files(tmp_path / "pred", tmp_path / "gt", EvalConfig(), labels="all")
    columns = [
        "case",
        "class_index",
        "class_value",
        "class_name",
        "dice",
        "iou",
        "hd95_mm",
        "nsd",
        "volume_pred_ml",
        "volume_gt_ml",
        "empty_gt",
        "empty_pred",
        "note",
    ]
    assert files.per_class is not None and result.per_class is not None
    pd.testing.assert_frame_equal(files.per_class[columns], result.per_class[columns], check_dtype=False)
    absent = files.per_class.set_index(["case", "class_value"]).loc[("w", 5)]
    assert absent["dice"] == 1.0 and absent["note"] == "both empty"  # filled in: absent from both
    assert files.summary["per_class"] == result.summary["per_class"]
    np.testing.assert_allclose(files.per_case["dice"], result.per_patient["dice"])


def test_class_indices_map_back_to_label_values() -> None:
    classes = np.array([[0, 1], [2, 1]], np.uint8)
    np.testing.assert_array_equal(class_index_to_value(classes, [0, 3, 5]), [[0, 3], [5, 3]])
    assert class_index_to_value(classes, [0, 3, 500]).dtype == np.int16
    np.testing.assert_array_equal(class_index_to_value(classes, None), classes)
    with pytest.raises(ValueError, match="no value"):
        class_index_to_value(classes, [0, 3])


# ---------------------------------------------------------------- end to end
def test_multiclass_3d_training_evaluation_and_prediction(label_folder: Path, tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "data.source=folder",
            f"data.options={{root: '{label_folder}', images: '*_image.nrrd', masks: '*_label.nrrd', "
            "labels: [3, 5]}",
            "data.spatial_dims=3",
            "data.num_classes=3",
            "data.patch_size=[8, 16, 16]",
            "data.samples_per_volume=2",
            "data.split.train_cases=[a]",
            "data.split.val_cases=[b]",
            "model.name=unet",
            "model.options={features: [4, 8]}",
            "loss.name=ce",
            "optim.scheduler=constant",
            "train.epochs=2",
            "train.batch_size=2",
            "train.progress=false",
            "train.tensorboard=false",
            "eval.n_overlays=1",
        ],
    )
    cfg.output_dir = str(tmp_path / "run")
    result = train(cfg)
    assert len(result.history) == 2
    assert all(0.0 <= h["val_dice"] <= 1.0 for h in result.history)
    state = load_checkpoint(result.last_checkpoint)
    assert state["class_values"] == [0, 3, 5]
    assert state["label_names"] is None  # the folder source names no labels: segments are "class i"
    model, stored = load_model(result.last_checkpoint)
    assert stored.data.num_classes == 3 and model.num_classes == 3

    evaluation = evaluate_checkpoint(
        result.last_checkpoint, tmp_path / "eval", split="val", device="cpu", progress=False
    )
    table = pd.read_csv(tmp_path / "eval" / "metrics_per_class.csv")
    assert list(table["class_value"]) == [3, 5] and list(table["case"]) == ["b", "b"]
    for column in ("dice", "iou", "hd95_mm", "nsd", "volume_pred_ml", "volume_gt_ml", "empty_gt"):
        assert column in table
    patient = evaluation.per_patient.iloc[0]
    usable = table[~(table["empty_gt"] & table["empty_pred"])]
    assert patient["dice"] == pytest.approx(usable["dice"].mean())
    assert (tmp_path / "eval" / "overlays.png").is_file()

    (predicted,) = predict_files(
        result.last_checkpoint,
        [label_folder / "b_image.nrrd"],
        tmp_path / "pred",
        save_probabilities=True,
        device="cpu",
    )
    mask = sitk.ReadImage(str(predicted.mask))
    values = set(np.unique(sitk.GetArrayFromImage(mask)).tolist())
    assert values <= {0, 3, 5}  # label values of the training data, not class indices
    np.testing.assert_allclose(mask.GetSpacing(), SPACING_XYZ)
    assert predicted.probabilities is not None
    prob = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted.probabilities)))
    assert prob.shape == (8, 24, 24) and prob.min() >= 0.0 and prob.max() <= 1.0


def test_planned_3d_recipe_learns_every_class(label_folder: Path, tmp_path: Path) -> None:
    """The planned multi-class recipe (ResEnc U-Net, Dice + CE, deep supervision, per-class
    oversampling, 3D mirroring of the mirror axes): the loss falls and both classes are predicted."""
    for shift, name in ((1, "c"), (3, "d")):
        _write_case(label_folder, name, shift)
    cfg = load_config(
        None,
        [
            "data.source=folder",
            f"data.options={{root: '{label_folder}', images: '*_image.nrrd', masks: '*_label.nrrd', "
            "labels: [3, 5]}",
            "data.spatial_dims=3",
            "data.num_classes=3",
            "data.patch_size=[8, 16, 16]",
            "data.foreground_ratio=0.33",
            "data.split.train_cases=[a, b, c]",
            "data.split.val_cases=[d]",
            "model.name=resenc_unet",
            "model.options={features: [8, 16], blocks: [0, 1], deep_supervision: true}",
            "loss.name=dice_ce",
            "augment.flip_axes=[2]",
            "optim.name=sgd",
            "optim.lr=0.01",
            "optim.options={momentum: 0.99, nesterov: true}",
            "optim.scheduler=constant",
            "train.epochs=6",
            "train.batch_size=2",
            "train.progress=false",
            "train.tensorboard=false",
            "train.checkpoint_selection=last",
        ],
    )
    cfg.output_dir = str(tmp_path / "run")
    result = train(cfg)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    model, stored = load_model(result.last_checkpoint)
    samples = sources.build("folder", **stored.data.options).load_all()
    window = SlidingWindow(roi_size=(8, 16, 16))
    evaluation, predictions = evaluate_model(
        model, samples, [], stored.data.intensity, EvalConfig(), torch.device("cpu"), False, window=window
    )
    for sample in samples:
        predicted = predictions[sample.key]
        for c in (1, 2):  # each class is predicted where it is
            overlap = np.logical_and(predicted == c, sample.target_mask == c).sum()
            assert overlap > 0, (sample.case_id, c)


def test_foreground_patches_draw_each_class_alike() -> None:
    shape, patch = (4, 40, 40), (4, 8, 8)
    rare = np.array([np.ravel_multi_index((2, 2, 2), shape)])  # one voxel of class 2
    corner = np.zeros(shape, bool)
    corner[:, 20:, 20:] = True
    common = np.flatnonzero(corner)  # 1600 voxels of class 1, far from the rare one
    rng = np.random.default_rng(0)
    starts = [sample_patch_start(shape, patch, [common, rare], 1.0, rng) for _ in range(2000)]
    near_rare = np.mean([s[1] == 0 and s[2] == 0 for s in starts])
    assert 0.45 < near_rare < 0.55  # half the foreground patches hold the single rare voxel
    # a class absent from the volume is skipped; none present: a uniform patch
    assert sample_patch_start(shape, patch, [np.empty(0, np.int64), rare], 1.0, rng)[1:] == (0, 0)
    start = sample_patch_start(shape, patch, [np.empty(0, np.int64)], 1.0, rng)
    assert all(0 <= b <= s - p for b, s, p in zip(start, shape, patch, strict=True))
