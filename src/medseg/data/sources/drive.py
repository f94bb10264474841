"""DRIVE retinal vessels (Staal et al. 2004), in its own layout.

Layout (``ROOT`` is ``DRIVE/`` or the folder holding it)::

    DRIVE/training/images/NN_training.tif        (NN = 21..40)
    DRIVE/training/1st_manual/NN_manual1.gif      0/255
    DRIVE/training/mask/NN_training_mask.gif      field of view (FOV), 0/255
    DRIVE/test/images/NN_test.tif                 (NN = 01..20)
    DRIVE/test/1st_manual/NN_manual1.gif          0/255
    DRIVE/test/2nd_manual/NN_manual2.gif          palette indices 0/1
    DRIVE/test/mask/NN_test_mask.gif

Case ids are ``<subset>_<NN>`` (``training_21``, ``test_01``), one 2D sample each. Image
``3×H×W`` RGB; annotators ``annotator_1`` (1st_manual, the target) and ``annotator_2``
(2nd_manual, test only); the binarized FOV mask is ``meta["fov"]`` (``H×W`` uint8).

Spacing: the files carry none, so ``pixel_spacing_mm`` (default 1.0) is an **assumption** and
``meta["spacing_assumed"] = True``.
"""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.io import read_image
from medseg.data.sample import Sample
from medseg.data.sources._common import image_geometry, parse_spacing, read_binary_label, to_channels_first_2d
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError

_SUBSETS = ("training", "test")


@SOURCES.register("drive")
class DRIVESource(Source):
    """DRIVE colour fundus images with vessel masks (two annotators on test) and FOV masks.

    Options:
        root: ``DRIVE/`` or its parent.
        subset: ``"training"`` (or ``"train"``), ``"test"`` or ``"all"`` (default).
        pixel_spacing_mm: assumed pixel size (default 1.0).
    """

    annotators = ("annotator_1", "annotator_2")

    def __init__(
        self, root: str | Path, subset: str = "all", pixel_spacing_mm: float = 1.0, target: str | None = None
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the drive source needs a root folder")
        if (self.root / "DRIVE").is_dir():
            self.root = self.root / "DRIVE"
        subset = "training" if subset == "train" else subset
        if subset not in (*_SUBSETS, "all"):
            raise DataError(f"subset must be 'training', 'test' or 'all', got {subset!r}", self.root)
        self.subset = subset
        self.spacing = parse_spacing(pixel_spacing_mm, 2, str(self.root))
        subsets = _SUBSETS if subset == "all" else (subset,)
        self.subsets = tuple(s for s in subsets if (self.root / s / "images").is_dir())
        if not self.subsets:
            raise DataError(f"no {'/'.join(subsets)}/images folder (expected the DRIVE layout)", self.root)

    def case_ids(self) -> list[str]:
        """Sorted ids ``test_01``..., ``training_21``..."""
        assert self.root is not None
        out = []
        for sub in self.subsets:
            pat = re.compile(rf"^(\d+)_{sub}\.tif$")
            for p in (self.root / sub / "images").iterdir():
                m = pat.match(p.name)
                if m:
                    out.append(f"{sub}_{m.group(1)}")
        return sorted(out)

    def load_case(self, case_id: str) -> list[Sample]:
        """The image as one 2D sample with its annotators and FOV."""
        assert self.root is not None
        sub, _, nn = case_id.partition("_")
        if sub not in self.subsets or not nn:
            raise DataError(f"unknown case id {case_id!r}", self.root)
        d = self.root / sub
        ip = d / "images" / f"{nn}_{sub}.tif"
        if not ip.is_file():
            raise DataError(f"unknown case id {case_id!r}: image missing", ip)
        arr, _, image_meta = read_image(ip)
        img = to_channels_first_2d(arr, 3, ip)
        grid = image_geometry(img.shape[1:], image_meta)
        masks = {}
        for k in (1, 2):
            mp = d / f"{'1st' if k == 1 else '2nd'}_manual" / f"{nn}_manual{k}.gif"
            if mp.is_file():
                masks[f"annotator_{k}"] = read_binary_label(mp, ip, grid)
            elif k == 1:
                raise DataError(f"image {ip.name} has no 1st_manual annotation", mp)
        meta: dict = {"spacing_assumed": True, "subset": sub}
        fov_path = d / "mask" / f"{nn}_{sub}_mask.gif"
        if fov_path.is_file():
            meta["fov"] = read_binary_label(fov_path, ip, grid)
        return [
            Sample(
                image=img,
                masks=masks,
                target=self.target,
                spacing=self.spacing,
                case_id=case_id,
                source_path=str(ip),
                meta=meta,
            )
        ]
