"""Keep the largest connected component of a class, only where that raises the validation Dice.

A network's label map often holds small spurious blobs away from the organ; keeping only the
largest connected component of a class removes them, but also removes the second true component
of a class that has two (left and right kidneys as one label). nnU-Net (Isensee et al. 2021)
therefore decides it on the validation predictions, and so does :func:`decide_postprocessing`:

1. **foreground** (multi-class only): keep the largest connected region of all foreground
   classes together; kept when the mean Dice over the classes rises and no class's mean Dice falls;
2. **per class**, in class order, on the result of the steps kept so far: keep class c's largest
   component; kept when the mean Dice of class c over the cases rises.

"Rises" is strict: a step that changes nothing (or lowers the Dice) is not kept. A binary map is
one class, so step 2 alone (which is then step 1). The Dice of a class in a case is that of the
binary masks ``labels == c``, 1 when both are empty (medseg's empty-mask policy); the mean is over
the cases. Components are connected through faces, edges and corners (26-connectivity in 3D, 8
in 2D), as in nnU-Net. Labels are class indices ``0 … K − 1``, 0 the background.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cc3d
import numpy as np

from medseg.metrics.functional import dice_from_counts

#: full connectivity per number of dimensions
CONNECTIVITY = {2: 8, 3: 26}


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary 2D or 3D ``mask`` (the first one on a tie)."""
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim not in CONNECTIVITY:
        raise ValueError(f"connected components need a 2D or 3D mask, got shape {mask.shape}")
    box = _bounding_box(mask)
    kept = np.zeros(mask.shape, dtype=bool)
    if box is None:
        return kept
    components = cc3d.connected_components(
        np.ascontiguousarray(mask[box]), connectivity=CONNECTIVITY[mask.ndim]
    )
    sizes = np.bincount(components.ravel())
    sizes[0] = 0  # the background of the box
    kept[box] = components == int(sizes.argmax())
    return kept


def largest_component_per_class(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """``labels`` with every voxel of a class in ``classes`` outside that class's largest connected
    component set to background (0); other classes unchanged. Returns a copy."""
    out = np.array(labels, copy=True)
    for c in classes:
        if c <= 0:
            raise ValueError(f"class {c} is not a foreground class (classes are 1 … K − 1)")
        mask = out == c
        out[mask & ~largest_component(mask)] = 0
    return out


def largest_foreground_region(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every foreground voxel outside the largest connected region of all foreground
    classes together set to background (0). Returns a copy."""
    out = np.array(labels, copy=True)
    foreground = out > 0
    out[foreground & ~largest_component(foreground)] = 0
    return out


@dataclass(frozen=True)
class StepDecision:
    """One postprocessing step tried on the validation cases: kept or not, and why."""

    step: str  # "foreground" or "class <c>"
    keep: bool
    dice_before: float  # mean Dice over the cases (foreground step: mean over the classes)
    dice_after: float
    reason: str


@dataclass(frozen=True)
class PostprocessingDecision:
    """Which largest-component steps to apply to a model's label maps (see the module docstring)."""

    num_classes: int  # K, background included (2 for a binary model)
    foreground_region: bool = False
    largest_component_classes: tuple[int, ...] = ()
    steps: tuple[StepDecision, ...] = field(default_factory=tuple)
    n_cases: int = 0

    @property
    def changes_anything(self) -> bool:
        return self.foreground_region or bool(self.largest_component_classes)

    def per_class(self) -> dict[int, bool]:
        """Foreground class → whether its largest component is kept."""
        return {c: c in self.largest_component_classes for c in range(1, self.num_classes)}

    def summary(self) -> str:
        """One line: what is applied, with the Dice that decided it."""
        if not self.steps:
            return "no postprocessing (no validation cases)"
        return "; ".join(
            f"{s.step}: {'largest component' if s.keep else 'unchanged'} "
            f"(Dice {s.dice_before:.4f} → {s.dice_after:.4f})"
            for s in self.steps
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (a checkpoint is loaded with ``weights_only=True``)."""
        return {
            "method": "largest connected component, kept where the validation Dice rises (nnU-Net's rule)",
            "num_classes": self.num_classes,
            "foreground_region": self.foreground_region,
            "largest_component_classes": list(self.largest_component_classes),
            "n_cases": self.n_cases,
            "steps": [
                {
                    "step": s.step,
                    "keep": s.keep,
                    "dice_before": s.dice_before,
                    "dice_after": s.dice_after,
                    "reason": s.reason,
                }
                for s in self.steps
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostprocessingDecision:
        try:
            return cls(
                num_classes=int(data["num_classes"]),
                foreground_region=bool(data["foreground_region"]),
                largest_component_classes=tuple(int(c) for c in data["largest_component_classes"]),
                steps=tuple(StepDecision(**step) for step in data.get("steps", [])),
                n_cases=int(data.get("n_cases", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable postprocessing decision ({type(exc).__name__}: {exc})") from exc


def apply_postprocessing(labels: np.ndarray, decision: PostprocessingDecision) -> np.ndarray:
    """The steps kept in ``decision`` applied to a label map of class indices (a copy; the input
    itself when nothing applies). A boolean mask comes back boolean."""
    if not decision.changes_anything:
        return labels
    out = np.asarray(labels)
    was_bool = out.dtype == bool
    if was_bool:
        out = out.astype(np.uint8)
    if decision.foreground_region:
        out = largest_foreground_region(out)
    out = largest_component_per_class(out, decision.largest_component_classes)
    return out.astype(bool) if was_bool else out


def class_dice(
    predictions: Sequence[np.ndarray], ground_truths: Sequence[np.ndarray], classes: Iterable[int]
) -> np.ndarray:
    """``cases × classes`` Dice of each class in ``classes`` in every case (both empty → 1)."""
    classes = list(classes)
    scores = np.empty((len(predictions), len(classes)), dtype=np.float64)
    for i, (pred, gt) in enumerate(zip(predictions, ground_truths, strict=True)):
        for j, c in enumerate(classes):
            p, g = pred == c, gt == c
            scores[i, j] = dice_from_counts(float(np.count_nonzero(p & g)), float(p.sum() + g.sum()))
    return scores


def decide_postprocessing(
    predictions: Sequence[np.ndarray], ground_truths: Sequence[np.ndarray], num_classes: int = 2
) -> PostprocessingDecision:
    """Decide the largest-component steps on validation label maps (module docstring: the rule).

    ``predictions`` and ``ground_truths`` are class-index maps of the same cases in the same order
    (``num_classes`` = K; 2 for a binary model, whose maps are 0/1 or boolean).
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truths)} ground truths")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too: ≥ 2, got {num_classes}")
    predictions = [_class_map(p, num_classes, f"prediction {i}") for i, p in enumerate(predictions)]
    ground_truths = [_class_map(g, num_classes, f"ground truth {i}") for i, g in enumerate(ground_truths)]
    for i, (p, g) in enumerate(zip(predictions, ground_truths, strict=True)):
        if p.shape != g.shape:
            raise ValueError(f"case {i}: prediction shape {p.shape} differs from ground truth {g.shape}")
    if not predictions:
        return PostprocessingDecision(num_classes)
    steps: list[StepDecision] = []
    current = predictions
    foreground_classes = range(1, num_classes)
    baseline = class_dice(current, ground_truths, foreground_classes).mean(axis=0)
    foreground_region = False
    if num_classes > 2:
        candidate = [largest_foreground_region(p) for p in current]
        after = class_dice(candidate, ground_truths, foreground_classes).mean(axis=0)
        worse = [int(c) + 1 for c in np.flatnonzero(after < baseline)]
        foreground_region = bool(after.mean() > baseline.mean()) and not worse
        if foreground_region:
            reason = "mean Dice over the classes rises and no class falls"
        elif worse:
            reason = f"the Dice of class(es) {worse} falls"
        else:
            reason = "mean Dice over the classes does not rise"
        steps.append(
            StepDecision("foreground", foreground_region, float(baseline.mean()), float(after.mean()), reason)
        )
        if foreground_region:
            current, baseline = candidate, after
    kept: list[int] = []
    for c in range(1, num_classes):
        candidate = [largest_component_per_class(p, [c]) for p in current]
        after = float(class_dice(candidate, ground_truths, [c]).mean())  # the other classes are unchanged
        keep = bool(after > baseline[c - 1])
        reason = "its mean Dice rises" if keep else "its mean Dice does not rise"
        steps.append(StepDecision(f"class {c}", keep, float(baseline[c - 1]), after, reason))
        if keep:
            kept.append(c)
            current = candidate
            baseline[c - 1] = after
    return PostprocessingDecision(num_classes, foreground_region, tuple(kept), tuple(steps), len(predictions))


def _class_map(labels: np.ndarray, num_classes: int, name: str) -> np.ndarray:
    """An integer class-index map in ``0 … num_classes − 1`` (a boolean mask as 0/1)."""
    array = np.asarray(labels)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{name}: class indices must be integers, got fractional values")
        array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name}: class indices must lie in 0 … {num_classes - 1}, got {array.min()} … {array.max()}"
        )
    return array


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every ``True`` of ``mask``; ``None`` when it has none."""
    if not mask.any():
        return None
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
