"""The built-in synthetic micro-ultrasound phantom as a source (no files, no download).

See :mod:`medseg.data.phantom`. Case ids ``phantom_00``...; one 3D sample per case with
annotators ``expert`` (the true gland, target) and ``non_expert`` (perturbed where the boundary
is faint). Cases are generated on demand, deterministically from ``seed`` and the case index.
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, generate_phantom_case, phantom_case_id
from medseg.data.sample import Sample
from medseg.data.sources._common import parse_spacing
from medseg.data.sources.base import SOURCES, Source
from medseg.errors import DataError


@SOURCES.register("phantom")
class PhantomSource(Source):
    """Synthetic micro-ultrasound prostate phantom with expert and non-expert masks.

    Options:
        root: ignored (may be None).
        n_patients: number of cases (default 10).
        seed: generator seed (default 0).
        shape: ``(D, H, W)`` of each volume (default ``(24, 128, 128)``).
        spacing: ``(sz, sy, sx)`` in mm (default ``(1.0, 0.3, 0.3)``).
    """

    annotators = ("expert", "non_expert")

    def __init__(
        self,
        root: str | Path | None = None,
        n_patients: int = 10,
        seed: int = 0,
        shape: tuple[int, int, int] = DEFAULT_SHAPE,
        spacing: tuple[float, float, float] = DEFAULT_SPACING,
        target: str | None = None,
    ) -> None:
        super().__init__(None, target)
        if n_patients < 1:
            raise DataError(f"n_patients must be >= 1, got {n_patients}")
        self.n_patients, self.seed = int(n_patients), int(seed)
        self.shape = tuple(int(s) for s in shape)
        self.spacing = parse_spacing(spacing, 3, "phantom")  # -o spacing=1,0.3,0.3 as --spacing
        self._cache: dict[str, Sample] = {}

    def case_ids(self) -> list[str]:
        """``phantom_00`` ... ``phantom_<n-1>``."""
        return [phantom_case_id(i, self.n_patients) for i in range(self.n_patients)]

    def load_case(self, case_id: str) -> list[Sample]:
        """The generated volume (cached after the first call)."""
        if case_id not in self._cache:
            if case_id not in self.case_ids():
                raise DataError(f"unknown case id {case_id!r} (phantom has {self.n_patients} cases)")
            idx = int(case_id.rsplit("_", 1)[1])
            s = generate_phantom_case(idx, self.shape, self.spacing, self.seed, self.n_patients)  # type: ignore[arg-type]
            if self.target != "expert":
                s.target = self.target
                s.validate()
            self._cache[case_id] = s
        return [self._cache[case_id]]
