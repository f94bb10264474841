"""nnU-Net v2 raw data sets (Isensee et al. 2021), in their own layout.

Layout::

    ROOT = DatasetXXX_Name/
      dataset.json       {"channel_names": {"0": "CT", ...}, "labels": {"background": 0, "tumor": 1, ...},
                          "numTraining": N, "file_ending": ".nii.gz"}
      imagesTr/CASE_0000<file_ending>   one file per channel: _0000, _0001, ...
      labelsTr/CASE<file_ending>        integer labels 0..K-1
      imagesTs/CASE_0000<file_ending>   (optional) test images, no labels

``subset`` ``"train"`` reads ``imagesTr`` + ``labelsTr``, ``"test"`` reads ``imagesTs`` (samples
without masks). The channels of a case are stacked in ``channel_names`` order (image
``C×D×H×W``, or ``C×H×W`` for 2D file endings such as ``.png``), spacing from the header (3D) or
the ``spacing`` option (2D; nnU-Net itself assumes 1); an RGB image file (``CASE_0000.png``) holds
three channels, as in nnU-Net's natural-image data sets. Masks: with one foreground label a binary
mask; with several a class-index map (``meta["num_classes"]`` = K, ``class_values``, and
``label_names``), unless ``label`` picks one label as the binary foreground. Region-based labels
(a list of values per name) are an error. ``meta["channel_names"]`` keeps the channel names.

Checks (the reader contract of every source): ``dataset.json``'s keys have the right types and its
label values are integers 0..K-1 (a value such as 1.7 is an error, never truncated); each label
file is read by the mask policy (NaN, negative or non-integer values are errors) and must lie on
its image's grid (shape, spacing, origin, direction, as nnU-Net's own integrity check), and every
channel on the first channel's; a label value that ``dataset.json`` does not list is an error; a
``numTraining`` that differs from the cases found is a warning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.geometry import check_label_geometry, geometry_of
from medseg.data.io import IMAGE_2D_EXTS, file_format, read_image
from medseg.data.mask_policy import binary_mask, class_index_map
from medseg.data.pairs import read_label_on_image
from medseg.data.plausibility import check_case_count, check_spacing_plausible
from medseg.data.sample import Sample
from medseg.data.sources._common import (
    image_geometry,
    natural_key,
    parse_spacing,
    require_dir,
    spacing_values,
)
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


_JSON_TYPES = {dict: "a mapping {...}", list: "a list [...]", str: "a string", int: "an integer"}


def read_dataset_json(
    path: Path, required: tuple[str, ...], types: dict[str, type] | None = None
) -> dict[str, Any]:
    """The ``dataset.json`` of an nnU-Net or MSD data set, with its required keys and their JSON
    types (``types``: key → ``dict``/``list``/``str``/``int``) checked; errors name the file."""
    if not path.is_file():
        raise DataError("dataset.json not found", path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse dataset.json ({e})", path) from e
    if not isinstance(spec, dict):
        raise DataError(f"dataset.json must hold a mapping {{...}}, got {type(spec).__name__}", path)
    missing = [k for k in required if k not in spec]
    if missing:
        raise DataError(f"dataset.json lacks {missing}", path)
    for key, kind in (types or {}).items():
        value = spec.get(key)
        if key in spec and (not isinstance(value, kind) or isinstance(value, bool)):
            raise DataError(
                f"dataset.json key {key!r} must be {_JSON_TYPES.get(kind, kind.__name__)}, got "
                f"{type(value).__name__} {json.dumps(value)[:80]}",
                path,
            )
    return spec


def label_value(value: Any, name: str, where: Path) -> int:
    """One ``dataset.json`` label value as an integer: ``1`` or ``"1"`` (never 1.7 → 1)."""
    if isinstance(value, bool):
        raise DataError(f"label {name!r} has the value {value!r}, not an integer", where)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    raise DataError(
        f"label {name!r} has the value {value!r}: label values are integers (0 the background)", where
    )


def parse_nnunet_labels(labels: dict[str, Any], where: Path) -> dict[int, str]:
    """nnU-Net's ``labels`` (name → value) as value → name; values must be 0..K-1."""
    if not isinstance(labels, dict):
        raise DataError(
            f"dataset.json 'labels' must map each label name to its value "
            f'({{"background": 0, "tumor": 1}}), got {type(labels).__name__} {json.dumps(labels)[:80]}',
            where,
        )
    out: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise DataError(
                f"region-based label {name!r}: {value} is not supported (one value per label)", where
            )
        number = label_value(value, name, where)
        if number in out:
            raise DataError(f"labels {out[number]!r} and {name!r} share the value {number}", where)
        out[number] = str(name)
    if sorted(out) != list(range(len(out))) or 0 not in out:
        raise DataError(
            f"labels must be consecutive integers 0..K-1 with 0 the background, got {labels}", where
        )
    return out


def stack_channels(arrays: list[np.ndarray], paths: list[Path], two_d: bool) -> np.ndarray:
    """Per-channel arrays (2D images may be ``H×W×C``) → ``C×spatial`` float32."""
    planes = []
    for array, path in zip(arrays, paths, strict=True):
        a = np.asarray(array, dtype=np.float32)
        if two_d and a.ndim == 3:  # an RGB(A) image file: its colours are channels
            planes.extend(np.moveaxis(a[..., :3], -1, 0))
        else:
            planes.append(a)
        if planes[-1].shape != planes[0].shape:
            raise DataError(f"channel shape {planes[-1].shape} differs from {planes[0].shape}", path)
    return np.stack(planes)


@SOURCES.register("nnunet")
class NnUNetSource(Source):
    """nnU-Net v2 raw data set ``DatasetXXX_Name/`` (imagesTr/labelsTr/imagesTs, dataset.json).

    Options:
        root: the ``DatasetXXX_Name`` folder.
        subset: ``"train"`` (imagesTr + labelsTr) or ``"test"`` (imagesTs, no masks).
        label: only this label value is the (binary) foreground; default: all labels (binary for
            one foreground label, else a class-index map).
        spacing: mm per pixel for 2D file endings (default 1.0, marked assumed).
    """

    annotators = ("expert",)

    def __init__(
        self,
        root: str | Path,
        subset: str = "train",
        label: int | None = None,
        spacing: float | tuple[float, ...] | None = None,
        target: str | None = None,
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the nnunet source needs the DatasetXXX_Name folder as root")
        if subset not in ("train", "test"):
            raise DataError(f"subset must be 'train' or 'test', got {subset!r}", self.root)
        self.subset, self.label, self.spacing_option = subset, label, spacing
        if spacing is not None:  # warned about once here, not for every image
            check_spacing_plausible(spacing_values(spacing, str(self.root)), self.root, what="spacing option")
        self.spec_path = self.root / "dataset.json"
        self.spec = read_dataset_json(
            self.spec_path,
            ("channel_names", "labels", "file_ending"),
            {"channel_names": dict, "labels": dict, "file_ending": str},
        )
        self.file_ending = str(self.spec["file_ending"])
        if not all(re.fullmatch(r"\d+", str(k)) for k in self.spec["channel_names"]):
            raise DataError(
                f"channel_names keys must be 0..C-1, got {list(self.spec['channel_names'])}", self.spec_path
            )
        self.channels = sorted(int(k) for k in self.spec["channel_names"])
        self.channel_names = [str(self.spec["channel_names"][str(k)]) for k in self.channels]
        if self.channels != list(range(len(self.channels))):
            raise DataError(
                f"channel_names keys must be 0..C-1, got {list(self.spec['channel_names'])}", self.spec_path
            )
        self.labels = parse_nnunet_labels(self.spec["labels"], self.spec_path)
        if label is not None and label not in self.labels:
            raise DataError(f"label {label} is not in dataset.json labels {self.labels}", self.spec_path)
        self.images_dir = require_dir(
            self.root / ("imagesTr" if subset == "train" else "imagesTs"), "nnU-Net images"
        )
        self.labels_dir = require_dir(self.root / "labelsTr", "nnU-Net labels") if subset == "train" else None
        self._cases: dict[str, dict[int, Path]] | None = None

    def _index(self) -> dict[str, dict[int, Path]]:
        if self._cases is None:
            cases: dict[str, dict[int, Path]] = {}
            for p in self.images_dir.iterdir():
                if not p.name.endswith(self.file_ending) or p.name.startswith("."):
                    continue
                m = _CHANNEL_RE.match(p.name[: -len(self.file_ending)])
                if m is None:
                    raise DataError(
                        "image file name lacks the _XXXX channel suffix "
                        f"(expected CASE_0000{self.file_ending})",
                        p,
                    )
                cases.setdefault(m["case"], {})[int(m["channel"])] = p
            two_d = self.file_ending.lower().endswith(IMAGE_2D_EXTS)
            for case, files in cases.items():
                # an RGB image file holds three channels (nnU-Net's natural-image reader)
                if sorted(files) != self.channels and not (two_d and sorted(files) == [0]):
                    raise DataError(
                        f"case {case!r} has channels {sorted(files)}, dataset.json names {self.channels}",
                        self.images_dir,
                    )
            if self.subset == "train":
                check_case_count(self.spec.get("numTraining"), len(cases), self.spec_path)
            self._cases = cases
        return self._cases

    def case_ids(self) -> list[str]:
        """Case identifiers (file names without channel suffix and file ending)."""
        return sorted(self._index(), key=natural_key)

    def load_case(self, case_id: str) -> list[Sample]:
        """One sample: the case's channels stacked, and its label map (train subset)."""
        files = self._index().get(case_id)
        if files is None:
            raise DataError(f"unknown case id {case_id!r}", self.images_dir)
        paths = [files[c] for c in sorted(files)]
        reads = [read_image(p) for p in paths]
        two_d = file_format(paths[0]) == "2d"
        image = stack_channels([r[0] for r in reads], paths, two_d)
        grid = image_geometry(image.shape[1:], reads[0][2])
        for path, (array, _, channel_meta) in zip(paths[1:], reads[1:], strict=True):
            if not two_d:  # every channel on the first channel's grid
                check_label_geometry(grid, paths[0], geometry_of(array, channel_meta), path, "channel")
        if image.shape[0] != len(self.channels):
            raise DataError(
                f"case {case_id!r} has {image.shape[0]} channel(s), dataset.json names {len(self.channels)}",
                paths[0],
            )
        meta: dict[str, Any] = dict(reads[0][2])
        meta["channel_names"] = self.channel_names
        if two_d:
            spacing = parse_spacing(
                1.0 if self.spacing_option is None else self.spacing_option, 2, str(paths[0]), plausible=False
            )
            meta["spacing_assumed"] = self.spacing_option is None
        else:
            spacing = reads[0][1]
            meta["spacing_assumed"] = False
        masks = {}
        if self.labels_dir is not None:
            label_path = self.labels_dir / f"{case_id}{self.file_ending}"
            if not label_path.is_file():
                raise DataError(f"case {case_id!r} has no label file", label_path)
            labels, _ = read_label_on_image(label_path, paths[0], grid)
            masks[self.target], extra = self._mask(labels, label_path)
            meta.update(extra)
            meta["mask_path"] = str(label_path)
        return [
            Sample(
                image=image,
                masks=masks,
                target=self.target,
                spacing=spacing,  # type: ignore[arg-type]
                case_id=case_id,
                source_path=str(paths[0]),
                meta=meta,
            )
        ]

    def _mask(self, labels: np.ndarray, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        return dataset_json_mask(labels, path, self.labels, self.label, self.spec_path)


def dataset_json_mask(
    labels: np.ndarray, path: Path, declared: dict[int, str], label: int | None, spec_path: Path
) -> tuple[np.ndarray, dict[str, Any]]:
    """A label map of an nnU-Net / Decathlon data set as its training mask, by the mask policy:
    every value must be one ``dataset.json`` declares; ``label`` picks one as the binary foreground;
    one foreground label gives a binary mask; several a class-index map with ``num_classes``,
    ``class_values`` and ``label_names`` for ``meta``."""
    values = sorted(declared)
    classes = class_index_map(labels, path, values, where=f"{spec_path} labels")
    names = [declared[v] for v in values]
    if label is not None:
        return binary_mask(classes, path, label=values.index(label)), {
            "label_names": ["background", declared[label]]
        }
    if len(values) == 2:
        return binary_mask(classes, path), {"label_names": names}
    return classes, {"num_classes": len(values), "class_values": values, "label_names": names}
