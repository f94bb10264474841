"""Medical Segmentation Decathlon tasks (Antonelli et al. 2022, Nat. Commun.), in their own layout.

Layout::

    ROOT = TaskXX_Name/
      dataset.json   {"modality": {"0": "FLAIR", "1": "T1w", ...},
                      "labels": {"0": "background", "1": "edema", ...},
                      "training": [{"image": "./imagesTr/X.nii.gz", "label": "./labelsTr/X.nii.gz"}, ...],
                      "test": ["./imagesTs/Y.nii.gz", ...]}
      imagesTr/  labelsTr/  imagesTs/

A multi-modal case is one 4D NIfTI (``x×y×z×C``, the last axis in ``modality`` order): it loads as
``C×D×H×W``, spacing ``(sz, sy, sx)`` from the header zooms. The case id is the file name without
``.nii.gz``. macOS ``._*`` resource files, which the Decathlon archives carry, are ignored because
only the files that ``dataset.json`` lists are read. Masks as in the ``nnunet`` source: binary for
one foreground label, else a class-index map (``num_classes``, ``class_values``, ``label_names``),
or binary on ``label``.

Checks, as the ``nnunet`` source's: ``dataset.json`` types and integer label values; zero or
invalid voxel sizes in an image header are an error (as ``evaluate`` and ``predict`` give); each
label file is read by the mask policy (a label map stored as float32 with integral values, as two
Hippocampus files are, is read as its integers; 0.5 or 1.5 is an error) and must lie on its
image's grid; ``numTraining`` differing from the ``training`` list is a warning.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import _raw_nifti_zooms, strip_extension
from medseg.data.pairs import read_label_on_image
from medseg.data.plausibility import check_case_count, check_spacing_plausible
from medseg.data.sample import Sample
from medseg.data.sources._common import image_geometry, natural_key
from medseg.data.sources.base import SOURCES, Source
from medseg.data.sources.nnunet import dataset_json_mask, label_value, read_dataset_json
from medseg.errors import DataError


def read_nifti_channels(path: Path) -> tuple[np.ndarray, tuple[float, float, float], dict[str, Any]]:
    """A 3D or 4D NIfTI as ``C×D×H×W`` (channels from the 4th axis), spacing ``(sz, sy, sx)``."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    if not path.is_file():
        raise DataError("file listed in dataset.json does not exist", path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as e:
        raise DataError(f"cannot read NIfTI ({type(e).__name__}: {e})", path) from e
    if data.ndim == 3:
        data = data[..., None]
    if data.ndim != 4:
        raise DataError(f"expected a 3D or 4D NIfTI, got shape {data.shape}", path)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    raw = _raw_nifti_zooms(path, img)[:3]  # nibabel reads a zero pixdim as 1
    if any(not np.isfinite(z) or z <= 0 for z in (*zooms, *raw)):
        raise DataError(f"missing or invalid voxel spacing in the NIfTI header (pixdim {raw})", path)
    array = np.ascontiguousarray(data.transpose(3, 2, 1, 0))  # x,y,z,c -> c,z,y,x
    meta = {"format": "nifti", "path": str(path), "affine": np.array(img.affine, dtype=np.float64)}
    spacing = (zooms[2], zooms[1], zooms[0])
    check_spacing_plausible(spacing, path, array.shape[1:])
    return array, spacing, meta


def _msd_labels(labels: dict[str, Any], where: Path) -> dict[int, str]:
    if not isinstance(labels, dict):
        raise DataError(
            f'dataset.json \'labels\' must map each value to its name ({{"0": "background", "1": ...}}), '
            f"got {type(labels).__name__} {labels!r:.80}",
            where,
        )
    out = {label_value(k, str(v), where): str(v) for k, v in labels.items()}
    if 0 not in out or sorted(out) != list(range(len(out))):
        raise DataError(f"labels must be 0..K-1 with 0 the background, got {labels}", where)
    return out


@SOURCES.register("msd")
class MSDSource(Source):
    """Medical Segmentation Decathlon ``TaskXX_Name/`` (dataset.json with modality and training).

    Options:
        root: the ``TaskXX_Name`` folder.
        subset: ``"train"`` (the ``training`` pairs) or ``"test"`` (the ``test`` images, no masks).
        label: only this label value is the (binary) foreground.
    """

    annotators = ("expert",)

    def __init__(
        self, root: str | Path, subset: str = "train", label: int | None = None, target: str | None = None
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the msd source needs the TaskXX_Name folder as root")
        if subset not in ("train", "test"):
            raise DataError(f"subset must be 'train' or 'test', got {subset!r}", self.root)
        self.subset, self.label = subset, label
        self.spec_path = self.root / "dataset.json"
        self.spec = read_dataset_json(
            self.spec_path,
            ("modality", "labels", "training"),
            {"modality": dict, "labels": dict, "training": list, "test": list},
        )
        keys = sorted(self.spec["modality"], key=lambda k: label_value(k, "modality", self.spec_path))
        if [label_value(k, "modality", self.spec_path) for k in keys] != list(range(len(keys))):
            raise DataError(
                f"modality keys must be 0..C-1, got {list(self.spec['modality'])}", self.spec_path
            )
        self.modalities = [str(self.spec["modality"][k]) for k in keys]
        self.labels = _msd_labels(self.spec["labels"], self.spec_path)
        if label is not None and label not in self.labels:
            raise DataError(f"label {label} is not in dataset.json labels {self.labels}", self.spec_path)
        self._pairs = self._list_pairs()
        if subset == "train":
            check_case_count(self.spec.get("numTraining"), len(self._pairs), self.spec_path)

    def _resolve(self, entry: object) -> Path:
        assert self.root is not None
        if not isinstance(entry, str):
            raise DataError(f"file entries must be paths (strings), got {entry!r}", self.spec_path)
        return (self.root / entry).resolve() if not Path(entry).is_absolute() else Path(entry)

    def _list_pairs(self) -> dict[str, tuple[Path, Path | None]]:
        pairs: dict[str, tuple[Path, Path | None]] = {}
        if self.subset == "train":
            for item in self.spec["training"]:
                if not isinstance(item, dict) or "image" not in item or "label" not in item:
                    raise DataError(
                        f"each training entry needs 'image' and 'label', got {item!r}", self.spec_path
                    )
                image = self._resolve(item["image"])
                pairs[strip_extension(image.name)] = (image, self._resolve(item["label"]))
        else:
            for item in self.spec.get("test", []):
                if isinstance(item, dict) and "image" not in item:
                    raise DataError(f"each test entry is a path or has 'image', got {item!r}", self.spec_path)
                image = self._resolve(item["image"] if isinstance(item, dict) else item)
                pairs[strip_extension(image.name)] = (image, None)
        return pairs

    def case_ids(self) -> list[str]:
        """Case ids: image file names without ``.nii.gz``, as dataset.json lists them."""
        return sorted(self._pairs, key=natural_key)

    def load_case(self, case_id: str) -> list[Sample]:
        """One 3D sample: ``C×D×H×W`` (C = the modalities) with its label map."""
        if case_id not in self._pairs:
            raise DataError(f"unknown case id {case_id!r}", self.spec_path)
        image_path, label_path = self._pairs[case_id]
        image, spacing, meta = read_nifti_channels(image_path)
        if image.shape[0] != len(self.modalities):
            raise DataError(
                f"image has {image.shape[0]} channel(s), dataset.json lists "
                f"{len(self.modalities)} modalities",
                image_path,
            )
        meta["channel_names"] = self.modalities
        meta["spacing_assumed"] = False
        masks = {}
        if label_path is not None:
            if not label_path.is_file():
                raise DataError("file listed in dataset.json does not exist", label_path)
            labels, _ = read_label_on_image(label_path, image_path, image_geometry(image.shape[1:], meta))
            masks[self.target], extra = dataset_json_mask(
                labels, label_path, self.labels, self.label, self.spec_path
            )
            meta.update(extra)
            meta["mask_path"] = str(label_path)
        return [
            Sample(
                image=image.astype(np.float32),
                masks=masks,
                target=self.target,
                spacing=spacing,
                case_id=case_id,
                source_path=str(image_path),
                meta=meta,
            )
        ]
