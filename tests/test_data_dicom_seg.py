"""DICOM-SEG out: a highdicom round trip gives the same voxels and references the series' slices;
`medseg predict --format dicom-seg` on a DICOM series."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.config import load_config
from medseg.data.dicom import read_dicom_series, write_dicom_series
from medseg.data.dicom_seg import (
    SegAlgorithm,
    SegmentSpec,
    check_output_format,
    default_codes,
    read_dicom_seg,
    referenced_series_uids,
    seg_algorithm_of,
    segment_specs,
    write_dicom_seg,
    write_prediction,
)
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.predict import predict_files
from medseg.errors import DataError
from medseg.models import build_from_config
from medseg.provenance import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def series(tmp_path: Path) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng(0)
    direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # sagittal
    volume = rng.integers(-100, 200, size=(5, 12, 10)).astype(float)
    write_dicom_series(tmp_path / "ct", volume, (3.0, 0.8, 0.6), (5.0, 6.0, 7.0), direction.ravel())
    _, _, meta = read_dicom_series(tmp_path / "ct")
    return volume, meta


def test_default_codes_and_specs() -> None:
    assert default_codes("prostate") == (("85756007", "SCT", "Tissue"), ("41216001", "SCT", "Prostate"))
    assert default_codes("liver lesion")[0] == ("49755003", "SCT", "Morphologically Abnormal Structure")
    assert default_codes("liver lesion")[1] == ("52988006", "SCT", "Lesion")
    assert default_codes("zzz")[1] == ("85756007", "SCT", "Tissue")
    specs = segment_specs(
        [1, 7],
        {1: "prostate", 7: "tumour"},
        [{"label": 7, "name": "PZ lesion", "type": ["52988006", "SCT", "Lesion"]}],
    )
    assert specs == [
        SegmentSpec(1, "prostate"),
        SegmentSpec(7, "PZ lesion", None, ("52988006", "SCT", "Lesion")),
    ]
    assert segment_specs([2], ["background", "a"]) == [SegmentSpec(2, "label 2")]
    with pytest.raises(DataError, match="needs 'label' and 'name'"):
        segment_specs([1], None, [{"name": "x"}])
    with pytest.raises(DataError, match="output format must be one of"):
        check_output_format("rtstruct")


def test_round_trip_gives_the_same_voxels_and_references(
    series: tuple[np.ndarray, dict], tmp_path: Path
) -> None:
    volume, meta = series
    mask = np.zeros(volume.shape, np.uint8)
    mask[1:4, 3:9, 2:7] = 1
    mask[2, 0:2, 0:2] = 7
    specs = segment_specs([1, 7], {1: "prostate", 7: "lesion"})
    path = write_dicom_seg(mask, meta["files"], tmp_path / "seg.dcm", specs)
    seg = hd.seg.segread(path)
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    referenced = {
        str(item.ReferencedSOPInstanceUID)
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == set(meta["sop_instance_uids"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == meta["series_uid"]
    assert seg.StudyInstanceUID == meta["study_uid"]
    # each frame points at the slice it was made from
    frame_sources = [
        str(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        for f in seg.PerFrameFunctionalGroupsSequence
    ]
    assert set(frame_sources) == set(meta["sop_instance_uids"])
    back, segments = read_dicom_seg(path, meta["sop_instance_uids"])
    expected = np.zeros_like(mask)
    expected[mask == 1], expected[mask == 7] = 1, 2  # segment numbers 1..N
    np.testing.assert_array_equal(back, expected)
    assert [(s.name, s.type) for s in segments] == [
        ("prostate", ("41216001", "SCT", "Prostate")),
        ("lesion", ("52988006", "SCT", "Lesion")),
    ]


def test_bad_masks_are_errors(series: tuple[np.ndarray, dict], tmp_path: Path) -> None:
    volume, meta = series
    with pytest.raises(DataError, match="does not fit a series of 5 slices"):
        write_dicom_seg(np.zeros((4, 12, 10), np.uint8), meta["files"], tmp_path / "s.dcm")
    with pytest.raises(DataError, match="non-negative integer labels"):
        write_dicom_seg(np.zeros(volume.shape, np.float32), meta["files"], tmp_path / "s.dcm")
    with pytest.raises(DataError, match="no segments to write"):
        write_dicom_seg(np.zeros(volume.shape, np.uint8), meta["files"], tmp_path / "s.dcm")
    with pytest.raises(DataError, match="needs a DICOM series as input"):
        write_prediction(np.zeros((2, 2, 2), np.uint8), {"format": "nifti"}, tmp_path, "x", "dicom-seg")
    nifti = write_prediction(np.ones(volume.shape, np.uint8), meta, tmp_path, "x", "auto")
    assert nifti.name == "x_mask.nii.gz"


def test_predict_dicom_series_to_dicom_seg(series: tuple[np.ndarray, dict], tmp_path: Path) -> None:
    volume, meta = series
    cfg = load_config(
        None,
        [
            "data.image_size=[16, 16]",
            "model.options={features: [4, 8]}",
            "data.label_names=[background, prostate]",
        ],
    )
    model = build_from_config(cfg)
    with torch.no_grad():  # a large output bias: every voxel is foreground
        list(model.parameters())[-1].add_(50.0)
    checkpoint = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, tmp_path / "m.pt")
    (item,) = predict_files(
        checkpoint, [tmp_path / "ct"], tmp_path / "out", device="cpu", output_format="dicom-seg"
    )
    assert item.mask.name == "ct_seg.dcm"
    seg = pydicom.dcmread(item.mask)
    assert seg.SegmentSequence[0].SegmentLabel == "prostate"
    back, _ = read_dicom_seg(item.mask, meta["sop_instance_uids"])
    mask_again = (back > 0).astype(np.uint8)
    assert mask_again.all()
    table = pd.read_csv(tmp_path / "out" / "measurements.csv")
    voxel_ml = 3.0 * 0.8 * 0.6 / 1000
    assert table.loc[0, "volume_ml_pred"] == pytest.approx(mask_again.sum() * voxel_ml, rel=1e-5)
    # the CLI: NIfTI by default, on the series' grid
    result = CliRunner().invoke(
        app,
        ["predict", str(checkpoint), str(tmp_path / "ct"), "--out", str(tmp_path / "cli"), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    import nibabel as nib

    img = nib.load(tmp_path / "cli" / "ct_mask.nii.gz")
    np.testing.assert_allclose(img.header.get_zooms(), (0.6, 0.8, 3.0), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(img.dataobj).transpose(2, 1, 0), mask_again)
    bad = CliRunner().invoke(
        app,
        ["predict", str(checkpoint), str(tmp_path / "ct"), "--format", "rt", "--out", str(tmp_path / "x")],
    )
    assert bad.exit_code == 2 and "output format must be one of" in bad.output


def test_the_seg_records_the_model_that_made_it(series: tuple[np.ndarray, dict], tmp_path: Path) -> None:
    volume, meta = series
    mask = np.zeros(volume.shape, np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    algorithm = SegAlgorithm("unet", "ab" * 32, "0.1.0")
    path = write_dicom_seg(mask, meta["files"], tmp_path / "seg.dcm", [SegmentSpec(1, "prostate")], algorithm)
    seg = pydicom.dcmread(path)
    assert seg_algorithm_of(seg) == algorithm
    identification = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert identification.AlgorithmName == "unet" and identification.AlgorithmVersion == "ab" * 32
    assert identification.AlgorithmSource == "medseg 0.1.0"
    assert seg.SeriesDescription == "medseg unet abababababab"
    assert seg.ContentDescription == "unet sha256 abababababab" and seg.SoftwareVersions == "0.1.0"
    assert referenced_series_uids(seg) == [meta["series_uid"]]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
    unnamed = pydicom.dcmread(write_dicom_seg(mask, meta["files"], tmp_path / "u.dcm"))
    assert seg_algorithm_of(unnamed).checkpoint_sha256 == "unknown"  # type: ignore[union-attr]
    assert seg_algorithm_of(pydicom.Dataset()) is None and referenced_series_uids(pydicom.Dataset()) == []


def test_a_multiclass_mask_has_one_segment_per_class(series: tuple[np.ndarray, dict], tmp_path: Path) -> None:
    """A synthetic 3-class volume (label values 0, 3, 8): one segment per foreground class, named
    after the label names, or ``class i`` without them; class 2 is absent from the mask and still
    gets its (empty) segment."""
    volume, meta = series
    mask = np.zeros(volume.shape, np.uint8)
    mask[1:4, 2:8, 2:6] = 3
    mask[2, 9:11, 7:9] = 8
    names = ["background", "liver", "liver tumour"]
    path = write_prediction(mask, meta, tmp_path, "named", "dicom-seg", names, None, [0, 3, 8])
    back, segments = read_dicom_seg(path, meta["sop_instance_uids"])
    assert [s.name for s in segments] == ["liver", "liver tumour"]
    assert segments[1].category == ("49755003", "SCT", "Morphologically Abnormal Structure")
    expected = np.zeros_like(mask)
    expected[mask == 3], expected[mask == 8] = 1, 2
    np.testing.assert_array_equal(back, expected)
    unnamed = write_prediction(mask, meta, tmp_path, "unnamed", "dicom-seg", None, None, [0, 3, 8])
    assert [s.name for s in read_dicom_seg(unnamed, meta["sop_instance_uids"])[1]] == ["class 1", "class 2"]
    only_liver = np.where(mask == 8, 0, mask)
    empty_class = write_prediction(only_liver, meta, tmp_path, "empty", "dicom-seg", names, None, [0, 3, 8])
    back, segments = read_dicom_seg(empty_class, meta["sop_instance_uids"])
    assert len(segments) == 2 and set(np.unique(back).tolist()) == {0, 1}


def test_predict_names_multiclass_segments_after_the_checkpoint(
    series: tuple[np.ndarray, dict], tmp_path: Path
) -> None:
    """A 3D 3-class checkpoint whose state carries the training data's ``class_values`` and
    ``label_names`` (the config has none): the SEG's segments bear those names and decode to the
    label map a NIfTI prediction writes; the SEG records the checkpoint's SHA-256."""
    _, meta = series
    cfg = load_config(
        None,
        [
            "data.spatial_dims=3",
            "data.num_classes=3",
            "data.patch_size=[4, 8, 8]",
            "model.name=unet",
            "model.options={features: [4, 8]}",
        ],
    )
    model = build_from_config(cfg)
    state = {
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "class_values": [0, 3, 8],
        "label_names": ["background", "kidney", "kidney lesion"],
    }
    checkpoint = save_checkpoint(state, tmp_path / "m.pt")
    (seg_item,) = predict_files(
        checkpoint, [tmp_path / "ct"], tmp_path / "seg", device="cpu", output_format="dicom-seg"
    )
    (nifti_item,) = predict_files(checkpoint, [tmp_path / "ct"], tmp_path / "nii", device="cpu")
    seg = pydicom.dcmread(seg_item.mask)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["kidney", "kidney lesion"]
    assert seg_algorithm_of(seg) == SegAlgorithm("unet", file_sha256(checkpoint), medseg.__version__)
    import nibabel as nib

    label_map = np.asarray(nib.load(nifti_item.mask).dataobj).transpose(2, 1, 0)
    assert set(np.unique(label_map).tolist()) <= {0, 3, 8}
    back, _ = read_dicom_seg(seg_item.mask, meta["sop_instance_uids"])
    np.testing.assert_array_equal(np.asarray([0, 3, 8])[back], label_map)
