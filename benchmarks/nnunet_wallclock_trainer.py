"""``nnUNetTrainer_WallClock``: nnU-Net v2's default trainer under a wall-clock budget.

nnU-Net finds trainers only inside ``nnunetv2/training/nnUNetTrainer/``, so
``budget_nnunet.run_nnunet`` copies this file there before calling ``nnUNetv2_train``. It must
therefore import nothing from medseg or ``benchmarks/``.

What differs from ``nnUNetTrainer`` (everything else — plans, network, loss, augmentation, SGD with
Nesterov momentum 0.99, initial lr 1e-2, deep supervision, oversampling — is nnU-Net's default):

* **Budget**: ``MEDSEG_NNUNET_MINUTES`` (required) minutes of training, counted from the start of
  the first epoch (after nnU-Net has built its data loaders and unpacked the data).
* **Learning rate**: nnU-Net's poly schedule ``lr = 1e-2 · (1 − progress)^0.9``, with progress =
  elapsed time / budget instead of epoch / 1000, set before every iteration, so it anneals to 0
  exactly when the budget ends (as medseg's ``BudgetSchedule`` does).
* **Stop**: once the budget is spent the current epoch's remaining training iterations are skipped
  (their lr would be 0: they could not change the weights), that epoch's validation still runs
  (for the pseudo-Dice curve), and training ends; ``checkpoint_final.pth`` is then written as usual.
  So the weights stop changing within one iteration of the budget's end, but the process runs on
  for that last validation (``MEDSEG_NNUNET_VAL_ITERS`` forward passes): the last log line gives
  both times.
* **Epoch length**: ``MEDSEG_NNUNET_ITERS`` training iterations (default 50, nnU-Net: 250) and
  ``MEDSEG_NNUNET_VAL_ITERS`` validation iterations (default 10, nnU-Net: 50) per epoch, so that a
  CPU run of a few minutes still logs several epochs. The lr follows time, so this only changes
  how often the pseudo Dice is measured and checkpoints are written, not the optimisation.
* **No post-training validation**: ``perform_actual_validation`` (a sliding-window prediction of
  the validation cases that ``nnUNetv2_train`` runs after training) is skipped, because the
  benchmark predicts those cases with ``nnUNetv2_predict`` itself; it would cost time outside the
  budget for no information.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

BUDGET_ENV = "MEDSEG_NNUNET_MINUTES"
ITERS_ENV = "MEDSEG_NNUNET_ITERS"
VAL_ITERS_ENV = "MEDSEG_NNUNET_VAL_ITERS"
POLY_EXPONENT = 0.9  # nnU-Net's PolyLRScheduler default


def wallclock_poly_lr(
    initial_lr: float, elapsed_s: float, budget_s: float, exponent: float = POLY_EXPONENT
) -> float:
    """nnU-Net's poly lr with time as the step: ``initial_lr · (1 − elapsed/budget)^exponent``,
    0 once the budget is spent."""
    progress = min(max(elapsed_s / budget_s, 0.0), 1.0)
    return initial_lr * (1.0 - progress) ** exponent


class WallClockPolyLR:
    """Stands in for nnU-Net's ``PolyLRScheduler``: ``step()`` ignores the epoch it is given and sets
    the lr from the trainer's clock (nnU-Net calls it once per epoch, the trainer before each
    iteration)."""

    def __init__(self, optimizer: torch.optim.Optimizer, initial_lr: float, trainer: nnUNetTrainer_WallClock):
        self.optimizer = optimizer
        self.initial_lr = initial_lr
        self.trainer = trainer

    def step(self, current_step: int | None = None) -> None:
        lr = wallclock_poly_lr(self.initial_lr, self.trainer.elapsed_seconds(), self.trainer.budget_seconds)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class nnUNetTrainer_WallClock(nnUNetTrainer):  # noqa: N801  (nnU-Net's trainer naming)
    """nnU-Net's default trainer with a wall-clock budget; see the module docstring."""

    clock: Callable[[], float] = staticmethod(time.monotonic)  # a test swaps in a fake clock

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008  (nnU-Net's signature)
    ) -> None:
        # nnUNetTrainer records its init args from this signature's parameter names: keep them
        super().__init__(plans, configuration, fold, dataset_json, device)
        minutes = os.environ.get(BUDGET_ENV)
        if minutes is None or not float(minutes) > 0:
            raise RuntimeError(
                f"{type(self).__name__} needs {BUDGET_ENV} > 0 (training minutes), got {minutes!r}"
            )
        self.budget_seconds = 60.0 * float(minutes)
        self.num_iterations_per_epoch = int(os.environ.get(ITERS_ENV, "50"))
        self.num_val_iterations_per_epoch = int(os.environ.get(VAL_ITERS_ENV, "10"))
        self._budget_start: float | None = None
        self.iterations_done = 0

    def elapsed_seconds(self) -> float:
        return 0.0 if self._budget_start is None else self.clock() - self._budget_start

    def budget_spent(self) -> bool:
        return self._budget_start is not None and self.elapsed_seconds() >= self.budget_seconds

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WallClockPolyLR]:
        optimizer, _ = super().configure_optimizers()  # nnU-Net's SGD; its epoch-based poly is replaced
        return optimizer, WallClockPolyLR(optimizer, self.initial_lr, self)

    def train_step(self, batch: dict) -> dict:
        self.lr_scheduler.step()  # per iteration: the lr follows the clock, not the epoch count
        self.iterations_done += 1
        return super().train_step(batch)

    def run_training(self) -> None:
        # nnUNetTrainer.run_training fixes range(num_epochs) up front; this loop ends on the clock
        self.on_train_start()
        self._budget_start = self.clock()
        self.print_to_log_file(
            f"wall-clock budget {self.budget_seconds / 60:.2f} min, {self.num_iterations_per_epoch} "
            f"train / {self.num_val_iterations_per_epoch} val iterations per epoch"
        )
        while True:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for batch_id in range(self.num_iterations_per_epoch):
                if batch_id > 0 and self.budget_spent():
                    break  # the lr is 0 from here on: the rest of the epoch could not change anything
                train_outputs.append(self.train_step(next(self.dataloader_train)))
            steps_ended = self.elapsed_seconds()  # the weights do not change after this
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val))
                    for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            if self.budget_spent():
                break
        # budget_nnunet.run_nnunet parses this line (BUDGET_LINE there)
        self.print_to_log_file(
            f"budget spent: {self.current_epoch} epochs, {self.iterations_done} iterations, last step "
            f"ended at {steps_ended / 60:.3f} min, training at {self.elapsed_seconds() / 60:.3f} min"
        )
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.print_to_log_file("post-training validation skipped (the benchmark runs nnUNetv2_predict)")
