"""nnU-Net v2 and Decathlon data sets written by the tests load with the right cases, channels and
labels; `data export --to nnunet` round-trips a source."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.cli import app
from medseg.data.export_nnunet import (
    case_identifiers,
    check_export_target,
    dataset_folder_name,
    export_nnunet,
    export_nnunet_samples,
)
from medseg.data.sources import build
from medseg.data.sources.msd import read_nifti_channels
from medseg.data.sources.nnunet import (
    dataset_json_mask,
    label_value,
    parse_nnunet_labels,
    read_dataset_json,
    stack_channels,
)
from medseg.errors import DataError, DataWarning

ZOOMS = (0.8, 0.7, 3.0)  # x, y, z mm


def _nifti(path: Path, xyz: np.ndarray, zooms: tuple[float, ...] = ZOOMS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(xyz, np.diag([*zooms[:3], 1.0])), str(path))


def _nnunet_dataset(root: Path, labels: dict[str, int]) -> dict[str, list[np.ndarray]]:
    """Three training cases with two channels (CT, PET) and one test case; returns the xyz arrays."""
    rng = np.random.default_rng(0)
    arrays: dict[str, list[np.ndarray]] = {}
    for case in ("liver_002", "liver_010", "liver_001"):
        channels = [rng.normal(size=(6, 5, 4)).astype(np.float32) for _ in range(2)]
        for c, arr in enumerate(channels):
            _nifti(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", arr)
        label = rng.integers(0, len(labels), size=(6, 5, 4)).astype(np.uint8)
        _nifti(root / "labelsTr" / f"{case}.nii.gz", label)
        arrays[case] = [*channels, label]
    for c in range(2):
        _nifti(root / "imagesTs" / f"liver_100_{c:04d}.nii.gz", rng.normal(size=(6, 5, 4)).astype(np.float32))
    spec = {
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": labels,
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return arrays


def test_nnunet_source_cases_channels_labels(tmp_path: Path) -> None:
    root = tmp_path / "Dataset003_Liver"
    arrays = _nnunet_dataset(root, {"background": 0, "liver": 1, "tumor": 2})
    source = build("nnunet", root=str(root))
    assert source.case_ids() == ["liver_001", "liver_002", "liver_010"]
    (sample,) = source.load_case("liver_010")
    ct, pet, label = arrays["liver_010"]
    assert sample.image.shape == (2, 4, 5, 6)  # C×D×H×W
    np.testing.assert_array_equal(sample.image[0], ct.transpose(2, 1, 0))
    np.testing.assert_array_equal(sample.image[1], pet.transpose(2, 1, 0))
    np.testing.assert_array_equal(sample.target_mask, label.transpose(2, 1, 0))
    assert sample.spacing == pytest.approx((3.0, 0.7, 0.8))
    assert sample.meta["num_classes"] == 3 and sample.meta["class_values"] == [0, 1, 2]
    assert sample.meta["label_names"] == ["background", "liver", "tumor"]
    assert sample.meta["channel_names"] == ["CT", "PET"]
    (tumor,) = build("nnunet", root=str(root), label=2).load_case("liver_010")
    np.testing.assert_array_equal(tumor.target_mask, (label == 2).transpose(2, 1, 0))
    test = build("nnunet", root=str(root), subset="test")
    assert test.case_ids() == ["liver_100"] and test.load_case("liver_100")[0].masks == {}


def test_nnunet_source_errors(tmp_path: Path) -> None:
    root = tmp_path / "Dataset004_Bad"
    _nnunet_dataset(root, {"background": 0, "organ": 1})
    (sample,) = build("nnunet", root=str(root)).load_case("liver_001")
    assert set(np.unique(sample.target_mask)) <= {0, 1} and "num_classes" not in sample.meta
    with pytest.raises(DataError, match="label 5 is not in dataset.json labels"):
        build("nnunet", root=str(root), label=5)
    (root / "imagesTr" / "liver_001_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'liver_001' has channels \[0\], dataset.json names \[0, 1\]"):
        build("nnunet", root=str(root)).case_ids()
    (root / "labelsTr" / "liver_002.nii.gz").unlink()
    (root / "imagesTr" / "liver_001_0000.nii.gz").unlink()
    with (
        pytest.raises(DataError, match="case 'liver_002' has no label file"),
        pytest.warns(DataWarning, match="numTraining says 3 cases but 2 were found"),
    ):
        build("nnunet", root=str(root)).load_case("liver_002")
    with pytest.raises(DataError, match="region-based label 'tumor'"):
        parse_nnunet_labels({"background": 0, "tumor": [1, 2]}, root)
    with pytest.raises(DataError, match="consecutive integers 0..K-1"):
        parse_nnunet_labels({"background": 0, "tumor": 2}, root)
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot parse dataset.json"):
        build("nnunet", root=str(root))
    (root / "dataset.json").write_text(json.dumps({"labels": {}}))
    with pytest.raises(DataError, match=r"dataset.json lacks \['channel_names', 'file_ending'\]"):
        read_dataset_json(root / "dataset.json", ("channel_names", "labels", "file_ending"))


def test_nnunet_source_reads_2d_png_datasets(tmp_path: Path) -> None:
    root = tmp_path / "Dataset005_Png"
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(8, 10, 3)).astype(np.uint8)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    Image.fromarray(image).save(root / "imagesTr" / "img1_0000.png")
    Image.fromarray((image[..., 0] > 128).astype(np.uint8)).save(root / "labelsTr" / "img1.png")
    spec = {
        "channel_names": {"0": "R", "1": "G", "2": "B"},
        "labels": {"background": 0, "vessel": 1},
        "file_ending": ".png",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    (sample,) = build("nnunet", root=str(root), spacing=0.5).load_case("img1")
    assert sample.image.shape == (3, 8, 10) and sample.spacing == (0.5, 0.5)
    np.testing.assert_array_equal(sample.image, image.transpose(2, 0, 1))
    np.testing.assert_array_equal(sample.target_mask, image[..., 0] > 128)
    assert stack_channels([np.zeros((2, 2, 3))], [root], two_d=True).shape == (3, 2, 2)


def _msd_dataset(root: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    arrays = {}
    training = []
    for case in ("BRATS_002", "BRATS_001"):
        image = rng.normal(size=(6, 5, 4, 3)).astype(np.float32)  # x, y, z, modality
        label = rng.integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
        _nifti(root / "imagesTr" / f"{case}.nii.gz", image)
        _nifti(root / "labelsTr" / f"{case}.nii.gz", label)
        (root / "imagesTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
        arrays[case], arrays[case + "_label"] = image, label
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    _nifti(root / "imagesTs" / "BRATS_485.nii.gz", rng.normal(size=(6, 5, 4, 3)).astype(np.float32))
    spec = {
        "name": "BRATS",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "T1gd"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": 2,
        "training": training,
        "test": ["./imagesTs/BRATS_485.nii.gz"],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return arrays


def test_msd_source_cases_channels_labels(tmp_path: Path) -> None:
    root = tmp_path / "Task01_BrainTumour"
    arrays = _msd_dataset(root)
    source = build("msd", root=str(root))
    assert source.case_ids() == ["BRATS_001", "BRATS_002"]
    (sample,) = source.load_case("BRATS_002")
    assert sample.image.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(sample.image, arrays["BRATS_002"].transpose(3, 2, 1, 0))
    np.testing.assert_array_equal(sample.target_mask, arrays["BRATS_002_label"].transpose(2, 1, 0))
    assert sample.meta["channel_names"] == ["FLAIR", "T1w", "T1gd"]
    assert sample.meta["num_classes"] == 4 and sample.meta["label_names"][3] == "enhancing tumour"
    assert sample.spacing == pytest.approx((3.0, 0.7, 0.8))
    (edema,) = build("msd", root=str(root), label=1).load_case("BRATS_001")
    np.testing.assert_array_equal(edema.target_mask, (arrays["BRATS_001_label"] == 1).transpose(2, 1, 0))
    test = build("msd", root=str(root), subset="test")
    assert test.case_ids() == ["BRATS_485"] and test.load_case("BRATS_485")[0].masks == {}
    with pytest.raises(DataError, match="unknown case id"):
        source.load_case("BRATS_999")
    (root / "labelsTr" / "BRATS_001.nii.gz").unlink()
    with pytest.raises(DataError, match="file listed in dataset.json does not exist"):
        source.load_case("BRATS_001")
    with pytest.raises(DataError, match="expected a 3D or 4D NIfTI"):
        _nifti(tmp_path / "five.nii.gz", np.zeros((2, 2, 2, 2, 2), np.float32))
        read_nifti_channels(tmp_path / "five.nii.gz")


def test_export_nnunet_round_trip_of_the_phantom(tmp_path: Path) -> None:
    phantom = build("phantom", n_patients=2, seed=0)
    folder = export_nnunet(phantom, tmp_path / "raw", 7, "Phantom")
    assert folder.name == "Dataset007_Phantom"
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["labels"] == {"background": 0, "expert": 1} and spec["numTraining"] == 2
    assert spec["channel_names"] == {"0": "channel_0"} and spec["file_ending"] == ".nii.gz"
    back = build("nnunet", root=str(folder))
    assert back.case_ids() == phantom.case_ids()
    for case in phantom.case_ids():
        (a,), (b,) = phantom.load_case(case), back.load_case(case)
        np.testing.assert_allclose(b.image, a.image, rtol=1e-6)
        np.testing.assert_array_equal(b.target_mask, a.target_mask)
        assert b.spacing == pytest.approx(a.spacing, rel=1e-6)
    with pytest.raises(DataError, match="exists and is not empty"):
        export_nnunet(phantom, tmp_path / "raw", 7, "Phantom")
    with pytest.raises(DataError, match="ids are 1..999"):
        dataset_folder_name(1000, "x")
    with pytest.raises(DataError, match="must be letters"):
        dataset_folder_name(1, "a b")


def test_export_nnunet_samples_writes_a_subset_as_the_source_export_does(tmp_path: Path) -> None:
    phantom = build("phantom", n_patients=3, seed=0)
    samples = phantom.load_all()
    whole = export_nnunet(phantom, tmp_path / "a", 8, "P")
    subset = export_nnunet_samples(samples[::-1], tmp_path / "b", 8, "P", description="subset")
    assert case_identifiers(samples) == phantom.case_ids()
    for case in phantom.case_ids():
        for part in (f"imagesTr/{case}_0000.nii.gz", f"labelsTr/{case}.nii.gz"):
            a, b = nib.load(whole / part), nib.load(subset / part)
            np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))
            np.testing.assert_allclose(b.affine, a.affine)
    spec = json.loads((subset / "dataset.json").read_text())
    assert spec["description"] == "subset" and spec["numTraining"] == 3
    two = [samples[0], samples[0]]  # two images of one case get numbered ids
    assert case_identifiers(two) == [f"{samples[0].case_id}_001", f"{samples[0].case_id}_002"]
    with pytest.raises(DataError, match="no samples"):
        export_nnunet_samples([], tmp_path / "c", 8, "P")


def test_export_keeps_a_subjects_images_apart_and_the_cli(tmp_path: Path) -> None:
    """Two 2D images of one subject (HC18's layout) become two nnU-Net cases of one patient."""
    root = tmp_path / "hc"
    (root / "training_set").mkdir(parents=True)
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    for name in ("001_HC", "001_2HC", "002_HC"):
        Image.fromarray(np.full((6, 8), 100, np.uint8)).save(root / "training_set" / f"{name}.png")
        mask = np.zeros((6, 8, 3), np.uint8)
        mask[2:4, 2:6] = 255
        Image.fromarray(mask).save(root / "training_set" / f"{name}_Annotation.png")
        rows.append(f"{name}.png,0.25,12.5")
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows))
    result = CliRunner().invoke(
        app,
        [
            "data",
            "export",
            "--to",
            "nnunet",
            "--source",
            "hc18",
            "--root",
            str(root),
            "-o",
            str(tmp_path / "raw"),
            "--dataset-id",
            "18",
            "--name",
            "HC18",
        ],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "raw" / "Dataset018_HC18"
    spec = json.loads((folder / "dataset.json").read_text())
    assert spec["medseg_patients"] == {"001_001": "001", "001_002": "001", "002": "002"}
    (sample,) = build("nnunet", root=str(folder)).load_case("001_002")
    assert sample.image.shape == (1, 1, 6, 8) and sample.spacing == pytest.approx((999.0, 0.25, 0.25))
    assert int(sample.target_mask.sum()) == 8
    bad = CliRunner().invoke(
        app, ["data", "export", "--to", "msd", "--source", "hc18", "-o", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "--to must be 'nnunet' or 'dicom'" in bad.output


def test_dataset_json_types_and_label_values_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"channel_names": ["CT"], "labels": {}, "file_ending": ".nii.gz"}))
    with pytest.raises(
        DataError, match=r"dataset\.json: dataset\.json key 'channel_names' must be a mapping"
    ):
        read_dataset_json(path, ("channel_names",), {"channel_names": dict})
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"dataset\.json: dataset\.json must hold a mapping"):
        read_dataset_json(path, ())
    assert (
        label_value(2, "x", path) == 2
        and label_value("3", "x", path) == 3
        and label_value(1.0, "x", path) == 1
    )
    for bad in (1.7, "1.7", True, None, "one"):
        with pytest.raises(DataError, match=r"dataset\.json: label 'tumor' has the value"):
            label_value(bad, "tumor", path)
    with pytest.raises(DataError, match=r"dataset\.json: dataset\.json 'labels' must map each label name"):
        parse_nnunet_labels(["background", "tumor"], path)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"labels 'a' and 'b' share the value 1"):
        parse_nnunet_labels({"background": 0, "a": 1, "b": 1}, path)


def test_dataset_json_mask_by_the_policy(tmp_path: Path) -> None:
    spec = tmp_path / "dataset.json"
    declared = {0: "background", 1: "liver", 2: "tumor"}
    labels = np.array([[0, 1], [2, 2]], np.float32)  # stored as float32, integral values
    classes, meta = dataset_json_mask(labels, tmp_path / "l.nii.gz", declared, None, spec)
    assert (
        classes.tolist() == [[0, 1], [2, 2]]
        and meta["num_classes"] == 3
        and meta["class_values"] == [0, 1, 2]
    )
    tumor, meta = dataset_json_mask(labels, tmp_path / "l.nii.gz", declared, 2, spec)
    assert tumor.tolist() == [[0, 0], [1, 1]] and meta["label_names"] == ["background", "tumor"]
    with pytest.raises(DataError, match=r"l\.nii\.gz: label values \[3\] are not in .*dataset\.json labels"):
        dataset_json_mask(np.array([0, 3]), tmp_path / "l.nii.gz", declared, None, spec)


def test_export_refuses_a_second_folder_with_the_same_id(tmp_path: Path) -> None:
    phantom = build("phantom", n_patients=2, seed=0, shape=(4, 16, 16))
    export_nnunet(phantom, tmp_path, 501, "first")
    assert check_export_target(tmp_path, 502, "x", overwrite=False) == (tmp_path / "Dataset502_x", [])
    with pytest.raises(DataError, match=r"dataset id 501 is taken by \['Dataset501_first'\]"):
        export_nnunet(phantom, tmp_path, 501, "second")
    folder = export_nnunet(
        build("phantom", n_patients=1, seed=0, shape=(4, 16, 16)), tmp_path, 501, "second", overwrite=True
    )
    assert [p.name for p in tmp_path.iterdir()] == ["Dataset501_second"]
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 1
    assert len(list((folder / "imagesTr").iterdir())) == 1


def test_export_dicom_refuses_a_non_empty_folder_and_replaces_its_own(tmp_path: Path) -> None:
    from medseg.data.export_dicom import export_dicom
    from medseg.output_dirs import MARKER

    phantom = build("phantom", n_patients=2, seed=0, shape=(4, 16, 16))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match=r"mine: the --out folder exists and is not empty"):
        export_dicom(phantom, tmp_path / "mine")
    with pytest.raises(DataError, match=r"--overwrite replaces only a folder that medseg made"):
        export_dicom(phantom, tmp_path / "mine", overwrite=True)
    folders = export_dicom(phantom, tmp_path / "dicom")
    assert [f.name for f in folders] == phantom.case_ids() and (tmp_path / "dicom" / MARKER).is_file()
    export_dicom(
        build("phantom", n_patients=1, seed=0, shape=(4, 16, 16)), tmp_path / "dicom", overwrite=True
    )
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == sorted(
        [MARKER, "phantom_00", "phantom_00_mask.nii.gz"]
    )


def test_nnunet_channels_must_share_the_first_channels_grid(tmp_path: Path) -> None:
    root = tmp_path / "Dataset006_Grid"
    _nnunet_dataset(root, {"background": 0, "liver": 1})
    finer = (0.4, 0.7, 3.0)  # x spacing differs from the first channel's 0.8
    _nifti(root / "imagesTr" / "liver_001_0001.nii.gz", np.zeros((6, 5, 4), np.float32), zooms=finer)
    with pytest.raises(DataError, match=r"liver_001_0001\.nii\.gz: channel and image are on different grids"):
        build("nnunet", root=str(root)).load_case("liver_001")
