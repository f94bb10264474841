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
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.io import strip_extension
from medseg.data.sample import Sample
from medseg.data.sources._common import check_same_shape, natural_key
from medseg.data.sources.base import SOURCES, Source
from medseg.data.sources.nnunet import read_dataset_json
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
    if any(not np.isfinite(z) or z <= 0 for z in zooms):
        raise DataError(f"invalid voxel spacing {zooms}", path)
    array = np.ascontiguousarray(data.transpose(3, 2, 1, 0))  # x,y,z,c -> c,z,y,x
    meta = {"format": "nifti", "path": str(path), "affine": np.array(img.affine, dtype=np.float64)}
    return array, (zooms[2], zooms[1], zooms[0]), meta


def _msd_labels(labels: dict[str, Any], where: Path) -> dict[int, str]:
    out = {int(k): str(v) for k, v in labels.items()}
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
        self.spec = read_dataset_json(self.spec_path, ("modality", "labels", "training"))
        self.modalities = [str(self.spec["modality"][k]) for k in sorted(self.spec["modality"], key=int)]
        self.labels = _msd_labels(self.spec["labels"], self.spec_path)
        if label is not None and label not in self.labels:
            raise DataError(f"label {label} is not in dataset.json labels {self.labels}", self.spec_path)
        self._pairs = self._list_pairs()

    def _resolve(self, entry: str) -> Path:
        assert self.root is not None
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
                image = self._resolve(item if isinstance(item, str) else item["image"])
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
            labels, _, _ = read_nifti_channels(label_path)
            labels = labels[0]
            check_same_shape(image.shape[1:], image_path, labels.shape, label_path)
            unknown = sorted(set(np.unique(labels).astype(int).tolist()) - set(self.labels))
            if unknown:
                raise DataError(
                    f"label values {unknown} are not in dataset.json labels {self.labels}", label_path
                )
            names = [self.labels[v] for v in sorted(self.labels)]
            if self.label is not None:
                masks[self.target] = (labels == self.label).astype(np.uint8)
                meta["label_names"] = ["background", self.labels[self.label]]
            elif len(self.labels) == 2:
                masks[self.target] = (labels != 0).astype(np.uint8)
                meta["label_names"] = names
            else:
                masks[self.target] = labels.astype(np.uint8)
                meta.update(num_classes=len(self.labels), class_values=sorted(self.labels), label_names=names)
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
