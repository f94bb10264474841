"""A training plan made from a dataset fingerprint and a compute budget (after nnU-Net's planner).

:func:`make_plan` turns a :class:`~medseg.data.fingerprint.Fingerprint` and a :class:`Budget`
(memory, minutes, device) into a :class:`Plan`; :func:`write_plan` / :func:`load_plan` keep it as
plain YAML that a user can edit, and :func:`plan_to_config` turns it into a training config.
Every decision is one function of :mod:`medseg.plan.rules` that returns its value and its reason,
and the plan carries each reason under ``reasons:``. The network is
:class:`~medseg.models.resenc_unet.ResEncUNet`.

=============== =========================================== ============================================
decision        rule                                        reason
=============== =========================================== ============================================
2D / 3D         2D images → 2D. Volumes whose anisotropy    Thick slices: a 3D kernel would mostly see
                (largest / smallest median spacing) is ≥ 3  interpolated voxels. Otherwise 3D context
                → 2D in-plane. Other volumes → 3D, unless   helps (Isensee et al. 2021). A 3D network
                even an 8-channel 3D network gets < ¼ of    that barely trains loses to a 2D one that
                ``min_steps`` steps. ``medseg fit`` tries   does; a trial measures what a rule guesses.
                both when the budget allows (``dims_trial``).
target spacing  Median spacing per axis; in 3D, an axis     nnU-Net: the median keeps most cases near
                coarser than 3× the finest gets its 10th    native resolution; the 10th percentile
                percentile. A slow device halves the 2D     keeps thin-slice detail. Enough steps matter
                in-plane resolution while the budget buys   more than full resolution in a short budget.
                fewer than ``min_steps`` steps.
normalisation   CT: clip each channel to its foreground     HU are quantitative: one global mapping;
                0.5/99.5 percentiles, global z-score. MR,   MR/US intensities are arbitrary per scan.
                US, unknown: z-score per image and channel.
classes         K and the label names from the data set     The data set names its structures; the
                (dataset.json, masks' values); binary →     report, predict and DICOM-SEG use them.
                one sigmoid channel, K ≥ 3 → K softmax.
loss            Batch Dice + BCE (binary); batch Dice of    nnU-Net's losses: a pooled Dice is stable
                the foreground classes + CE (K classes).    on empty patches; CE keeps gradients early.
mirroring       Every axis, except one along which two      A mirrored case would show anterior and
                classes' mean centroids lie ≥ 0.15 of its   posterior (or left and right) swapped.
                length apart. Training (3D) and test-time
                mirroring use the same axes.
depth/pooling   Per axis: pool while the deepest map keeps  nnU-Net: the deepest stage sees the whole
                ≥ 4 voxels and the axis' spacing is within  patch; a small or coarse axis is not pooled
                2× the finest; the patch is rounded up to   so the deep maps stay near-isotropic.
                each axis' stride product.
width           32 channels at full resolution on a GPU,    A CPU is FLOP-bound: half the width is ¼ of
                16 on a CPU; ×2 per stage, capped at 320;   the FLOPs, so 4× the steps in a budget.
                narrower (to 8) while too few steps (3D:
                below half of ``min_steps``).
patch size      2D: the median in-plane image. 3D: the      nnU-Net: the patch covers the median image
                median volume, shrunk along its largest     when memory allows.
                axis until batch 2 fits.
batch size      Largest within 80 % of the memory, ≥ 2,     The margin covers workspaces; one step should
                ≤ 5 % of the data set's voxels, ≤ 64; lower not see most of the data set (nnU-Net).
                (to 16 in 2D, 2 in 3D) to buy steps.
step time       A few real training steps timed on the      So the schedule and the step count fit the
                device (``medseg plan``/``fit``), else      clock (a FLOP count misses memory traffic,
                FLOPs / device throughput.                  data loading and augmentation).
steps           ⌊minutes·60·(1 − validation share) / step⌋. The schedule ends when the budget does.
optimizer       ≥ 10,000 steps: SGD, Nesterov momentum      nnU-Net's default for long runs. Momentum
                0.99, lr 0.01, weight decay 3e-5. Fewer:    0.99 needs thousands of steps to leave the
                AdamW, lr 3e-3. Poly (0.9) to 0 at the end  all-background start; AdamW learns in
                of the budget.                              hundreds (Hippocampus: 0.84 vs 0.00 Dice
                                                            after 300 steps).
oversampling    A third of every batch is centred on        nnU-Net: small, rare structures are
                foreground; its class is drawn uniformly    otherwise rarely seen; rare classes as often
                among the classes of the case.              as common ones.
validation      All validation cases per pass, or a fixed   Validation fits its share of the budget;
                subset when one pass would exceed 2 % of    the final evaluation scores every case.
                the training time; no mirroring in passes.
test time       Mirroring over the mirror axes (4 combos    nnU-Net's default; +0.007 per-volume Dice
                in 2D, 8 in 3D when all are mirrored).      on the LGG validation split.
=============== =========================================== ============================================
"""

from __future__ import annotations

from medseg.plan.budget import DEFAULT_THROUGHPUT, Budget, StepTimer
from medseg.plan.make import make_plan
from medseg.plan.rules import (
    ANISOTROPY_2D,
    Decision,
    Network,
    Topology,
    classes_rule,
    loss_rule,
    mirror_axes_rule,
    normalization_rule,
    planned_blocks,
    spatial_dims_rule,
    target_spacing_rule,
    topology_rule,
)
from medseg.plan.schema import NORMALIZATION_SCHEMES, Plan, load_plan, write_plan
from medseg.plan.to_config import PLANNED_AUGMENT, intensity_setting, mirror_flips, plan_to_config

__all__ = [
    "ANISOTROPY_2D",
    "DEFAULT_THROUGHPUT",
    "NORMALIZATION_SCHEMES",
    "PLANNED_AUGMENT",
    "Budget",
    "Decision",
    "Network",
    "Plan",
    "StepTimer",
    "Topology",
    "classes_rule",
    "intensity_setting",
    "load_plan",
    "loss_rule",
    "make_plan",
    "mirror_axes_rule",
    "mirror_flips",
    "normalization_rule",
    "plan_to_config",
    "planned_blocks",
    "spatial_dims_rule",
    "target_spacing_rule",
    "topology_rule",
    "write_plan",
]
