"""HC18 fetal head circumference challenge (van den Heuvel et al. 2018), in its own layout.

Layout::

    ROOT/training_set/NNN_HC.png              grey ultrasound image
    ROOT/training_set/NNN_HC_Annotation.png   filled head mask (RGB 0/255; any channel > 0)
    ROOT/training_set_pixel_size_and_HC.csv   columns "filename", "pixel size(mm)",
                                              "head circumference (mm)"

(The CSV is also looked for inside ``training_set/``.) One subject can have several images
(``014_HC.png``, ``014_2HC.png``): the case id is the number before the first ``_`` (``"014"``),
and a case loads as one 2D sample per image. Image ``1×H×W`` grey, spacing ``(ps, ps)`` from the
CSV (real, not assumed). ``meta`` has ``image_name`` and ``head_circumference_mm``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from medseg.data.io import read_image
from medseg.data.sample import Sample
from medseg.data.sources._common import (
    image_geometry,
    natural_key,
    read_binary_label,
    require_dir,
    to_channels_first_2d,
)
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError

_IMAGE_RE = re.compile(r"^(\d+)_\w*HC\.png$")
CSV_NAME = "training_set_pixel_size_and_HC.csv"


@SOURCES.register("hc18")
class HC18Source(Source):
    """HC18 fetal head ultrasound: 2D grey images, filled head masks, pixel size from the CSV.

    Options:
        root: the folder holding ``training_set/`` and the CSV.
        folder: image folder name (default ``"training_set"``).
        csv: pixel-size CSV file name (default ``training_set_pixel_size_and_HC.csv``).
    """

    annotators = ("expert",)

    def __init__(
        self, root: str | Path, folder: str = "training_set", csv: str = CSV_NAME, target: str | None = None
    ) -> None:
        super().__init__(root, target)
        if self.root is None:
            raise DataError("the hc18 source needs a root folder")
        self.folder = require_dir(self.root / folder, "HC18 image")
        candidates = [self.root / csv, self.folder / csv]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise DataError("pixel-size CSV not found (needed for the spacing)", candidates[0])
        self.csv_path = found[0]
        self._table = self._read_csv(self.csv_path)
        self._groups: dict[str, list[Path]] | None = None

    @staticmethod
    def _read_csv(path: Path) -> dict[str, tuple[float, float | None]]:
        try:
            df = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"cannot parse CSV ({e})", path) from e
        cols = {c.strip().lower(): c for c in df.columns}
        name_col = cols.get("filename")
        px_col = next((c for k, c in cols.items() if k.startswith("pixel size")), None)
        hc_col = next((c for k, c in cols.items() if k.startswith("head circumference")), None)
        if name_col is None or px_col is None:
            raise DataError(
                f"CSV needs 'filename' and 'pixel size(mm)' columns, has {list(df.columns)}", path
            )
        out: dict[str, tuple[float, float | None]] = {}
        for _, row in df.iterrows():
            hc = float(row[hc_col]) if hc_col is not None else None
            out[str(row[name_col]).strip()] = (float(row[px_col]), hc)
        return out

    def _index(self) -> dict[str, list[Path]]:
        if self._groups is None:
            groups: dict[str, list[Path]] = {}
            for p in self.folder.iterdir():
                m = _IMAGE_RE.match(p.name)
                if m:
                    groups.setdefault(m.group(1), []).append(p)
            self._groups = {k: sorted(v, key=lambda q: natural_key(q.name)) for k, v in groups.items()}
        return self._groups

    def case_ids(self) -> list[str]:
        """Sorted subject ids (the number before the first ``_``)."""
        return sorted(self._index())

    def load_case(self, case_id: str) -> list[Sample]:
        """One 2D sample per image of the subject."""
        paths = self._index().get(case_id)
        if not paths:
            raise DataError(f"unknown case id {case_id!r}", self.folder)
        out = []
        for ip in paths:
            mp = ip.with_name(ip.stem + "_Annotation.png")
            if not mp.is_file():
                raise DataError(f"image {ip.name} has no annotation", mp)
            if ip.name not in self._table:
                raise DataError(f"no pixel size for {ip.name} in the CSV", self.csv_path)
            px, hc = self._table[ip.name]
            arr, _, meta = read_image(ip)
            img = to_channels_first_2d(arr, 1, ip)
            mask = read_binary_label(mp, ip, image_geometry(img.shape[1:], meta))
            out.append(
                Sample(
                    image=img,
                    masks={"expert": mask},
                    target=self.target,
                    spacing=(px, px),
                    case_id=case_id,
                    source_path=str(ip),
                    meta={"image_name": ip.name, "head_circumference_mm": hc, "spacing_assumed": False},
                )
            )
        return out
