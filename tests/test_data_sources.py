"""Data sources on small synthetic layouts in tmp_path, plus real-data smoke tests (1–2 cases)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
import tifffile
from PIL import Image

from medseg.data import sources
from medseg.data.io import write_image
from medseg.data.phantom import generate_phantom_case, write_phantom_microus
from medseg.errors import ConfigError, DataError

SPACING_XYZ = (0.5, 0.4, 2.0)  # NIfTI zooms (x, y, z) → medseg spacing (2.0, 0.4, 0.5)


def _nii(path: Path, zyx: np.ndarray, zooms=SPACING_XYZ) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(zyx.transpose(2, 1, 0)), np.diag([*zooms, 1.0])), str(path))
    return path


def _microus_layout(root: Path, shape=(4, 6, 8)) -> Path:
    rng = np.random.default_rng(0)
    for subset, n in (("train", 2), ("test", 1)):
        for k in range(1, n + 1):
            tag = f"{subset}_{k:02d}"
            img = rng.integers(0, 255, size=shape).astype(np.uint8)
            m = (img > 128).astype(np.uint8)
            d = root / subset
            _nii(d / "micro_ultrasound_scans" / f"microUS_{tag}.nii.gz", img)
            _nii(d / "expert_annotations" / f"expert_annotation_{tag}.nii.gz", m)
            _nii(d / "non_expert_annotations" / f"nonexpert_annotation_{tag}.nii.gz", m)
            if subset == "test":
                _nii(d / "master_student_annotations" / f"master_student_annotation_{tag}.nii.gz", m)
    return root


def test_registry_has_every_source() -> None:
    assert {"microus", "lgg", "hc18", "busi", "drive", "folder", "phantom"} <= set(sources.available())


# ---------------------------------------------------------------- microus
def test_microus_layout(tmp_path: Path) -> None:
    src = sources.build("microus", root=_microus_layout(tmp_path))
    assert src.case_ids() == ["test_01", "train_01", "train_02"]
    (s,) = src.load_case("train_02")
    assert s.image.shape == (1, 4, 6, 8) and s.image.dtype == np.float32
    assert s.spacing == pytest.approx((2.0, 0.4, 0.5))
    assert set(s.masks) == {"expert", "non_expert"} and s.target == "expert"
    (t,) = src.load_case("test_01")
    assert set(t.masks) == {"expert", "non_expert", "master_student"}
    assert sources.build("microus", root=tmp_path, subset="train").case_ids() == ["train_01", "train_02"]
    assert sources.build("microus", root=tmp_path, subset="test").case_ids() == ["test_01"]


def test_microus_nested_root(tmp_path: Path) -> None:
    # a root holding one folder with the layout is accepted (as unpacked from Zenodo)
    _microus_layout(tmp_path / "Micro_Ultrasound_Prostate_Segmentation_Dataset")
    assert len(sources.build("microus", root=tmp_path)) == 3


def test_microus_phantom_end_to_end(tmp_path: Path) -> None:
    shape, spacing = (6, 32, 32), (1.5, 0.25, 0.3)
    root = write_phantom_microus(tmp_path / "mu", n_train=2, n_test=1, seed=3, shape=shape, spacing=spacing)
    for rel in (
        "train/micro_ultrasound_scans/microUS_train_01.nii.gz",
        "train/expert_annotations/expert_annotation_train_02.nii.gz",
        "train/non_expert_annotations/nonexpert_annotation_train_01.nii.gz",
        "test/micro_ultrasound_scans/microUS_test_01.nii.gz",
        "test/expert_annotations/expert_annotation_test_01.nii.gz",
        "test/non_expert_annotations/nonexpert_annotation_test_01.nii.gz",
    ):
        assert (root / rel).is_file(), rel
    src = sources.build("microus", root=root)
    assert src.case_ids() == ["test_01", "train_01", "train_02"]
    (s,) = src.load_case("test_01")
    ref = generate_phantom_case(2, shape, spacing, seed=3, n_patients=3)
    np.testing.assert_array_equal(s.image, ref.image)
    np.testing.assert_array_equal(s.masks["expert"], ref.masks["expert"])
    np.testing.assert_array_equal(s.masks["non_expert"], ref.masks["non_expert"])
    assert s.spacing == pytest.approx(spacing)


def test_microus_missing_expert(tmp_path: Path) -> None:
    root = _microus_layout(tmp_path)
    (root / "train/expert_annotations/expert_annotation_train_01.nii.gz").unlink()
    src = sources.build("microus", root=root)
    with pytest.raises(DataError, match="no expert annotation") as e:
        src.load_case("train_01")
    assert "expert_annotation_train_01.nii.gz" in str(e.value)


def test_microus_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    root = _microus_layout(tmp_path)
    bad = root / "train/non_expert_annotations/nonexpert_annotation_train_01.nii.gz"
    _nii(bad, np.zeros((4, 6, 7), np.uint8))
    with pytest.raises(DataError) as e:
        sources.build("microus", root=root).load_case("train_01")
    msg = str(e.value)
    assert "nonexpert_annotation_train_01.nii.gz" in msg and "microUS_train_01.nii.gz" in msg
    assert "(4, 6, 7)" in msg and "(4, 6, 8)" in msg


def test_microus_nan_and_corrupt_scan(tmp_path: Path) -> None:
    root = _microus_layout(tmp_path)
    img = np.ones((4, 6, 8), np.float32)
    img[1, 2, 3] = np.nan
    _nii(root / "train/micro_ultrasound_scans/microUS_train_01.nii.gz", img)
    src = sources.build("microus", root=root)
    with pytest.raises(DataError, match="NaN") as e:
        src.load_case("train_01")
    assert "microUS_train_01.nii.gz" in str(e.value)
    bad = root / "train/micro_ultrasound_scans/microUS_train_02.nii.gz"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError) as e:
        src.load_case("train_02")
    assert "microUS_train_02.nii.gz" in str(e.value)


def test_empty_or_missing_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as e:
        sources.build("microus", root=tmp_path / "nope")
    assert "nope" in str(e.value)
    with pytest.raises(DataError, match="micro_ultrasound_scans") as e:
        sources.build("microus", root=tmp_path)
    assert str(tmp_path) in str(e.value)
    src = sources.build("folder", root=tmp_path)
    with pytest.raises(DataError, match="no cases") as e:
        src.load_all()
    assert str(tmp_path) in str(e.value)
    with pytest.raises(DataError, match="images"):
        sources.build("busi", root=tmp_path)


# ---------------------------------------------------------------- lgg
def _lgg_layout(root: Path, numbers=(1, 2, 10)) -> Path:
    case = "TCGA_AA_0000_20000101"
    d = root / "kaggle_3m" / case
    d.mkdir(parents=True)
    for n in numbers:
        tifffile.imwrite(d / f"{case}_{n}.tif", np.full((8, 8, 3), n, np.uint8))
        m = np.zeros((8, 8), np.uint8)
        m[: n % 8, 0] = 255
        tifffile.imwrite(d / f"{case}_{n}_mask.tif", m)
    (root / "kaggle_3m" / "data.csv").write_text("Patient,x\nTCGA_AA_0000,1\n")
    return root


def test_lgg_orders_slices_numerically(tmp_path: Path) -> None:
    src = sources.build("lgg", root=_lgg_layout(tmp_path), pixel_spacing_mm=0.9, slice_thickness_mm=3.0)
    assert src.case_ids() == ["TCGA_AA_0000_20000101"]
    (s,) = src.load_case("TCGA_AA_0000_20000101")
    assert s.image.shape == (3, 3, 8, 8)
    assert s.image[0, :, 0, 0].tolist() == [1.0, 2.0, 10.0]  # not 1, 10, 2
    assert s.meta["slice_numbers"] == [1, 2, 10]
    assert s.masks["expert"][2].sum() == 2 and set(np.unique(s.masks["expert"])) <= {0, 1}
    assert s.spacing == (3.0, 0.9, 0.9) and s.meta["spacing_assumed"] is True


def test_lgg_missing_mask(tmp_path: Path) -> None:
    root = _lgg_layout(tmp_path)
    (root / "kaggle_3m/TCGA_AA_0000_20000101/TCGA_AA_0000_20000101_2_mask.tif").unlink()
    with pytest.raises(DataError, match="no mask") as e:
        sources.build("lgg", root=root).load_case("TCGA_AA_0000_20000101")
    assert "TCGA_AA_0000_20000101_2_mask.tif" in str(e.value)


# ---------------------------------------------------------------- hc18
def _hc18_layout(root: Path) -> Path:
    d = root / "training_set"
    d.mkdir(parents=True)
    rows = ["filename,pixel size(mm),head circumference (mm)"]
    for name, px in (("001_HC", 0.1), ("014_HC", 0.2), ("014_2HC", 0.25)):
        Image.fromarray(np.full((6, 9), 50, np.uint8)).save(d / f"{name}.png")
        ann = np.zeros((6, 9, 3), np.uint8)
        ann[1:4, 2:6, 0] = 255  # foreground on one channel only
        Image.fromarray(ann).save(d / f"{name}_Annotation.png")
        rows.append(f"{name}.png,{px},100.5")
    (root / "training_set_pixel_size_and_HC.csv").write_text("\n".join(rows) + "\n")
    return root


def test_hc18_grouping_and_spacing(tmp_path: Path) -> None:
    src = sources.build("hc18", root=_hc18_layout(tmp_path))
    assert src.case_ids() == ["001", "014"]
    ss = src.load_case("014")
    assert [s.meta["image_name"] for s in ss] == ["014_2HC.png", "014_HC.png"]
    assert {s.spacing for s in ss} == {(0.25, 0.25), (0.2, 0.2)}
    assert ss[0].image.shape == (1, 6, 9) and ss[0].masks["expert"].sum() == 12
    assert all(s.case_id == "014" for s in ss)


def test_hc18_missing_csv_row(tmp_path: Path) -> None:
    root = _hc18_layout(tmp_path)
    csv = root / "training_set_pixel_size_and_HC.csv"
    csv.write_text("\n".join(csv.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(DataError, match="no pixel size") as e:
        sources.build("hc18", root=root).load_case("014")
    assert "training_set_pixel_size_and_HC.csv" in str(e.value)


# ---------------------------------------------------------------- busi
def test_busi_names_with_spaces_and_channels(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 0] = 100
    for name in ("benign (2).png", "benign (10).png", "malignant (1).png"):
        Image.fromarray(rgb).save(tmp_path / "images" / name)
    write_image(tmp_path / "masks" / "benign (2).png", np.eye(5, 7, dtype=np.uint8))
    write_image(tmp_path / "masks" / "benign (10).png", np.eye(5, 7, dtype=np.uint8))
    # original Kaggle naming: two lesion masks merged
    write_image(tmp_path / "masks" / "malignant (1)_mask.png", np.eye(5, 7, dtype=np.uint8))
    write_image(tmp_path / "masks" / "malignant (1)_mask_1.png", np.eye(5, 7, k=2, dtype=np.uint8))
    src = sources.build("busi", root=tmp_path)
    assert src.case_ids() == ["benign (2)", "benign (10)", "malignant (1)"]
    (s,) = src.load_case("benign (10)")
    assert s.image.shape == (1, 5, 7) and s.image[0, 0, 0] == pytest.approx(29.9, abs=0.01)
    assert s.meta["class"] == "benign" and s.meta["spacing_assumed"] is True
    (m,) = src.load_case("malignant (1)")
    assert m.meta["class"] == "malignant" and m.masks["expert"].sum() == 5 + 5
    (c,) = sources.build("busi", root=tmp_path, channels=3).load_case("benign (2)")
    assert c.image.shape == (3, 5, 7)
    (tmp_path / "masks" / "benign (2).png").unlink()
    with pytest.raises(DataError, match="no mask") as e:
        src.load_case("benign (2)")
    assert "benign (2).png" in str(e.value)


def test_busi_shape_mismatch(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "images" / "benign (1).png")
    write_image(tmp_path / "masks" / "benign (1).png", np.zeros((5, 6), np.uint8))
    with pytest.raises(DataError, match=r"\(5, 6\).*\(5, 7\)"):
        sources.build("busi", root=tmp_path).load_case("benign (1)")


# ---------------------------------------------------------------- drive
def test_drive_synthetic(tmp_path: Path) -> None:
    d = tmp_path / "DRIVE"
    for sub, nn in (("training", "21"), ("test", "01")):
        for f in ("images", "1st_manual", "mask") + (("2nd_manual",) if sub == "test" else ()):
            (d / sub / f).mkdir(parents=True)
        tifffile.imwrite(d / sub / "images" / f"{nn}_{sub}.tif", np.full((6, 5, 3), 7, np.uint8))
        Image.fromarray(np.eye(6, 5, dtype=np.uint8) * 255).save(d / sub / "1st_manual" / f"{nn}_manual1.gif")
        Image.fromarray(np.ones((6, 5), np.uint8) * 255).save(d / sub / "mask" / f"{nn}_{sub}_mask.gif")
        if sub == "test":
            p = Image.fromarray(np.eye(6, 5, k=1, dtype=np.uint8), mode="P")
            p.putpalette([4, 2, 4, 252, 254, 252] + [0] * 762)
            p.save(d / sub / "2nd_manual" / f"{nn}_manual2.gif")
    src = sources.build("drive", root=tmp_path)
    assert src.case_ids() == ["test_01", "training_21"]
    (s,) = src.load_case("test_01")
    assert s.image.shape == (3, 6, 5) and s.target == "annotator_1"
    assert s.masks["annotator_2"].sum() == 4 and s.masks["annotator_1"].sum() == 5
    assert s.meta["fov"].sum() == 30
    (t,) = sources.build("drive", root=tmp_path / "DRIVE", subset="train").load_case("training_21")
    assert set(t.masks) == {"annotator_1"}


# ---------------------------------------------------------------- folder
def test_folder_2d_with_suffix_and_unmatched(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    for k in ("a", "b"):
        write_image(tmp_path / "img" / f"{k}.png", np.full((4, 4), 9, np.uint8))
        write_image(tmp_path / "lab" / f"{k}_mask.png", np.eye(4, dtype=np.uint8))
    src = sources.build(
        "folder", root=tmp_path, images="img/*.png", masks="lab/*.png", mask_suffix="_mask", spacing=0.2
    )
    assert src.case_ids() == ["a", "b"]
    (s,) = src.load_case("a")
    assert s.image.shape == (1, 4, 4) and s.spacing == (0.2, 0.2) and s.meta["spacing_assumed"] is False
    assert s.masks["expert"].sum() == 4
    write_image(tmp_path / "img" / "c.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="images without a mask") as e:
        sources.build(
            "folder", root=tmp_path, images="img/*.png", masks="lab/*.png", mask_suffix="_mask"
        ).case_ids()
    assert "c.png" in str(e.value)
    unl = sources.build("folder", root=tmp_path, images="img/*.png", masks=None)
    assert unl.load_case("c")[0].masks == {}


def test_folder_3d_nrrd_labels(tmp_path: Path) -> None:
    img = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    lab = np.zeros((3, 4, 5), np.int16)
    lab[0, 0, :2] = 1
    lab[1, 1, :3] = 7
    for name, arr in (("x_image.nrrd", img), ("x_label.nrrd", lab)):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((0.5, 0.6, 3.0))
        sitk.WriteImage(im, str(tmp_path / name))
    union = sources.build("folder", root=tmp_path, images="*_image.nrrd", masks="*_label.nrrd", label="any")
    (s,) = union.load_case("x")
    assert s.image.shape == (1, 3, 4, 5) and s.spacing == pytest.approx((3.0, 0.6, 0.5))
    assert s.masks["expert"].sum() == 5
    strict = sources.build("folder", root=tmp_path, images="*_image.nrrd", masks="*_label.nrrd")
    with pytest.raises(DataError, match=r"x_label.nrrd: mask holds several labels \{0, 1, 7\}"):
        strict.load_case("x")
    with pytest.raises(DataError, match="label must be an integer label value or 'any'"):
        sources.build("folder", root=tmp_path, images="*_image.nrrd", masks="*_label.nrrd", label="all")
    src7 = sources.build("folder", root=tmp_path, images="*_image.nrrd", masks="*_label.nrrd", label=7)
    (s7,) = src7.load_case("x")
    assert s7.masks["expert"].sum() == 3


def test_folder_3d_nifti_mismatch(tmp_path: Path) -> None:
    _nii(tmp_path / "im" / "c1.nii.gz", np.zeros((3, 4, 5), np.float32))
    _nii(tmp_path / "gt" / "c1.nii.gz", np.zeros((3, 4, 6), np.uint8))
    with pytest.raises(DataError) as e:
        sources.build("folder", root=tmp_path, images="im/*.nii.gz", masks="gt/*.nii.gz").load_case("c1")
    assert "(3, 4, 6)" in str(e.value) and "c1.nii.gz" in str(e.value)


# ---------------------------------------------------------------- phantom
def test_phantom_source() -> None:
    src = sources.build("phantom", root=None, n_patients=3, seed=1, shape=(6, 24, 24))
    assert src.case_ids() == ["phantom_00", "phantom_01", "phantom_02"]
    (s,) = src.load_case("phantom_01")
    assert s.image.shape == (1, 6, 24, 24) and set(s.masks) == {"expert", "non_expert"}
    assert src.load_case("phantom_01")[0] is s  # cached
    t = sources.build("phantom", n_patients=1, shape=(6, 24, 24), target="non_expert")
    assert t.load_case("phantom_00")[0].target == "non_expert"
    with pytest.raises(DataError, match="unknown case"):
        src.load_case("phantom_09")


# ---------------------------------------------------------------- real data (1–2 cases each)
@pytest.mark.realdata
def test_real_lgg_one_patient(shared_dataset: Callable[..., Path]) -> None:
    src = sources.build("lgg", root=shared_dataset("lgg_mri", "kaggle_3m"))
    ids = src.case_ids()
    assert len(ids) == 30 and all(i.startswith("TCGA_") for i in ids)
    (s,) = src.load_case(ids[0])
    assert s.image.shape[0] == 3 and s.image.shape[2:] == (256, 256)
    assert s.meta["slice_numbers"] == sorted(s.meta["slice_numbers"])
    assert s.meta["slice_numbers"][:3] == [1, 2, 3] and s.masks["expert"].any()


@pytest.mark.realdata
def test_real_hc18(shared_dataset: Callable[..., Path]) -> None:
    src = sources.build("hc18", root=shared_dataset("hc18_us"))
    (s,) = src.load_case("000")
    assert s.spacing == pytest.approx((0.069135804, 0.069135804))
    assert s.image.shape == (1, 540, 800) and 0 < s.masks["expert"].mean() < 1
    multi = [c for c in src.case_ids()[:80] if len(src._index()[c]) > 1]
    assert multi, "some subject has several images"
    ss = src.load_case(multi[0])
    assert len(ss) >= 2 and len({s.meta["image_name"] for s in ss}) == len(ss)


@pytest.mark.realdata
def test_real_busi(shared_dataset: Callable[..., Path]) -> None:
    src = sources.build("busi", root=shared_dataset("busi_us"))
    ids = src.case_ids()
    assert len(ids) == 120 and any(" (" in i for i in ids)
    (s,) = src.load_case(next(i for i in ids if i.startswith("malignant")))
    assert s.meta["class"] == "malignant" and s.image.shape[0] == 1 and s.masks["expert"].any()


@pytest.mark.realdata
def test_real_drive_test_two_annotators(shared_dataset: Callable[..., Path]) -> None:
    src = sources.build("drive", root=shared_dataset("drive_retina"), subset="test")
    assert len(src.case_ids()) == 10
    (s,) = src.load_case("test_01")
    assert s.image.shape == (3, 584, 565)
    assert set(s.masks) == {"annotator_1", "annotator_2"}
    for m in s.masks.values():
        assert 0.03 < m.mean() < 0.2  # vessels, not the palette background
    assert 0.5 < s.meta["fov"].mean() < 0.9


@pytest.mark.realdata
def test_real_volumes_3d_folder(shared_dataset: Callable[..., Path]) -> None:
    root = shared_dataset("volumes_3d")
    src = sources.build("folder", root=root, images="*_image.nrrd", masks="*_label.nrrd")
    assert src.case_ids() == ["brain1", "brain2", "breast1"]
    (s,) = src.load_case("breast1")
    assert s.image.shape == (1, 21, 120, 45) and s.spacing == pytest.approx((2.1, 0.664062, 0.664062))
    pro = sources.build(
        "folder",
        root=root,
        images="prostate_phantom_subvolume.nrrd",
        masks="prostate_phantom_subvolume-label.nrrd",
        label="any",
    )
    (p,) = pro.load_all()
    assert set(np.unique(p.masks["expert"])) == {0, 1}  # labels 0/1/7/8/9: their union, on purpose
    strict = sources.build(
        "folder",
        root=root,
        images="prostate_phantom_subvolume.nrrd",
        masks="prostate_phantom_subvolume-label.nrrd",
    )
    with pytest.raises(DataError, match=r"several labels \{0, 1, 7, 8, 9\}.*label: any"):
        strict.load_all()


def test_source_options_are_checked_against_the_constructor() -> None:
    assert list(sources.source_options("phantom"))[:3] == ["root", "n_patients", "seed"]
    sources.check_source_options("phantom", {"n_patients": 2})
    with pytest.raises(
        ConfigError,
        match=r"unknown option 'n_patient' for the phantom source .*its options are: root, n_patients",
    ):
        sources.build("phantom", n_patient=2)
    with pytest.raises(ConfigError, match=r"unknown options 'a', 'b' for the msd source"):
        sources.check_source_options("msd", {"root": "x", "a": 1, "b": 2})
    with pytest.raises(ConfigError, match=r"the lgg source needs its data folder: give --root PATH"):
        sources.build("lgg")
    with pytest.raises(KeyError, match=r"unknown data source 'nosuch'"):
        sources.build("nosuch")


def test_spacing_values_read_text_like_the_spacing_option() -> None:
    from medseg.data.sources._common import parse_spacing, spacing_values

    assert spacing_values("0.5,0.25", "r") == (0.5, 0.25) and spacing_values(2, "r") == (2.0,)
    assert parse_spacing("0.5, 0.5", 2, "r") == (0.5, 0.5) and parse_spacing(0.3, 2, "r") == (0.3, 0.3)
    with pytest.raises(DataError, match=r"r: spacing option must be positive numbers in mm, got 'a,b'"):
        spacing_values("a,b", "r")
    with pytest.raises(DataError, match=r"one value per axis \(2\)"):
        parse_spacing([0.5], 2, "r")
    assert sources.build("phantom", n_patients=1, spacing="1,0.3,0.3").spacing == (1.0, 0.3, 0.3)
