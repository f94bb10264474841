"""2D or 3D, measured: train both networks briefly on the same split and keep the better one.

The planner's rule (:func:`~medseg.plan.rules.spatial_dims_rule`) guesses from the spacing, the
shape and the steps the budget buys. When the budget is long enough
(:data:`TRIAL_MIN_MINUTES`), ``medseg fit`` checks the guess: each candidate trains for
:data:`TRIAL_SHARE` of the budget with its own plan, both are validated on the same cases, and the
one with the higher validation Dice is trained for the rest of the budget. The plan records both
scores (``dims_trial``) and the reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from medseg.config import apply_overrides
from medseg.data.fingerprint import Fingerprint
from medseg.engine.train import train
from medseg.plan import Plan, plan_to_config

#: Below this budget a trial would eat too much of it: the rule decides alone.
TRIAL_MIN_MINUTES = 60.0
#: Each candidate trains for this share of the budget.
TRIAL_SHARE = 0.05


def trial_applies(fingerprint: Fingerprint, minutes: float, min_minutes: float | None = None) -> str | None:
    """Why no trial runs (``None``: it runs): 2D data, or a budget under ``min_minutes`` (default
    :data:`TRIAL_MIN_MINUTES`, read when called)."""
    min_minutes = TRIAL_MIN_MINUTES if min_minutes is None else min_minutes
    if fingerprint.spatial_dims != 3:
        return "the data are 2D: no 3D candidate"
    if minutes < min_minutes:
        return (
            f"no 2D/3D trial: the budget ({minutes:g} min) is under {min_minutes:g} min, where two trials "
            f"of {TRIAL_SHARE:.0%} each would cost more than they tell"
        )
    return None


def run_dims_trial(
    plans: Sequence[Plan],
    minutes: float,
    out: Path,
    device: str,
    seed: int,
    console: Console,
    overrides: Sequence[str] = (),
) -> dict[str, float]:
    """Train each plan for ``minutes`` into ``out/trial_<d>d`` and return its last validation Dice
    by ``"2d"`` / ``"3d"`` (the annealed end of a short budget run: ``checkpoint_selection: last``)."""
    scores: dict[str, float] = {}
    for plan in plans:
        name = f"{plan.spatial_dims}d"
        cfg = plan_to_config(plan, out / f"trial_{name}", minutes=minutes, device=device, seed=seed)
        cfg = apply_overrides(cfg, ["train.checkpoint_selection=last", "train.tensorboard=false", *overrides])
        console.print(f"[bold]2D/3D trial[/]: {name} for {minutes:.2g} min")
        result = train(cfg, console=console)
        last = result.history[-1]["val_dice"] if result.history else float("nan")
        scores[name] = float(last)
    return scores


def choose_by_trial(rule_plan: Plan, other_plan: Plan, scores: dict[str, float]) -> Plan:
    """The plan whose trial scored higher (the rule's plan on a tie or a non-finite score), with the
    trial's scores and its reason recorded."""
    rule_name, other_name = f"{rule_plan.spatial_dims}d", f"{other_plan.spatial_dims}d"
    rule_score, other_score = scores.get(rule_name, math.nan), scores.get(other_name, math.nan)
    keep_other = math.isfinite(other_score) and (not math.isfinite(rule_score) or other_score > rule_score)
    winner = other_plan if keep_other else rule_plan
    reasons = dict(winner.reasons)
    reasons["spatial_dims"] = (
        f"trial of both on the validation cases: {rule_name} Dice {rule_score:.4f}, {other_name} Dice "
        f"{other_score:.4f} → {winner.spatial_dims}D (the rule said {rule_plan.spatial_dims}D: "
        f"{rule_plan.reasons.get('spatial_dims', '')})"
    )
    return replace(winner, dims_trial=dict(scores), reasons=reasons)
