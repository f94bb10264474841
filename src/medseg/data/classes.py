"""Class-index masks of multi-class data sets: the checks and facts the 2D and 3D data sets share.

A multi-class source (``folder`` with ``labels``, ``msd``, ``nnunet`` with several labels) gives
masks of class indices 0..K−1 and declares K in ``meta["num_classes"]``, the label value of each
class in ``meta["class_values"]`` and their names in ``meta["label_names"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medseg.data.sample import Sample
from medseg.errors import DataError


def check_sample_classes(sample: Sample, num_classes: int | None) -> None:
    """A sample's declared class count agrees with ``data.num_classes`` (binary: none declared)."""
    where = sample.source_path or sample.case_id
    declared = sample.meta.get("num_classes")
    if num_classes is None:
        if declared is not None:
            raise DataError(
                f"the masks are class indices of {declared} classes (meta['num_classes']): "
                f"set data.num_classes: {declared}",
                where,
            )
        return
    if declared is not None and int(declared) != num_classes:
        raise DataError(f"data.num_classes is {num_classes} but the source gives {declared} classes", where)
    # Sample.validate checked the values: class indices below `declared`, or binary {0, 1}


def common_class_values(samples: Sequence[Sample]) -> list[int] | None:
    """The samples' common ``meta["class_values"]`` (None when none has them); a conflict raises."""
    found = {tuple(s.meta["class_values"]) for s in samples if s.meta.get("class_values") is not None}
    if len(found) > 1:
        raise DataError(f"the cases map classes to different label values: {sorted(found)}")
    return [int(v) for v in found.pop()] if found else None


def common_label_names(samples: Sequence[Sample]) -> list[str] | None:
    """The samples' common ``meta["label_names"]`` (class index → name); None when none has them or
    they disagree (names only label outputs, so a disagreement is no reason to stop training)."""
    found = {tuple(s.meta["label_names"]) for s in samples if s.meta.get("label_names") is not None}
    return [str(n) for n in found.pop()] if len(found) == 1 else None


def present_classes(mask: np.ndarray, num_classes: int) -> list[int]:
    """The foreground classes 1..K−1 present in a class-index mask, ascending."""
    counts = np.bincount(np.asarray(mask, dtype=np.int64).ravel(), minlength=num_classes)
    return [int(c) for c in np.flatnonzero(counts[1:num_classes]) + 1]
