"""The reader contract: every registered data source reads its masks by the mask policy and checks
each label against its image's grid; no source casts, rounds or binarises a label value itself.

One small valid data set is written in each source's own layout (:data:`LAYOUTS`); every bad case
(:data:`BAD_CASES`) then replaces its label (or its image header) and the source must refuse it
with a one-line :class:`~medseg.errors.DataError` naming the file. A case a layout's file format
cannot hold (a 0.5 in a PNG, an origin in a TIFF) is skipped with the reason.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from medseg.data.sources import available, build
from medseg.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")

SPACING_XYZ = (0.8, 0.8, 2.0)


def cube() -> np.ndarray:
    label = np.zeros((4, 16, 16), np.uint8)
    label[1:3, 4:10, 5:11] = 1
    return label


def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(100, 20, size=(4, 16, 16)).astype(np.float32)


def nii(
    path: Path, zyx: np.ndarray, spacing_xyz=SPACING_XYZ, origin=(0.0, 0.0, 0.0), zero_pixdim=False
) -> Path:
    """A NIfTI of a ``D×H×W`` array with the given voxel size and origin (or a zero pixdim)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing_xyz, 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(np.asarray(zyx).T, affine), str(path))
    if zero_pixdim:  # nibabel's save writes the affine's zooms: patch the header bytes
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[80:92] = np.zeros(3, "<f4").tobytes()  # pixdim[1:4] of the NIfTI-1 header
        path.write_bytes(gzip.compress(bytes(raw)))
    return path


@dataclass
class Written:
    """What a layout writer made: the source's options and the files of its one case."""

    options: dict[str, object]
    image: Path
    label: Path


@dataclass
class Layout:
    """How one source's data are stored. ``float_labels``: the mask format holds 0.5 (NIfTI,
    TIFF); ``header``: its files carry spacing and origin (NIfTI, DICOM)."""

    source: str
    write: Callable[..., Written]
    float_labels: bool
    header: bool
    nifti_image: bool = False
    dims: int = 3


# --- one writer per layout: (root, label, label geometry, image geometry) → Written -------------


def _msd(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = nii(root / "imagesTr" / "case_001.nii.gz", volume(), **image_geo)
    lab = nii(root / "labelsTr" / "case_001.nii.gz", label, **label_geo)
    spec = {
        "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "organ"},
        "numTraining": 1,
        "training": [{"image": "./imagesTr/case_001.nii.gz", "label": "./labelsTr/case_001.nii.gz"}],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return Written({"root": str(root)}, image, lab)


def _nnunet(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = nii(root / "imagesTr" / "case_001_0000.nii.gz", volume(), **image_geo)
    lab = nii(root / "labelsTr" / "case_001.nii.gz", label, **label_geo)
    spec = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "organ": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    return Written({"root": str(root)}, image, lab)


def _folder_nifti(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = nii(root / "images" / "a.nii.gz", volume(), **image_geo)
    lab = nii(root / "masks" / "a.nii.gz", label, **label_geo)
    return Written({"root": str(root), "images": "images/*.nii.gz", "masks": "masks/*.nii.gz"}, image, lab)


def _folder_dicom(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    from medseg.data.dicom import read_dicom_series, write_dicom_series
    from medseg.data.io import write_volume

    spacing = image_geo.get("spacing_xyz", SPACING_XYZ)
    write_dicom_series(
        root / "dicom" / "a", volume(), tuple(reversed(spacing)), image_geo.get("origin", (0, 0, 0))
    )
    _, _, meta = read_dicom_series(root / "dicom" / "a")
    meta = dict(meta)
    if "spacing_xyz" in label_geo:
        meta["spacing_xyz"] = tuple(label_geo["spacing_xyz"])
    if "origin" in label_geo:
        meta["origin"] = tuple(label_geo["origin"])
    lab = write_volume(root / "masks" / "a.nii.gz", np.asarray(label), meta)
    return Written(
        {"root": str(root), "images": "dicom/*", "masks": "masks/*.nii.gz"}, root / "dicom" / "a", lab
    )


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def _grey() -> np.ndarray:
    return (np.random.default_rng(1).random((16, 16)) * 200).astype(np.uint8)


def _folder_png(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = _png(root / "images" / "a.png", _grey())
    return Written({"root": str(root)}, image, _png(root / "masks" / "a.png", label))


def _lgg(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    case = root / "TCGA_AA_0001_20000101"
    case.mkdir(parents=True)
    rgb = np.stack([_grey()] * 3, axis=-1)
    tifffile.imwrite(case / f"{case.name}_1.tif", rgb)
    tifffile.imwrite(case / f"{case.name}_1_mask.tif", np.asarray(label))
    return Written({"root": str(root)}, case / f"{case.name}_1.tif", case / f"{case.name}_1_mask.tif")


def _hc18(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = _png(root / "training_set" / "001_HC.png", _grey())
    lab = _png(root / "training_set" / "001_HC_Annotation.png", label)
    (root / "training_set_pixel_size_and_HC.csv").write_text(
        "filename,pixel size(mm),head circumference (mm)\n001_HC.png,0.2,50.0\n"
    )
    return Written({"root": str(root)}, image, lab)


def _busi(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = _png(root / "images" / "benign (1).png", _grey())
    return Written({"root": str(root)}, image, _png(root / "masks" / "benign (1).png", label))


def _drive(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    base = root / "DRIVE" / "training"
    (base / "images").mkdir(parents=True)
    tifffile.imwrite(base / "images" / "21_training.tif", np.stack([_grey()] * 3, axis=-1))
    lab = base / "1st_manual" / "21_manual1.gif"
    lab.parent.mkdir(parents=True)
    Image.fromarray(np.asarray(label)).save(lab)
    fov = base / "mask" / "21_training_mask.gif"
    fov.parent.mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(fov)
    return Written({"root": str(root)}, base / "images" / "21_training.tif", lab)


def _em_stack(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    for z in range(2):
        _png(root / "image" / f"{z:02d}.png", _grey())
        good = np.zeros((16, 16), np.uint8)
        good[2:12, 3:9] = 255
        _png(root / "label" / f"{z:02d}.png", label if z == 1 else good)
    return Written({"root": str(root)}, root / "image" / "01.png", root / "label" / "01.png")


def _microus(root: Path, label: np.ndarray, label_geo: dict, image_geo: dict) -> Written:
    image = nii(root / "train" / "micro_ultrasound_scans" / "microUS_train_01.nii.gz", volume(), **image_geo)
    lab = nii(root / "train" / "expert_annotations" / "expert_annotation_train_01.nii.gz", label, **label_geo)
    return Written({"root": str(root)}, image, lab)


LAYOUTS: dict[str, Layout] = {
    "msd": Layout("msd", _msd, float_labels=True, header=True, nifti_image=True),
    "nnunet": Layout("nnunet", _nnunet, float_labels=True, header=True, nifti_image=True),
    "folder (NIfTI)": Layout("folder", _folder_nifti, float_labels=True, header=True, nifti_image=True),
    "folder (DICOM series, NIfTI mask)": Layout("folder", _folder_dicom, float_labels=True, header=True),
    "folder (PNG)": Layout("folder", _folder_png, float_labels=False, header=False, dims=2),
    "lgg": Layout("lgg", _lgg, float_labels=True, header=False, dims=2),
    "hc18": Layout("hc18", _hc18, float_labels=False, header=False, dims=2),
    "busi": Layout("busi", _busi, float_labels=False, header=False, dims=2),
    "drive": Layout("drive", _drive, float_labels=False, header=False, dims=2),
    "em_stack": Layout("em_stack", _em_stack, float_labels=False, header=False, dims=2),
    "microus": Layout("microus", _microus, float_labels=True, header=True, nifti_image=True),
}
#: registered sources without files to read: nothing can be corrupted
FILELESS = {"phantom": "generates its volumes in memory (no files); `data phantom` writes the microus layout"}


def good_label(layout: Layout) -> np.ndarray:
    """A valid binary label in the layout's format: 0/1 volumes, 0/255 images."""
    if layout.dims == 3:
        return cube()
    label = np.zeros((16, 16), np.uint8)
    label[2:12, 3:9] = 255
    return label


@dataclass
class BadCase:
    """A label (or image header) that every source must refuse; ``expect`` matches the message."""

    name: str
    expect: str
    label: Callable[[np.ndarray], np.ndarray] = lambda good: good
    label_geo: dict = field(default_factory=dict)
    image_geo: dict = field(default_factory=dict)
    needs_float: bool = False
    needs_header: bool = False
    needs_nifti_image: bool = False
    names_image: bool = False  # the message names the image file too


def _with(value: float) -> Callable[[np.ndarray], np.ndarray]:
    def make(good: np.ndarray) -> np.ndarray:
        out = (good > 0).astype(np.float32)
        out[out > 0] = value
        return out

    return make


def _nan(good: np.ndarray) -> np.ndarray:
    out = (good > 0).astype(np.float32)
    out.flat[0] = np.nan
    return out


def _negative(good: np.ndarray) -> np.ndarray:
    out = (good > 0).astype(np.float32)
    out.flat[0] = -1
    return out


def _anti_aliased(good: np.ndarray) -> np.ndarray:
    out = good.astype(np.uint8).copy()
    out[out > 0] = 255
    rows = np.flatnonzero(out.reshape(-1, out.shape[-1]).any(axis=1))
    out.reshape(-1, out.shape[-1])[rows[0] - 1, :] = 128  # a grey edge above the object
    return out


def _wider(good: np.ndarray) -> np.ndarray:
    return np.pad(good, [(0, 0)] * (good.ndim - 1) + [(0, 2)])


BAD_CASES = [
    BadCase(
        "label values {0, 0.5}", r"mask holds non-integer values \{0, 0\.5\}", _with(0.5), needs_float=True
    ),
    BadCase(
        "label values {0, 1.5}", r"mask holds non-integer values \{0, 1\.5\}", _with(1.5), needs_float=True
    ),
    BadCase("label with a NaN", r"mask holds 1 NaN/inf", _nan, needs_float=True),
    BadCase("label with a -1", r"mask holds negative values", _negative, needs_float=True),
    BadCase(
        "anti-aliased label {0, 128, 255}",
        r"several labels|are not in .*labels|palette mask uses 3 colours|label sections hold values",
        _anti_aliased,
    ),
    BadCase(
        "label 2 pixels wider than its image",
        r"label and image are on different grids \(shape differ\)",
        _wider,
        names_image=True,
    ),
    BadCase(
        "label 50 mm off its image",
        r"label and image are on different grids \(origin differ\)",
        label_geo={"origin": (50.0, 0.0, 0.0)},
        needs_header=True,
        names_image=True,
    ),
    BadCase(
        "label at another spacing",
        r"label and image are on different grids \(spacing differ\)",
        label_geo={"spacing_xyz": (0.4, 0.4, 2.0)},
        needs_header=True,
        names_image=True,
    ),
    BadCase(
        "image with a zero pixdim",
        r"missing or invalid voxel spacing",
        image_geo={"zero_pixdim": True},
        needs_nifti_image=True,
    ),
]


def _skip_reason(layout: Layout, case: BadCase) -> str | None:
    if case.needs_float and not layout.float_labels:
        return f"{layout.source}'s masks are 8-bit images: they cannot hold {case.name}"
    if case.needs_header and not layout.header:
        return f"{layout.source}'s files carry no spacing or origin"
    if case.needs_nifti_image and not layout.nifti_image:
        return "the images are not NIfTI files (no pixdim)"
    return None


def _load(written: Written, source: str) -> list:
    return build(source, **written.options).load_all()


def test_every_registered_source_is_covered() -> None:
    covered = {layout.source for layout in LAYOUTS.values()} | set(FILELESS)
    assert covered == set(available()), f"sources without a contract test: {set(available()) - covered}"


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_a_valid_label_loads_as_its_binary_mask(name: str, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    label = good_label(layout)
    written = layout.write(tmp_path / "root", label, {}, {})
    samples = _load(written, layout.source)
    expected = label > 0
    mask = samples[-1].target_mask.reshape(-1, *expected.shape)[-1]  # a stack's last section
    assert mask.dtype == np.uint8 and np.array_equal(mask, expected)


@pytest.mark.parametrize("case", BAD_CASES, ids=[c.name for c in BAD_CASES])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_source_refuses_every_bad_label(name: str, case: BadCase, tmp_path: Path) -> None:
    layout = LAYOUTS[name]
    reason = _skip_reason(layout, case)
    if reason:
        pytest.skip(reason)
    label = case.label(good_label(layout))
    written = layout.write(tmp_path / "root", label, case.label_geo, case.image_geo)
    with pytest.raises(DataError, match=case.expect) as raised:
        _load(written, layout.source)
    message = str(raised.value)
    named = written.image.name if case.needs_nifti_image else written.label.name
    assert named in message, message
    if case.names_image:
        assert written.image.name in message, message
    assert "\n" not in message


def test_multi_class_maps_keep_their_classes(tmp_path: Path) -> None:
    """K ≥ 3 labels (msd, nnunet): class indices with num_classes / class_values / label_names,
    also from a label file stored as float32 with integral values (two Hippocampus files are)."""
    label = cube()
    label[1:3, 12:15, 2:5] = 2
    for name in ("msd", "nnunet"):
        root = tmp_path / name
        written = LAYOUTS[name].write(root, label.astype(np.float32), {}, {})
        spec = json.loads((root / "dataset.json").read_text())
        spec["labels"] = (
            {"0": "background", "1": "anterior", "2": "posterior"}
            if name == "msd"
            else {"background": 0, "anterior": 1, "posterior": 2}
        )
        (root / "dataset.json").write_text(json.dumps(spec))
        (sample,) = _load(written, name)
        assert sample.meta["num_classes"] == 3 and sample.meta["class_values"] == [0, 1, 2]
        assert sample.meta["label_names"] == ["background", "anterior", "posterior"]
        assert np.array_equal(sample.target_mask, label) and sample.target_mask.dtype == np.uint8
        (posterior,) = build(name, root=str(root), label=2).load_all()
        assert np.array_equal(posterior.target_mask, (label == 2).astype(np.uint8))


@pytest.mark.realdata
def test_hippocampus_loads_all_200_cases(shared_data: Path) -> None:
    root = shared_data / "hippocampus_mr"
    if not (root / "dataset.json").is_file():
        pytest.skip(f"{root} is absent (the MSD Hippocampus data set is not on this machine)")
    samples = build("msd", root=str(root)).load_all()
    assert len(samples) == 200
    assert {tuple(s.meta["class_values"]) for s in samples} == {(0, 1, 2)}
    assert set(np.unique(np.concatenate([s.target_mask.ravel() for s in samples])).tolist()) == {0, 1, 2}
