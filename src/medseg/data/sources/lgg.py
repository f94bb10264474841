"""Kaggle "LGG MRI segmentation" (``kaggle_3m``, Buda et al. 2019), read in its own layout.

Layout: ``ROOT/TCGA_<inst>_<id>_<date>/<folder>_<n>.tif`` (3 channels: pre-contrast, FLAIR,
post-contrast) with ``<folder>_<n>_mask.tif`` (0/255). ``ROOT`` may also be the folder that
contains ``kaggle_3m/``. Anything at the root that is not a folder (``data.csv``,
``README.md``) is ignored. A patient folder is one volume; slices are ordered by the integer
``n`` (``_2`` before ``_10``).

Spacing: the TIFFs carry none, so the spacing is an **assumption** given by the options
``pixel_spacing_mm`` (default 1.0) and ``slice_thickness_mm`` (default 1.0), and every sample has
``meta["spacing_assumed"] = True``. Millimetre metrics on this source are in these assumed units.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medseg.data.io import read_image
from medseg.data.sample import Sample
from medseg.data.sources._common import (
    check_finite,
    image_geometry,
    parse_spacing,
    read_binary_label,
    to_channels_first_2d,
)
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError


@SOURCES.register("lgg")
class LGGSource(Source):
    """Kaggle LGG brain MRI: one 3-channel volume per patient folder, FLAIR abnormality masks.

    Options:
        root: the ``kaggle_3m`` folder (or its parent).
        pixel_spacing_mm: assumed in-plane spacing (default 1.0).
        slice_thickness_mm: assumed slice spacing (default 1.0).
    """

    annotators = ("expert",)

    def __init__(
        self,
        root: str | Path,
        pixel_spacing_mm: float = 1.0,
        slice_thickness_mm: float = 1.0,
        target: str | None = None,
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the lgg source needs a root folder")
        if (self.root / "kaggle_3m").is_dir():
            self.root = self.root / "kaggle_3m"
        self.spacing = (
            parse_spacing(slice_thickness_mm, 1, str(self.root))[0],
            *parse_spacing(pixel_spacing_mm, 2, str(self.root)),
        )

    def case_ids(self) -> list[str]:
        """Sorted patient folder names (folders holding at least one ``*_mask.tif``)."""
        assert self.root is not None
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.glob("*_mask.tif")))

    def slice_files(self, case_id: str) -> list[tuple[int, Path, Path]]:
        """``(n, image, mask)`` for every slice of a patient, ordered by the integer ``n``."""
        assert self.root is not None
        folder = self.root / case_id
        if not folder.is_dir():
            raise DataError(f"unknown case id {case_id!r}: no such patient folder", folder)
        pat = re.compile(rf"^{re.escape(case_id)}_(\d+)\.tif$")
        out = []
        for p in folder.iterdir():
            m = pat.match(p.name)
            if m:
                mask = folder / f"{case_id}_{m.group(1)}_mask.tif"
                if not mask.is_file():
                    raise DataError(f"slice {p.name} has no mask file", mask)
                out.append((int(m.group(1)), p, mask))
        if not out:
            raise DataError(f"no slices named {case_id}_<n>.tif in the patient folder", folder)
        return sorted(out)

    def load_case(self, case_id: str) -> list[Sample]:
        """The patient as one 3D sample: image ``3×D×H×W``, mask ``D×H×W``."""
        files = self.slice_files(case_id)
        images, masks = [], []
        for _, ip, mp in files:
            arr, _, meta = read_image(ip)
            img = to_channels_first_2d(arr, None, ip)
            check_finite(img, ip)
            mask = read_binary_label(mp, ip, image_geometry(img.shape[1:], meta))
            if images and img.shape != images[0].shape:
                raise DataError(
                    f"slice shape {img.shape} differs from the first slice's {images[0].shape}", ip
                )
            images.append(img)
            masks.append(mask)
        return [
            Sample(
                image=np.stack(images, axis=1),
                masks={"expert": np.stack(masks, axis=0)},
                target=self.target,
                spacing=self.spacing,
                case_id=case_id,
                source_path=str(files[0][1].parent),
                meta={
                    "spacing_assumed": True,
                    "slice_numbers": [n for n, _, _ in files],
                    "slice_paths": [str(p) for _, p, _ in files],
                },
            )
        ]
