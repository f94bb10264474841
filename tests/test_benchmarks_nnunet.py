"""The nnU-Net arm of the budget benchmarks (``benchmarks/budget_nnunet.py``), without training nnU-Net:
the split file, the prediction read-back, the wall-clock trainer's lr and stop. Tests that need
``nnunetv2`` (the ``bench`` extra, absent in CI) skip without it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medseg.data.export_nnunet import case_identifiers, export_nnunet_samples
from medseg.data.sample import Sample
from medseg.optim.schedulers import budget_factor

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import budget_nnunet as bn  # noqa: E402  (benchmarks/ is not a package)


def _sample(case_id: str, shape: tuple[int, ...], seed: int, name: str = "") -> Sample:
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) > 0.6).astype(np.uint8)
    spacing = (2.0, 0.5, 0.7)[-len(shape) :]
    image = rng.normal(size=(2, *shape)).astype(np.float32)
    return Sample(image, {"expert": mask}, "expert", spacing, case_id, meta={"image_name": name})


@pytest.fixture()
def hc18_like() -> tuple[list[Sample], list[Sample]]:
    """2D images, two of subject 001 (HC18's layout: a case with several images)."""
    train = [_sample("001", (6, 9), 0, "001_HC"), _sample("002", (6, 9), 1, "002_HC")]
    val = [_sample("001x", (5, 8), 2, "a"), _sample("003", (7, 9), 3, "003_HC")]
    train.append(_sample("001", (6, 9), 4, "001_2HC"))
    return train, val


def test_split_file_maps_medseg_cases_to_the_exported_ids(
    tmp_path: Path, hc18_like: tuple[list[Sample], list[Sample]]
) -> None:
    train, val = hc18_like
    folder = export_nnunet_samples([*train, *val], tmp_path / "raw", 990, "bench")
    spec = json.loads((folder / "dataset.json").read_text())
    train_ids, val_ids = bn.split_identifiers(train, val)
    assert train_ids == ["001_001", "002", "001_002"] and val_ids == ["001x", "003"]
    # every id names an exported case of the right patient
    for ident, sample in zip([*train_ids, *val_ids], [*train, *val], strict=True):
        assert spec["medseg_patients"][ident] == sample.case_id
        assert (folder / "imagesTr" / f"{ident}_0000.nii.gz").is_file()
        assert (folder / "labelsTr" / f"{ident}.nii.gz").is_file()
    assert spec["numTraining"] == 5 and case_identifiers([*train, *val]) == [*train_ids, *val_ids]
    path = bn.write_splits(tmp_path / "pre", train_ids, val_ids)
    assert json.loads(path.read_text()) == [{"train": train_ids, "val": val_ids}]
    with pytest.raises(ValueError, match="both sides"):
        bn.write_splits(tmp_path / "pre", ["a", "b"], ["b"])


def test_predictions_are_keyed_like_medseg_without_touching_the_samples(
    hc18_like: tuple[list[Sample], list[Sample]],
) -> None:
    train, _ = hc18_like
    assert bn.sample_keys(train) == ["001/001_HC", "002", "001/001_2HC"]
    assert all(s.key == "" for s in train)  # the caller's samples keep their (unset) keys
    train[1].key = "mine"
    train[0].key, train[2].key = "k0", "k2"
    assert bn.sample_keys(train) == ["k0", "mine", "k2"]


def test_curve_and_plan_summary() -> None:
    logging = {
        "epoch_start_timestamps": [100.0, 160.0, 220.0],
        "epoch_end_timestamps": [160.0, 220.0, 250.0],
        "ema_fg_dice": [0.1, 0.19, 0.271],
    }
    curve = bn.curve_from_logging(logging)
    np.testing.assert_allclose(curve, [(1.0, 0.1), (2.0, 0.19), (2.5, 0.271)])
    assert all(isinstance(v, float) for point in curve for v in point)
    assert bn.curve_from_logging({}) == []
    line = "t: budget spent: 3 epochs, 41 iterations, last step ended at 1.502 min, training at 1.6 min"
    assert bn.parse_budget_line(f"x\n{line}\n") == (3, 41, 1.502)
    assert bn.parse_budget_line("no such line") is None
    plans = {"configurations": {"2d": {"patch_size": [256, 256], "batch_size": 12, "spacing": [1.0, 0.5]}}}
    assert bn.summarize_plan(plans, "2d") == "2d, patch 256x256, batch 12, spacing 1x0.5"


def test_environment_and_failing_command(tmp_path: Path) -> None:
    env = bn.nnunet_environment(tmp_path, 1.5, 20, 4, n_proc_da=1, base={"PATH": "/usr/bin"})
    assert env["nnUNet_raw"] == str(tmp_path / "nnUNet_raw") and env["nnUNet_compile"] == "f"
    assert float(env["MEDSEG_NNUNET_MINUTES"]) == 1.5 and env["MEDSEG_NNUNET_ITERS"] == "20"
    assert env["nnUNet_n_proc_DA"] == "1" and env["PATH"].startswith(str(Path(sys.executable).parent))
    cmd = [sys.executable, "-c", "import sys; print('step one'); print('it broke'); sys.exit(3)"]
    log = tmp_path / "log.txt"
    with pytest.raises(bn.NNUNetError, match=r"(?s)failed \(exit 3\).*it broke"):
        bn.run_command(cmd, env, log)
    assert "step one" in log.read_text()
    assert bn.run_command([sys.executable, "-c", "pass"], env, log) >= 0


# --------------------------------------------------------------------------- needs nnunetv2


def test_prediction_read_back_round_trips(tmp_path: Path) -> None:
    """A label written by the exporter, read and re-written by nnU-Net's own image I/O (as
    nnUNetv2_predict writes its output), comes back as the sample's target_mask, 2D and 3D."""
    pytest.importorskip("nnunetv2")
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    samples = [_sample("vol", (3, 5, 7), 0), _sample("img", (6, 9), 1)]
    folder = export_nnunet_samples(samples, tmp_path / "raw", 991, "rt")
    io = SimpleITKIO()
    for sample, ident in zip(samples, case_identifiers(samples), strict=True):
        _, properties = io.read_images([str(folder / "imagesTr" / f"{ident}_0000.nii.gz")])
        seg, _ = io.read_seg(str(folder / "labelsTr" / f"{ident}.nii.gz"))
        out = tmp_path / "pred" / f"{ident}.nii.gz"
        out.parent.mkdir(exist_ok=True)
        io.write_seg(seg[0], str(out), properties)
        back = bn.read_prediction(out, sample)
        assert back.dtype == np.uint8 and back.shape == sample.target_mask.shape
        np.testing.assert_array_equal(back, sample.target_mask)
    with pytest.raises(bn.NNUNetError, match="shape"):
        bn.read_prediction(tmp_path / "pred" / "vol.nii.gz", samples[1])


@pytest.fixture()
def trainer_module() -> Iterator[Any]:
    pytest.importorskip("nnunetv2")
    import nnunet_wallclock_trainer

    yield nnunet_wallclock_trainer


def test_lr_follows_the_clock_like_medseg_budget_poly(trainer_module: Any) -> None:
    lr = trainer_module.wallclock_poly_lr
    for elapsed in (0.0, 10.0, 45.0, 89.0, 90.0, 200.0):
        expected = 1e-2 * budget_factor(elapsed / 90.0, "poly", power=0.9)
        assert lr(1e-2, elapsed, 90.0) == pytest.approx(expected, abs=1e-12)
    assert lr(1e-2, 0.0, 90.0) == 1e-2 and lr(1e-2, 90.0, 90.0) == 0.0 and lr(1e-2, 500.0, 90.0) == 0.0


def test_trainer_is_found_by_nnunet_and_install_is_idempotent(trainer_module: Any) -> None:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    target = bn.install_trainer()
    stamp = target.stat().st_mtime_ns
    assert bn.install_trainer() == target and target.stat().st_mtime_ns == stamp
    found = recursive_find_trainer_class_by_name(bn.TRAINER_NAME)
    assert found.__name__ == bn.TRAINER_NAME and found.run_training is not None


def test_training_stops_after_the_epoch_that_spends_the_budget(
    trainer_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Budget 10 s, 1.5 s per iteration, 5 iterations per epoch: epoch 0 runs 5 (to 7.5 s), epoch 1
    runs 2 (to 10.5 s) and skips the rest, still validates, and training ends; the lr anneals with
    the clock to 0."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    cls = trainer_module.nnUNetTrainer_WallClock
    trainer = object.__new__(cls)  # no plans or data: only the loop is under test
    now = [0.0]
    events: list[str] = []
    lrs: list[float] = []
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-2)
    trainer.clock = lambda: now[0]
    trainer.budget_seconds = 10.0
    trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch = 5, 2
    trainer._budget_start, trainer.current_epoch, trainer.initial_lr = None, 0, 1e-2
    trainer.iterations_done = 0
    logged: list[str] = []
    trainer.optimizer = optimizer
    trainer.lr_scheduler = trainer_module.WallClockPolyLR(optimizer, 1e-2, trainer)
    trainer.dataloader_train = trainer.dataloader_val = iter(range(1000))

    def fake_step(self: Any, batch: Any) -> dict:
        lrs.append(optimizer.param_groups[0]["lr"])
        now[0] += 1.5
        events.append("t")
        return {}

    def end_epoch() -> None:
        events.append("|")
        trainer.current_epoch += 1

    monkeypatch.setattr(nnUNetTrainer, "train_step", fake_step)  # the override calls it via super()
    trainer.on_train_start = lambda: events.append("start")
    trainer.on_epoch_start = trainer.on_train_epoch_end = trainer.on_validation_epoch_start = lambda *a: None
    trainer.on_train_epoch_start = lambda: trainer.lr_scheduler.step(trainer.current_epoch)
    trainer.validation_step = lambda batch: events.append("v")
    trainer.on_validation_epoch_end = lambda outputs: None
    trainer.on_epoch_end = end_epoch
    trainer.on_train_end = lambda: events.append("end")
    trainer.print_to_log_file = lambda *a, **k: logged.append(" ".join(map(str, a)))

    trainer.run_training()
    assert "".join(events) == "start" + "tttttvv|" + "ttvv|" + "end"
    assert trainer.current_epoch == 2 and trainer.iterations_done == 7
    assert bn.parse_budget_line("\n".join(logged)) == (2, 7, pytest.approx(10.5 / 60, abs=1e-3))
    expected = [1e-2 * (1 - t / 10.0) ** 0.9 for t in (0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0)]
    assert lrs == pytest.approx(expected)
