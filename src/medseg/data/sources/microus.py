"""MicroSegNet micro-ultrasound prostate data (Zenodo record 10475293), read in its own layout.

Layout (``ROOT`` is the folder holding ``train/`` and ``test/``; a ``ROOT`` with a single
sub-folder that holds them is accepted too)::

    ROOT/train/micro_ultrasound_scans/microUS_train_01.nii.gz
    ROOT/train/expert_annotations/expert_annotation_train_01.nii.gz
    ROOT/train/non_expert_annotations/nonexpert_annotation_train_01.nii.gz
    ROOT/test/micro_ultrasound_scans/microUS_test_01.nii.gz
    ROOT/test/expert_annotations/expert_annotation_test_01.nii.gz
    ROOT/test/<other>_annotations/..._test_01.nii.gz   (non_expert, master_student, ...)

Every ``*_annotations`` folder is one annotator, named by the folder stem without
``_annotations`` (``expert``, ``non_expert``, ``master_student``, ``medical_student``); an
annotation file is matched to a scan by its ``_<subset>_<NN>.nii.gz`` ending. Each case is one
3D sample: image ``1×D×H×W`` float32 raw intensities, spacing ``(sz, sy, sx)`` from the NIfTI
header, target ``expert``. A scan without its expert annotation is a :class:`DataError`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medseg.data.io import read_image
from medseg.data.sample import Sample
from medseg.data.sources._common import image_geometry, natural_key, read_binary_label
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError

SCAN_DIR = "micro_ultrasound_scans"
_SCAN_RE = re.compile(r"^microUS_(train|test)_(\w+?)\.nii(\.gz)?$")
_SUBSETS = ("train", "test")


@SOURCES.register("microus")
class MicroUSSource(Source):
    """MicroSegNet micro-ultrasound prostate volumes with expert and non-expert annotations.

    Options:
        root: folder holding ``train/`` and ``test/``.
        subset: ``"train"``, ``"test"`` or ``"all"`` (default ``"all"``).
        target: training-target annotator (default ``"expert"``).
    """

    annotators = ("expert", "non_expert")

    def __init__(self, root: str | Path, subset: str = "all", target: str | None = None) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the microus source needs a root folder")
        if subset not in (*_SUBSETS, "all"):
            raise DataError(f"subset must be 'train', 'test' or 'all', got {subset!r}", self.root)
        self.subset = subset
        self.base = self._find_base(self.root)
        self._index: dict[str, Path] | None = None

    @staticmethod
    def _find_base(root: Path) -> Path:
        if any((root / s / SCAN_DIR).is_dir() for s in _SUBSETS):
            return root
        subs = [p for p in root.iterdir() if p.is_dir()]
        for sub in subs:
            if any((sub / s / SCAN_DIR).is_dir() for s in _SUBSETS):
                return sub
        raise DataError(
            f"no train/{SCAN_DIR} or test/{SCAN_DIR} folder found (expected the Zenodo 10475293 layout)",
            root,
        )

    def _scans(self) -> dict[str, Path]:
        if self._index is None:
            index: dict[str, Path] = {}
            subsets = _SUBSETS if self.subset == "all" else (self.subset,)
            for sub in subsets:
                scan_dir = self.base / sub / SCAN_DIR
                if not scan_dir.is_dir():
                    if self.subset != "all":
                        raise DataError(f"missing scan folder for subset '{sub}'", scan_dir)
                    continue
                for p in scan_dir.iterdir():
                    m = _SCAN_RE.match(p.name)
                    if m and m.group(1) == sub:
                        index[f"{sub}_{m.group(2)}"] = p
            self._index = index
        return self._index

    def case_ids(self) -> list[str]:
        """Sorted case ids such as ``train_01``, ``test_07``."""
        return sorted(self._scans(), key=natural_key)

    def annotation_paths(self, case_id: str) -> dict[str, Path]:
        """Annotator name → annotation file for one case (only annotators that have one)."""
        scan = self._scans().get(case_id)
        if scan is None:
            raise DataError(f"unknown case id {case_id!r}", self.base)
        subset_dir = scan.parent.parent
        ending = re.compile(rf"_{re.escape(case_id)}\.nii(\.gz)?$")
        out: dict[str, Path] = {}
        folders = sorted(p for p in subset_dir.iterdir() if p.is_dir() and p.name.endswith("_annotations"))
        for folder in folders:
            name = folder.name[: -len("_annotations")]
            hits = sorted(p for p in folder.iterdir() if ending.search(p.name))
            if len(hits) > 1:
                raise DataError(f"several annotations for case {case_id}: {[h.name for h in hits]}", folder)
            if hits:
                out[name] = hits[0]
        return out

    def load_case(self, case_id: str) -> list[Sample]:
        """The case as one 3D sample with every annotator's mask."""
        scan = self._scans().get(case_id)
        if scan is None:
            raise DataError(f"unknown case id {case_id!r}", self.base)
        ann = self.annotation_paths(case_id)
        if "expert" not in ann:
            expected = scan.parent.parent / "expert_annotations" / f"expert_annotation_{case_id}.nii.gz"
            raise DataError(f"scan {scan.name} has no expert annotation", expected)
        image, spacing, meta = read_image(scan)
        if image.ndim != 3:
            raise DataError(f"expected a single-channel 3D scan, got shape {image.shape}", scan)
        masks: dict[str, np.ndarray] = {}
        grid = image_geometry(image.shape, meta)
        for name, path in ann.items():  # the mask policy, on the scan's grid
            masks[name] = read_binary_label(path, scan, grid)
        meta = {
            **meta,
            "annotation_paths": {k: str(v) for k, v in ann.items()},
            "subset": case_id.split("_", 1)[0],
        }
        return [
            Sample(
                image=image[None].astype(np.float32),
                masks=masks,
                target=self.target,
                spacing=spacing,  # type: ignore[arg-type]
                case_id=case_id,
                source_path=str(scan),
                meta=meta,
            )
        ]
