"""Generic image/mask pairs found by glob patterns, 2D or 3D.

``images`` and ``masks`` are glob patterns relative to ``root``. Each file gets a *key*: the text
matched by the wildcards of the pattern's file-name part (``*_image.nrrd`` on
``brain1_image.nrrd`` → ``brain1``; ``images/*.png`` on ``images/a.png`` → ``a``), with a
trailing image extension (``.nii.gz``, ``.png``, ...) and the ``image_suffix`` / ``mask_suffix``
options (``_mask``) stripped. Images and masks with the same key form a case (the key is the
case id). An image without a mask, or a mask without an image, is a :class:`DataError` listing
them; ``masks=None`` reads unlabeled images (no masks).

Formats: PNG/TIFF/GIF/JPEG are 2D (``C×H×W``; ``channels`` 1/3/None = as stored) with spacing
from the ``spacing`` option (default 1.0 mm, then ``meta["spacing_assumed"] = True``);
NIfTI/NRRD/MHA are 3D (``C×D×H×W``) with the spacing of the header, and so is a DICOM series: a
pattern that matches folders of DICOM slices (``images="dicom/*"``) reads each as one volume, in HU
(:mod:`medseg.data.dicom`). Masks are read by the mask
policy (:mod:`medseg.data.mask_policy`): a binary mask ({0, 1}, {0, 255}, {0, k}) is foreground
where non-zero; a multi-label map such as pyradiomics' 0/1/7/8/9 is an error unless ``label``
picks one value, or ``label: any`` takes their union on purpose. With ``labels: [v1, …, vK]``
the mask is a class-index map instead (multi-class segmentation): label value ``vi`` becomes
class ``i`` (1..K), any other value class 0 (background), and every sample gets
``meta["num_classes"] = K + 1`` and ``meta["class_values"] = [0, v1, …, vK]`` (class index →
label value, to write predictions back in the file's own labels).

Example (``../shared/data/volumes_3d``)::

    build("folder", root=".../volumes_3d", images="*_image.nrrd", masks="*_label.nrrd")
    build("folder", root=".../volumes_3d", images="prostate_phantom_subvolume.nrrd",
          masks="prostate_phantom_subvolume-label.nrrd")
    build("folder", root=".../volumes_3d", images="prostate_phantom_subvolume.nrrd",
          masks="prostate_phantom_subvolume-label.nrrd", labels=[1, 7, 8, 9])  # 5 classes
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medseg.data.dicom import is_dicom_series_dir
from medseg.data.geometry import Geometry
from medseg.data.io import IMAGE_2D_EXTS, ITK_EXTS, NIFTI_EXTS, file_format, read_image, strip_extension
from medseg.data.mask_policy import binary_mask, class_index_map
from medseg.data.pairs import read_label_on_image
from medseg.data.plausibility import check_spacing_plausible
from medseg.data.sample import Sample
from medseg.data.sources._common import (
    image_geometry,
    natural_key,
    parse_spacing,
    spacing_values,
    to_channels_first_2d,
)
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Glob file-name pattern → regex whose groups are the wildcard matches."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("(.*)")
        elif c == "?":
            out.append("(.)")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("^" + "".join(out) + "$")


def _check_labels(labels: list[int], label: int | None, root: Path | None) -> list[int]:
    """The ``labels`` option as a list of distinct non-zero integers (at most 255 classes)."""
    if label is not None:
        raise DataError("set either 'label' (binary) or 'labels' (multi-class), not both", root)
    if isinstance(labels, (str, bytes)) or not hasattr(labels, "__iter__"):
        raise DataError(f"labels must be a list of label values, got {labels!r}", root)
    values = list(labels)
    if (
        not values
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values)
        or 0 in values
        or len(set(values)) != len(values)
        or len(values) > 255
    ):
        raise DataError(
            f"labels must be 1 to 255 distinct non-zero integer label values (0 is the background), "
            f"got {labels!r}",
            root,
        )
    return [int(v) for v in values]


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _key(path: Path, regex: re.Pattern[str], suffix: str) -> str:
    m = regex.match(path.name)
    key = "".join(m.groups()) if m and m.groups() else ""
    if key.lower().endswith(NIFTI_EXTS + ITK_EXTS + IMAGE_2D_EXTS):
        key = strip_extension(key)
    if suffix and key.endswith(suffix):
        key = key[: -len(suffix)]
    return key


@SOURCES.register("folder")
class FolderSource(Source):
    """Image/mask pairs matched by glob patterns (PNG/TIFF 2D, NIfTI/NRRD/MHA 3D).

    Options:
        root: base folder of the patterns.
        images: glob for images (default ``"images/*.png"``).
        masks: glob for masks (default ``"masks/*.png"``), or None for unlabeled data.
        mask_suffix: removed from mask keys (e.g. ``"_mask"``); default ``""``.
        image_suffix: removed from image keys; default ``""``.
        spacing: mm per pixel for 2D formats (scalar or per axis); None → 1.0, assumed.
        channels: 2D only: 1 (grey), 3 (RGB) or None (as stored).
        label: only this label value is foreground; ``"any"``: every non-zero label (union);
            default: the mask must be binary (a multi-label map is an error).
        labels: non-zero label values, one class each (1..K in this order): the mask becomes a
            class-index map and ``meta`` gets ``num_classes`` (K + 1) and ``class_values``.
            Excludes ``label``.
        annotator: name of the mask's annotator (default ``"expert"``).
    """

    annotators = ("expert",)

    def __init__(
        self,
        root: str | Path,
        images: str = "images/*.png",
        masks: str | None = "masks/*.png",
        mask_suffix: str = "",
        image_suffix: str = "",
        spacing: float | tuple[float, ...] | None = None,
        channels: int | None = None,
        label: int | str | None = None,
        annotator: str = "expert",
        target: str | None = None,
        labels: list[int] | None = None,
    ) -> None:
        super().__init__(root, target or annotator)
        if self.root is None:
            raise DataError("the folder source needs a root folder")
        self.images, self.masks = images, masks
        self.mask_suffix, self.image_suffix = mask_suffix, image_suffix
        self.spacing_option = spacing
        if spacing is not None:  # warned about once here, not for every image
            check_spacing_plausible(spacing_values(spacing, str(self.root)), self.root, what="spacing option")
        self.channels, self.label, self.annotator = channels, label, annotator
        if label is not None and label != "any" and (isinstance(label, bool) or not isinstance(label, int)):
            raise DataError(f"label must be an integer label value or 'any', got {label!r}", self.root)
        self.labels = None if labels is None else _check_labels(labels, label, self.root)
        self._pairs: dict[str, tuple[Path, Path | None]] | None = None

    def _collect(self, pattern: str, suffix: str) -> dict[str, Path]:
        assert self.root is not None
        regex = _pattern_regex(Path(pattern).name)
        found: dict[str, Path] = {}
        for p in sorted(self.root.glob(pattern)):
            if not p.is_file() and not is_dicom_series_dir(p):  # a DICOM series is a folder
                continue
            k = _key(p, regex, suffix) or strip_extension(p.name)
            if k in found:
                raise DataError(f"files {found[k].name} and {p.name} map to the same case id {k!r}", p.parent)
            found[k] = p
        return found

    def pairs(self) -> dict[str, tuple[Path, Path | None]]:
        """Case id → (image, mask or None)."""
        if self._pairs is None:
            imgs = self._collect(self.images, self.image_suffix)
            if self.masks is None:
                self._pairs = {k: (p, None) for k, p in imgs.items()}
                return self._pairs
            msks = self._collect(self.masks, self.mask_suffix)
            explicit = not _has_wildcard(self.images) and not _has_wildcard(self.masks)
            if explicit and len(imgs) == len(msks) == 1:
                # one file named explicitly on each side: a pair whatever the names
                msks = {next(iter(imgs)): next(iter(msks.values()))}
            lone_i = sorted(str(imgs[k]) for k in set(imgs) - set(msks))
            lone_m = sorted(str(msks[k]) for k in set(msks) - set(imgs))
            if lone_i or lone_m:
                parts = []
                if lone_i:
                    parts.append(f"images without a mask: {lone_i}")
                if lone_m:
                    parts.append(f"masks without an image: {lone_m}")
                raise DataError("unmatched files (" + "; ".join(parts) + ")", self.root)
            self._pairs = {k: (imgs[k], msks[k]) for k in imgs}
        return self._pairs

    def case_ids(self) -> list[str]:
        """Sorted case ids (the file keys)."""
        return sorted(self.pairs(), key=natural_key)

    def _read_mask(self, path: Path, image_path: Path, grid: Geometry) -> np.ndarray:
        # the mask policy (JPEG, NaN, non-integer → DataError) and the image's grid
        labels, _ = read_label_on_image(path, image_path, grid)
        if self.labels is not None:  # the labels asked for, one class each; other values background
            return class_index_map(labels, path, [0, *self.labels], others="background")
        if self.label == "any":
            return binary_mask(labels, path, multi_label="union")
        return binary_mask(
            labels,
            path,
            self.label,
            hint="set the folder option label: K (one label), label: any (their union) or "
            "labels: [...] (one class each)",
        )

    def load_case(self, case_id: str) -> list[Sample]:
        """The pair as one 2D or 3D sample."""
        if case_id not in self.pairs():
            raise DataError(f"unknown case id {case_id!r}", self.root)
        ip, mp = self.pairs()[case_id]
        arr, spacing, meta = read_image(ip)
        meta = dict(meta)
        if file_format(ip) == "2d":
            img = to_channels_first_2d(arr, self.channels, ip)
            spacing = parse_spacing(
                1.0 if self.spacing_option is None else self.spacing_option, 2, str(ip), plausible=False
            )
            meta["spacing_assumed"] = self.spacing_option is None
        else:
            nsp = len(spacing or ())
            if arr.ndim == nsp:
                img = arr[None]
            elif arr.ndim == nsp + 1:  # vector image, channels last
                img = np.moveaxis(arr, -1, 0)
            else:
                raise DataError(f"cannot interpret array of shape {arr.shape} with spacing {spacing}", ip)
            meta["spacing_assumed"] = False
        if self.labels is not None:
            meta["num_classes"] = len(self.labels) + 1
            meta["class_values"] = [0, *self.labels]
        masks = {}
        if mp is not None:
            masks[self.annotator] = self._read_mask(mp, ip, image_geometry(img.shape[1:], meta))
            meta["mask_path"] = str(mp)
        return [
            Sample(
                image=img.astype(np.float32),
                masks=masks,
                target=self.target,
                spacing=spacing,  # type: ignore[arg-type]
                case_id=case_id,
                source_path=str(ip),
                meta=meta,
            )
        ]
