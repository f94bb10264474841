"""An anisotropic EM stack stored as one PNG per section (ISBI 2012 layout), as 3D cases.

Layout::

    ROOT/image/NN.png    uint8 grey section
    ROOT/label/NN.png    255 = cell interior, 0 = membrane

The sections form one ``1×D×H×W`` volume with spacing ``(sz, sy, sx)`` in mm (ISBI 2012:
50 nm between sections, 4 nm in plane). ``chunks`` cuts the stack along z into cases, so a
patient-level split can train on some sections and validate on others (``chunks: [[0, 20],
[20, 30]]`` → cases ``z00-19`` and ``z20-29``). The target (``interior``) is the cell interior;
``meta["instance"]`` labels the cells: connected components (``cc3d``) of the interior, per
section by default (see ``instances``). It is the key :class:`~medseg.data.volumes.VolumeDataset`
reads, so the cell instances reach the batch (``batch["instance"]``, for the Res-UNet boundary
target); ``meta["instances"]`` is the same array under its former name. ``meta["boundary"]`` is
the membrane.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cc3d
import numpy as np

from medseg.data.io import read_image
from medseg.data.mask_policy import binary_mask, format_values, label_values
from medseg.data.pairs import read_label_on_image
from medseg.data.sample import Sample
from medseg.data.sources._common import image_geometry, natural_key, parse_spacing, require_dir
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError

ISBI_SPACING_MM = (50e-6, 4e-6, 4e-6)  # 50 nm sections, 4 nm pixels


def _read_section(path: Path) -> tuple[np.ndarray, dict]:
    array, _, meta = read_image(path)
    array = np.asarray(array)
    if array.ndim == 3:  # RGB(A) saved sections: take the first channel
        array = array[..., 0]
    if array.ndim != 2:
        raise DataError(f"expected a 2D section, got shape {array.shape}", path)
    return array, meta


def _read_label_section(path: Path, image_path: Path, image: np.ndarray, meta: dict) -> np.ndarray:
    """A label section by the reader contract: the mask policy, on its image section's grid."""
    labels, _ = read_label_on_image(path, image_path, image_geometry(image.shape, meta))
    return labels


def cell_instances(interior: np.ndarray, mode: str = "2d") -> np.ndarray:
    """Cell instances of a ``D×H×W`` interior mask: per-section 4-connected components with ids
    unique over the stack (``"2d"``), or 6-connected 3D components (``"3d"``)."""
    if mode == "3d":
        return cc3d.connected_components(interior, connectivity=6).astype(np.int32)
    out = np.zeros(interior.shape, dtype=np.int32)
    offset = 0
    for z in range(interior.shape[0]):
        labels = cc3d.connected_components(interior[z], connectivity=4).astype(np.int32)
        out[z] = np.where(labels > 0, labels + offset, 0)
        offset += int(labels.max())
    return out


@SOURCES.register("em_stack")
class EMStackSource(Source):
    """EM section stack (ISBI 2012 layout) as 3D cases with cell-interior masks and cell instances.

    Options:
        root: the folder holding ``image/`` and ``label/``.
        spacing: mm per axis ``(sz, sy, sx)``; default ISBI 2012's 50 nm × 4 nm × 4 nm.
        chunks: ``[[z0, z1], ...]`` half-open section ranges, one case each (default: one case).
        interior_value: label value of the cell interior (255).
        instances: ``"2d"`` (default) labels the cells of each section separately (ids unique
            over the stack); ``"3d"`` joins them across sections. At 50 nm sections the interiors
            of neighbouring cells overlap between sections, so 3D components merge most of the
            stack into a few objects (4 on sections 20–29): 2D cells are the usable instances.
    """

    annotators = ("interior",)

    def __init__(
        self,
        root: str | Path,
        spacing: Sequence[float] = ISBI_SPACING_MM,
        chunks: Sequence[Sequence[int]] | None = None,
        interior_value: int = 255,
        instances: str = "2d",
        target: str | None = None,
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the em_stack source needs a root folder")
        self.image_dir = require_dir(self.root / "image", "EM image")
        self.label_dir = require_dir(self.root / "label", "EM label")
        # EM voxels are nanometres: far below the 1 µm that would be a typo elsewhere
        self.spacing = parse_spacing(
            list(spacing) if not isinstance(spacing, str) else spacing, 3, str(self.root), plausible=False
        )
        self.images = sorted(self.image_dir.glob("*.png"), key=lambda p: natural_key(p.name))
        if not self.images:
            raise DataError("no *.png sections found", self.image_dir)
        missing = [p.name for p in self.images if not (self.label_dir / p.name).is_file()]
        if missing:
            raise DataError(f"{len(missing)} section(s) have no label: {missing[:5]}", self.label_dir)
        depth = len(self.images)
        ranges = [(0, depth)] if chunks is None else [(int(a), int(b)) for a, b in chunks]
        for z0, z1 in ranges:
            if not 0 <= z0 < z1 <= depth:
                raise DataError(f"chunk [{z0}, {z1}) is outside the {depth} sections", self.root)
        self.ranges = ranges
        self.interior_value = interior_value
        if instances not in ("2d", "3d"):
            raise DataError(f"instances must be '2d' or '3d', got '{instances}'", self.root)
        self.instances = instances

    def case_ids(self) -> list[str]:
        """``zAA-BB`` per chunk (inclusive section numbers)."""
        return [f"z{z0:02d}-{z1 - 1:02d}" for z0, z1 in self.ranges]

    def _first_with(self, paths: list[Path], values: list[int]) -> Path:
        """The first label section holding any of ``values`` (for the error message)."""
        for path in paths:
            labels, _, _ = read_image(self.label_dir / path.name)
            if np.isin(labels, values).any():
                return self.label_dir / path.name
        return self.label_dir

    def load_case(self, case_id: str) -> list[Sample]:
        """One 3D sample: image, interior mask, membrane, and 3D cell instances in ``meta``."""
        ids = self.case_ids()
        if case_id not in ids:
            raise DataError(f"unknown case '{case_id}' (have {ids})", self.root)
        z0, z1 = self.ranges[ids.index(case_id)]
        paths = self.images[z0:z1]
        sections = [_read_section(p) for p in paths]
        image = np.stack([s for s, _ in sections]).astype(np.float32)
        labels = np.stack(
            [
                _read_label_section(self.label_dir / p.name, p, section, meta)
                for p, (section, meta) in zip(paths, sections, strict=True)
            ]
        )
        other = sorted(set(label_values(labels)) - {int(self.interior_value)})
        if other:  # anti-aliased sections, or another labelling (0/1?): never a silent guess
            raise DataError(
                f"label sections hold values {format_values(labels)}: expected 0 (membrane) and the "
                f"interior value {self.interior_value} (-o interior_value=K); values {other} are neither",
                self._first_with(paths, other),
            )
        interior = binary_mask(labels, self.label_dir, label=self.interior_value)
        instances = cell_instances(interior, self.instances)
        return [
            Sample(
                image=image[None],
                masks={"interior": interior},
                target=self.target,
                spacing=self.spacing,
                case_id=case_id,
                source_path=str(self.image_dir),
                meta={
                    "instance": instances,  # medseg.data.volumes.INSTANCE_KEY
                    "instances": instances,  # the same array, under its former name
                    "boundary": 1 - interior,
                    "sections": (z0, z1),
                },
            )
        ]
