"""The data-source contract and its registry.

A source reads one published layout as it is. It lists case ids (a case is a patient or a
volume: the unit that splits keep on one side) and loads each case as a list of
:class:`~medseg.data.sample.Sample`:

* volumetric sources (``microus``, ``lgg``, ``phantom``, 3D ``folder``) return one 3D sample;
* image sources (``hc18``, ``busi``, ``drive``, 2D ``folder``) return one 2D sample per image
  of that subject.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from medseg.data.sample import Sample
from medseg.errors import DataError
from medseg.registry import Registry

SOURCES = Registry("data source")


class Source(ABC):
    """Base class of every data source. Subclasses set ``annotators`` and implement two methods."""

    #: annotator names this source can provide, the training target first
    annotators: tuple[str, ...] = ("expert",)

    def __init__(self, root: str | Path | None, target: str | None = None) -> None:
        self.root = None if root is None else Path(root).expanduser()
        self.target = target or self.annotators[0]
        if self.root is not None and not self.root.exists():
            raise DataError("data root does not exist", self.root)

    @abstractmethod
    def case_ids(self) -> list[str]:
        """Sorted ids of the cases (patients / volumes) in this source."""

    @abstractmethod
    def load_case(self, case_id: str) -> list[Sample]:
        """All samples of one case (one 3D sample, or the 2D images of one subject)."""

    def load_all(self) -> list[Sample]:
        """Every sample of every case; an empty source is an error that names the root."""
        ids = self.case_ids()
        if not ids:
            raise DataError(f"no cases found for source '{type(self).__name__}'", self.root)
        return [s for cid in ids for s in self.load_case(cid)]

    def __len__(self) -> int:
        return len(self.case_ids())
