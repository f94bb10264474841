"""Step times measured on the device: a few real training steps of a candidate network.

A FLOP count misses memory traffic, kernel efficiency at small sizes, the deep-supervision loss and
the data augmentation; on a CPU the estimate was off by 3× on MSD Hippocampus. :class:`StepTimer`
builds the candidate :class:`~medseg.models.resenc_unet.ResEncUNet`, runs ``warmup`` + ``steps``
SGD steps on random inputs with the planned loss (Dice + CE/BCE with deep supervision) and, for a
3D plan, the per-patch augmentation of the planned recipe, and returns the median step time.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from medseg import losses
from medseg.config import AugmentConfig
from medseg.data.transforms import augment_transform, mask_key
from medseg.models.resenc_unet import ResEncUNet
from medseg.plan.to_config import PLANNED_AUGMENT


class StepTimer:
    """Times candidate networks on ``device`` (a :data:`~medseg.plan.budget.StepTimer`); cached.

    Args:
        device: ``cpu`` or ``cuda``.
        steps: timed steps (the median is returned) after ``warmup`` untimed ones.
        augment: the per-patch augmentation of 3D plans (``None``: the planned recipe's).
        slow_step_seconds: a candidate whose first step takes longer gets one timed step, not
            ``steps``: it buys few steps anyway, and a plan that tries several slow candidates
            (large 3D networks on a CPU) would otherwise spend minutes timing them.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        steps: int = 3,
        warmup: int = 1,
        augment: AugmentConfig | None = None,
        slow_step_seconds: float = 2.0,
    ) -> None:
        if steps < 1 or warmup < 0:
            raise ValueError(f"steps must be ≥ 1 and warmup ≥ 0, got {steps}, {warmup}")
        self.device = torch.device(device)
        self.steps, self.warmup = steps, warmup
        self.augment = augment
        self.slow_step_seconds = slow_step_seconds
        self._cache: dict[str, float] = {}
        self.measured: list[dict[str, Any]] = []  # every timing, for the plan's log

    def __call__(self, candidate: dict[str, Any]) -> float:
        key = repr(sorted((k, repr(v)) for k, v in candidate.items()))
        if key not in self._cache:
            seconds = self._time(candidate)
            self._cache[key] = seconds
            self.measured.append({**candidate, "seconds": seconds})
        return self._cache[key]

    def _time(self, candidate: dict[str, Any]) -> float:
        options = dict(candidate["model"])
        patch, batch = list(candidate["patch"]), int(candidate["batch"])
        out_channels = int(options["out_channels"])
        model = ResEncUNet(**options).to(self.device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
        loss_fn = losses.for_model_outputs(
            losses.build("dice_ce" if out_channels > 1 else "dice_bce", batch_dice=True).to(self.device)
        )
        generator = torch.Generator().manual_seed(0)
        image = torch.randn(batch, int(options["in_channels"]), *patch, generator=generator)
        high = max(out_channels, 2)
        target = torch.randint(0, high, (batch, 1, *patch), generator=generator).float()
        augment = self._augmenter(len(patch))
        use_amp = self.device.type == "cuda"
        times: list[float] = []
        n_steps = self.warmup + self.steps
        step = 0
        while step < n_steps:
            self._sync()
            start = time.perf_counter()
            if augment is not None:
                for i in range(batch):
                    augment({"image": image[i].numpy(), mask_key("expert"): target[i].numpy()})
            x, y = image.to(self.device, non_blocking=True), target.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, enabled=use_amp):
                loss = loss_fn(model(x), y, {"target": y})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            self._sync()
            seconds = time.perf_counter() - start
            if step >= self.warmup:
                times.append(seconds)
            if step == 0 and seconds > self.slow_step_seconds:
                n_steps = min(n_steps, self.warmup + 1)
            step += 1
        return float(statistics.median(times))

    def _augmenter(self, spatial_dims: int) -> Any:
        # 2D plans augment whole batches on the device (a few % of a step); 3D patches one by one
        if spatial_dims != 3:
            return None
        cfg = self.augment or AugmentConfig(**{**PLANNED_AUGMENT, "flip_axes": [0, 1, 2]})
        transform = augment_transform(["expert"], 3, cfg)
        transform.set_random_state(seed=int(np.random.default_rng(0).integers(2**31)))
        return transform

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
