"""The postprocessing decision of a checkpoint: where it is stored, and applying it to label maps.

``medseg fit`` decides, after training, whether keeping the largest connected component (of all
foreground, and of each class) raises the validation Dice
(:func:`medseg.engine.choose_postprocessing.choose_postprocessing`, the rule in
:mod:`medseg.metrics.postprocess`) and stores the decision in ``best.pt`` under
:data:`POSTPROCESSING_KEY`. ``medseg predict`` and ``medseg evaluate`` read it back
(:func:`stored_postprocessing`) and apply it to every label map (:func:`postprocess_labels`) before
the class indices become label values. A checkpoint without a decision (older ones, ``medseg
train``) predicts exactly as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.checkpoint import load_checkpoint, save_checkpoint
from medseg.errors import DataError
from medseg.metrics.postprocess import PostprocessingDecision, apply_postprocessing

POSTPROCESSING_KEY = "postprocessing"


def stored_postprocessing(
    state: dict[str, Any], source: str | Path | None = None
) -> PostprocessingDecision | None:
    """The decision stored in a checkpoint's ``state``; ``None`` when it has none.

    An unreadable entry is a :class:`DataError` naming ``source`` (the checkpoint file).
    """
    raw = state.get(POSTPROCESSING_KEY)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise DataError(f"the '{POSTPROCESSING_KEY}' entry is a {type(raw).__name__}, not a mapping", source)
    try:
        return PostprocessingDecision.from_dict(raw)
    except ValueError as exc:
        raise DataError(str(exc), source) from exc


def store_postprocessing(checkpoint: str | Path, decision: PostprocessingDecision) -> Path:
    """Write ``decision`` into the checkpoint file, atomically (the rest of it unchanged)."""
    state = load_checkpoint(checkpoint)
    state[POSTPROCESSING_KEY] = decision.to_dict()
    return save_checkpoint(state, checkpoint)


def postprocess_labels(labels: np.ndarray, decision: PostprocessingDecision | None) -> np.ndarray:
    """``labels`` (class indices, or a binary mask) with ``decision`` applied; as they are without one."""
    if decision is None:
        return labels
    return apply_postprocessing(labels, decision)
