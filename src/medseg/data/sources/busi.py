"""BUSI breast ultrasound (Al-Dhabyani et al. 2020), in the layout of ``images/`` + ``masks/``.

Layout: ``ROOT/images/<class> (<k>).png`` with the mask under the same file name in
``ROOT/masks/`` (0/255). The original Kaggle naming is accepted too: ``<stem>_mask.png`` and
extra lesions ``<stem>_mask_1.png`` (all masks of an image are merged by union). File names
contain spaces and parentheses (``benign (12).png``); the case id is the file stem as it is
(``"benign (12)"``), one case per image; ``meta["class"]`` is the name prefix (``benign``,
``malignant``, ``normal``).

Channels: images are stored as RGB but are grey ultrasound, so by default they are converted to
grey ``1×H×W`` (BT.601 luma); ``channels=3`` keeps ``3×H×W`` RGB.

Spacing: none is published, so ``pixel_spacing_mm`` (default 1.0) is an **assumption** and
``meta["spacing_assumed"] = True``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medseg.data.io import read_image
from medseg.data.sample import Sample
from medseg.data.sources._common import (
    image_geometry,
    natural_key,
    parse_spacing,
    read_binary_label,
    require_dir,
    to_channels_first_2d,
)
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError

_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@SOURCES.register("busi")
class BUSISource(Source):
    """BUSI breast ultrasound: one 2D image per case, lesion masks, class in meta.

    Options:
        root: folder with ``images/`` and ``masks/``.
        channels: 1 (grey, default) or 3 (RGB).
        pixel_spacing_mm: assumed pixel size (default 1.0).
    """

    annotators = ("expert",)

    def __init__(
        self, root: str | Path, channels: int = 1, pixel_spacing_mm: float = 1.0, target: str | None = None
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the busi source needs a root folder")
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}", self.root)
        self.channels = channels
        self.spacing = parse_spacing(pixel_spacing_mm, 2, str(self.root))
        self.images_dir = require_dir(self.root / "images", "BUSI images")
        self.masks_dir = require_dir(self.root / "masks", "BUSI masks")

    def _images(self) -> dict[str, Path]:
        return {
            p.stem: p
            for p in self.images_dir.iterdir()
            if p.is_file() and p.suffix.lower() in _EXTS and "_mask" not in p.stem
        }

    def case_ids(self) -> list[str]:
        """Sorted image stems (``"benign (12)"``, ...), numbers in natural order."""
        return sorted(self._images(), key=natural_key)

    def mask_paths(self, image: Path) -> list[Path]:
        """Mask file(s) of an image: same name in ``masks/``, else ``<stem>_mask[_k].<ext>``."""
        same = self.masks_dir / image.name
        if same.is_file():
            return [same]
        pat = re.compile(rf"^{re.escape(image.stem)}_mask(_\d+)?\.\w+$")
        hits = sorted(
            (p for p in self.masks_dir.iterdir() if pat.match(p.name)), key=lambda p: natural_key(p.name)
        )
        if not hits:
            raise DataError(f"image {image.name} has no mask in {self.masks_dir}", same)
        return hits

    def load_case(self, case_id: str) -> list[Sample]:
        """The image as one 2D sample."""
        ip = self._images().get(case_id)
        if ip is None:
            raise DataError(f"unknown case id {case_id!r}", self.images_dir)
        arr, _, meta = read_image(ip)
        img = to_channels_first_2d(arr, self.channels, ip)
        mask = np.zeros(img.shape[1:], dtype=np.uint8)
        mps = self.mask_paths(ip)
        for mp in mps:  # extra lesions of one image: their union, each read by the contract
            mask |= read_binary_label(mp, ip, image_geometry(img.shape[1:], meta))
        cls = re.split(r"[\s(_]", case_id, maxsplit=1)[0].lower()
        return [
            Sample(
                image=img,
                masks={"expert": mask},
                target=self.target,
                spacing=self.spacing,
                case_id=case_id,
                source_path=str(ip),
                meta={"class": cls, "spacing_assumed": True, "mask_paths": [str(p) for p in mps]},
            )
        ]
