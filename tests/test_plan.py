"""The planner's rules, one test each, on fingerprints with chosen statistics; YAML round trip."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

import medseg.models as models
from medseg.data.fingerprint import ClassStats, Fingerprint, IntensityStats, compute_fingerprint
from medseg.data.sample import Sample
from medseg.errors import ConfigError
from medseg.models.resenc_unet import default_features, training_cost
from medseg.plan import (
    Budget,
    Network,
    Plan,
    Topology,
    load_plan,
    make_plan,
    normalization_rule,
    plan_to_config,
    planned_blocks,
    spatial_dims_rule,
    target_spacing_rule,
    topology_rule,
    write_plan,
)

GIB = 2**30


def _fingerprint(**overrides: object) -> Fingerprint:
    base = Fingerprint(
        n_cases=20,
        n_samples=800,
        spatial_dims=2,
        n_channels=1,
        num_classes=None,
        modality="mr",
        spacing_median=(1.0, 1.0),
        spacing_p10=(0.8, 0.8),
        anisotropy=1.0,
        shape_median=(256.0, 256.0),
        shape_min=(200, 200),
        shape_max=(300, 300),
        intensity_foreground=(IntensityStats(40.0, 10.0, -100.0, 300.0, -1000.0, 2000.0),),
        intensity_image=(IntensityStats(0.0, 500.0, -1000.0, 1500.0, -1024.0, 3000.0),),
        classes=(ClassStats(1, 0.01, 0.6, 1.2, 300.0, 300.0),),
        empty_slice_share=0.7,
        n_voxels_total=800 * 256 * 256,
    )
    return replace(base, **overrides)


def _volume_fingerprint(
    spacing: tuple[float, float, float], shape: tuple[float, float, float]
) -> Fingerprint:
    return _fingerprint(
        spatial_dims=3,
        spacing_median=spacing,
        spacing_p10=tuple(0.9 * s for s in spacing),
        anisotropy=max(spacing) / min(spacing),
        shape_median=shape,
        n_samples=20,
        n_voxels_total=int(20 * np.prod(shape)),
    )


def test_dims_rules() -> None:
    assert spatial_dims_rule(_fingerprint()).value == 2
    assert "2D images" in spatial_dims_rule(_fingerprint()).reason
    anisotropic = _volume_fingerprint((5.0, 1.0, 1.0), (30, 256, 256))
    decision = spatial_dims_rule(anisotropic)
    assert decision.value == 2 and "anisotropic" in decision.reason
    assert spatial_dims_rule(_volume_fingerprint((1.5, 1.0, 1.0), (128, 128, 128))).value == 3


def test_target_spacing_is_the_median_and_p10_for_a_coarse_3d_axis() -> None:
    assert target_spacing_rule(_fingerprint()).value == [1.0, 1.0]
    coarse = _volume_fingerprint((4.0, 1.0, 1.0), (30, 256, 256))
    decision = target_spacing_rule(coarse)
    assert decision.value == pytest.approx([3.6, 1.0, 1.0]) and "10th percentile" in decision.reason


def test_ct_normalisation_clips_to_foreground_percentiles_then_zscores() -> None:
    decision = normalization_rule(_fingerprint(modality="ct"))
    assert decision.value == [{"scheme": "ct", "clip": [-100.0, 300.0], "mean": 40.0, "std": 10.0}]
    assert "CT" in decision.reason
    with pytest.raises(ConfigError, match="channel 0 has none"):
        normalization_rule(_fingerprint(modality="ct", intensity_foreground=(None,)))


@pytest.mark.parametrize("modality", ["mr", "us", None])
def test_mr_us_and_unknown_are_zscored_per_image(modality: str | None) -> None:
    schemes = normalization_rule(_fingerprint(modality=modality, n_channels=2)).value
    assert schemes == [{"scheme": "zscore_per_image"}] * 2


def _stages(shape: list[float], spacing: list[float] | None = None) -> int:
    return topology_rule(shape, spacing or [1.0] * len(shape)).value.n_stages


def test_depth_keeps_4_voxel_maps_and_the_patch_rounds_up() -> None:
    assert _stages([256, 256]) == 7  # 256 / 2^6 = 4
    assert _stages([1024, 1024]) == 7  # capped
    assert _stages([512, 512, 512]) == 6
    topology = topology_rule([100, 64], [1.0, 1.0]).value
    assert topology.round_patch([100, 64]) == [112, 64]  # 4 poolings of each axis: multiples of 16
    assert Topology(((1, 1), (2, 2), (2, 2))).round_patch([100, 64]) == [100, 64]


def test_pooling_is_per_axis_for_small_or_coarse_axes() -> None:
    # 48 keeps ≥ 4 voxels after 3 poolings, 64 after 4: the fourth pooling skips the short axis
    small = topology_rule([64, 48], [1.0, 1.0])
    assert small.value.strides == ((1, 1), (2, 2), (2, 2), (2, 2), (2, 1))
    assert small.value.size_multiples == (16, 8) and "skip" in small.reason
    # 3 mm slices, 0.75 mm pixels: the slice axis waits until the in-plane spacing is within 2×
    coarse = topology_rule([40, 256, 256], [3.0, 0.75, 0.75]).value
    assert coarse.strides[1] == (1, 2, 2) and coarse.strides[2] == (2, 2, 2)
    # an axis too small to pool at all still gets the one pooling a U-Net needs
    assert topology_rule([6, 6], [1.0, 1.0]).value.strides == ((1, 1), (2, 2))


def test_per_axis_plan_builds_a_network_that_takes_its_patch() -> None:
    fp = _volume_fingerprint((3.0, 0.75, 0.75), (40, 160, 160))
    plan = make_plan(
        fp, Budget(memory_bytes=8 * GIB, minutes=60, device="cuda", step_seconds=0.2), spatial_dims=3
    )
    options = plan.model["options"]
    assert "strides" in options and options["strides"][1] == [1, 2, 2]
    model = models.build(plan.model["name"], **options)
    assert all(p % m == 0 for p, m in zip(plan.patch_size, model.size_multiples, strict=True))


def test_batch_size_grows_with_memory() -> None:
    fp = _fingerprint(n_voxels_total=10**12)  # no 5 % cap
    batches = [
        make_plan(fp, Budget(memory_bytes=gib * GIB, minutes=60, device="cuda", step_seconds=0.1)).batch_size
        for gib in (1, 2, 4)
    ]
    assert batches[0] < batches[1] < batches[2]
    plan = make_plan(fp, Budget(memory_bytes=2 * GIB, minutes=60, device="cuda", step_seconds=0.1))
    assert plan.estimated_memory_bytes <= 0.8 * 2 * GIB
    topology = topology_rule([256.0, 256.0], [1.0, 1.0]).value
    next_batch = Network(plan.patch_size, topology, 32, plan.batch_size + 1, 1, 1).memory_bytes("cuda")
    assert next_batch > 0.8 * 2 * GIB  # the largest batch that fits


def test_batch_is_capped_at_5_percent_of_the_data_set() -> None:
    fp = _fingerprint(n_voxels_total=40 * 256 * 256)  # 5 % is 2 images
    plan = make_plan(fp, Budget(memory_bytes=64 * GIB, minutes=60, device="cuda", step_seconds=0.1))
    assert plan.batch_size == 2 and "5 %" in plan.reasons["batch_size"]


def test_steps_are_the_budget_over_the_step_time() -> None:
    budget = Budget(memory_bytes=8 * GIB, minutes=15, device="cuda", step_seconds=0.25, validation_share=0.1)
    plan = make_plan(_fingerprint(), budget)
    assert plan.total_steps == int(15 * 60 * 0.9 / 0.25) == 3240
    assert plan.step_seconds == 0.25
    assert plan.scheduler == {"name": "budget", "budget_seconds": 810.0, "shape": "poly", "power": 0.9}


def test_estimated_step_time_is_flops_over_throughput() -> None:
    budget = Budget(memory_bytes=8 * GIB, minutes=600, device="cuda", flops_per_second=1e13)
    plan = make_plan(_fingerprint(), budget)
    features = plan.model["options"]["features"]
    blocks = plan.model["options"]["blocks"]
    assert blocks == planned_blocks(len(features)) and blocks[0] == 0  # the stem alone at full size
    flops = training_cost(plan.patch_size, plan.batch_size, 1, 1, features, blocks).flops
    assert plan.step_seconds == pytest.approx(flops / 1e13)
    assert plan.total_steps == int(600 * 60 * 0.9 / plan.step_seconds)


def test_slow_device_trades_resolution_and_batch_for_steps() -> None:
    fast = make_plan(_fingerprint(), Budget(memory_bytes=8 * GIB, minutes=15, device="cuda"))
    slow = make_plan(_fingerprint(), Budget(memory_bytes=8 * GIB, minutes=15, device="cpu", min_steps=2000))
    assert fast.patch_size == [256, 256] and fast.target_spacing == [1.0, 1.0]
    assert slow.patch_size[0] < 256 and slow.target_spacing[0] > 1.0
    assert "in-plane spacing" in slow.reasons["target_spacing"]
    # narrower first (down to 8 channels), then coarser
    assert slow.model["options"]["features"][0] == 8 and fast.model["options"]["features"][0] == 32
    assert "narrower" in slow.reasons["model"]


def test_cpu_width_halves_before_the_resolution_does() -> None:
    budget = Budget(memory_bytes=8 * GIB, minutes=15, device="cpu", min_steps=300)
    plan = make_plan(_fingerprint(), budget)
    # 16 channels at 256² buy < 300 steps, 8 channels do: full resolution is kept
    assert plan.model["options"]["features"][0] == 8 and plan.patch_size == [256, 256]
    assert plan.total_steps >= 300


def test_3d_falls_back_to_2d_when_the_budget_buys_too_few_3d_steps() -> None:
    fp = _volume_fingerprint((1.0, 1.0, 1.0), (32, 256, 256))
    short = make_plan(fp, Budget(memory_bytes=16 * GIB, minutes=15, device="cpu"))
    assert short.spatial_dims == 2 and "2D" in short.reasons["spatial_dims"]
    assert "steps worth training" in short.reasons["spatial_dims"]
    fast = make_plan(fp, Budget(memory_bytes=16 * GIB, minutes=600, device="cuda", step_seconds=0.2))
    assert fast.spatial_dims == 3


def test_plan_to_config_carries_out_the_plan(tmp_path: Path) -> None:
    plan = make_plan(_fingerprint(n_channels=1), Budget(memory_bytes=4 * GIB, minutes=10, device="cpu"))
    plan.data = {"source": "phantom", "options": {"n_patients": 4}, "split": {"seed": 3}}
    cfg = plan_to_config(plan, tmp_path / "run", minutes=2.0, device="cpu", seed=5)
    assert cfg.data.source == "phantom" and cfg.data.options == {"n_patients": 4}
    assert cfg.data.split.seed == 3 and cfg.data.image_size == plan.patch_size
    assert cfg.data.foreground_share == pytest.approx(1 / 3) and cfg.data.in_channels == 1
    assert cfg.model.name == "resenc_unet" and "in_channels" not in cfg.model.options
    # a 10-minute CPU budget buys few steps: AdamW (the optimizer rule)
    assert cfg.optim.name == "adamw" and cfg.optim.lr == 3e-3 and cfg.optim.options == {}
    assert cfg.optim.scheduler == "budget" and cfg.train.max_time_minutes == 2.0
    long = make_plan(
        _fingerprint(), Budget(memory_bytes=4 * GIB, minutes=600, device="cuda", step_seconds=0.1)
    )
    long.data = plan.data
    sgd = plan_to_config(long, tmp_path / "long")
    assert sgd.optim.name == "sgd" and sgd.optim.options == {"momentum": 0.99, "nesterov": True}
    assert cfg.train.checkpoint_selection == "ema" and cfg.train.augment_on == "device"
    assert cfg.train.seed == 5 and cfg.train.batch_size == plan.batch_size
    assert cfg.loss.options == {"batch_dice": True}
    models.build_from_config(cfg)  # the planned model builds from the config
    with pytest.raises(ConfigError, match="names no data source"):
        plan_to_config(replace(plan, data={}), tmp_path)
    assert cfg.data.intensity == "zscore"
    assert cfg.inference.tta_flips is True
    ct = replace(plan, normalization=[{"scheme": "ct", "clip": [-100.0, 300.0], "mean": 40.0, "std": 10.0}])
    assert plan_to_config(ct, tmp_path).data.intensity == [
        {"clip": [-100.0, 300.0], "mean": 40.0, "std": 10.0}
    ]
    mixed = replace(plan, normalization=[*ct.normalization, {"scheme": "zscore_per_image"}])
    with pytest.raises(ConfigError, match="one scheme"):
        plan_to_config(mixed, tmp_path)


def test_anisotropic_volumes_plan_2d_in_plane() -> None:
    fp = _volume_fingerprint((5.0, 0.8, 0.8), (24, 320, 320))
    plan = make_plan(fp, Budget(memory_bytes=16 * GIB, minutes=60, device="cuda", step_seconds=0.1))
    assert plan.spatial_dims == 2 and plan.target_spacing == [0.8, 0.8]
    assert plan.patch_size == [320, 320] and plan.model["options"]["spatial_dims"] == 2


def test_3d_patch_shrinks_to_fit_batch_2() -> None:
    fp = _volume_fingerprint((1.0, 1.0, 1.0), (256, 256, 256))
    small = make_plan(fp, Budget(memory_bytes=4 * GIB, minutes=60, device="cuda", step_seconds=1.0))
    large = make_plan(fp, Budget(memory_bytes=80 * GIB, minutes=60, device="cuda", step_seconds=1.0))
    assert small.spatial_dims == 3
    assert np.prod(small.patch_size) < np.prod(large.patch_size)
    assert small.estimated_memory_bytes <= 0.8 * 4 * GIB
    divisor = 2 ** (len(small.model["options"]["features"]) - 1)
    assert all(p % divisor == 0 for p in small.patch_size)


def test_memory_too_small_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not fit batch 2"):
        make_plan(_fingerprint(), Budget(memory_bytes=1024, minutes=1))


def test_every_decision_has_a_reason_and_the_model_builds() -> None:
    plan = make_plan(
        _fingerprint(), Budget(memory_bytes=4 * GIB, minutes=20, device="cuda", step_seconds=0.1)
    )  # 10,800 steps: nnU-Net's SGD
    assert set(plan.reasons) >= {
        "spatial_dims", "target_spacing", "normalization", "patch_size", "batch_size", "network_depth",
        "model", "total_steps", "optimizer", "scheduler", "foreground_share",
    }  # fmt: skip
    assert plan.foreground_share == pytest.approx(1 / 3)
    assert plan.optimizer == {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.99,
        "nesterov": True,
        "weight_decay": 3e-5,
    }
    model = models.build(plan.model["name"], **plan.model["options"])
    assert model.size_multiple == 2 ** (len(default_features(len(plan.model["options"]["features"]))) - 1)


def test_plan_from_a_real_fingerprint_and_yaml_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        mask = np.zeros((48, 40), np.uint8)
        mask[10:20, 12:30] = i % 2
        samples.append(
            Sample(rng.normal(size=(1, 48, 40)).astype(np.float32), {"e": mask}, "e", (0.5, 0.5), f"c{i}")
        )
    plan = make_plan(compute_fingerprint(samples), Budget(memory_bytes=GIB, minutes=5, step_seconds=0.05))
    assert plan.patch_size == [48, 40] and plan.spatial_dims == 2
    path = write_plan(plan, tmp_path / "out" / "plan.yaml")
    text = path.read_text()
    assert text.startswith("# medseg plan") and "reasons:" in text
    assert load_plan(path) == plan
    path.write_text(re.sub(r"(?m)^batch_size: \d+$", "batch_size: 7", text))
    assert load_plan(path).batch_size == 7


def test_load_plan_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="plan file not found"):
        load_plan(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("batch_size: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_plan(bad)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="a plan is a mapping"):
        load_plan(bad)
    bad.write_text("batch_size: 2\ncolour: red\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: plan keys wrong: unknown \['colour'\]"):
        load_plan(bad)
    assert Plan.from_dict(make_plan(_fingerprint(), Budget(GIB, 1, "cuda", 0.1)).to_dict()).batch_size >= 2


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("total_steps", "many", "total_steps must be a positive integer"),
        ("patch_size", [64, 64, 64], "patch_size needs 2 values"),
        ("patch_size", [64, -1], "positive integers"),
        ("spatial_dims", 4, "spatial_dims must be 2 or 3"),
        ("normalization", [{"scheme": "minmax"}], "normalization schemes must be among"),
        ("foreground_share", 1.5, "foreground_share"),
    ],
)
def test_an_edited_plan_with_bad_values_names_the_file(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    plan = make_plan(_fingerprint(), Budget(GIB, 1, "cuda", 0.1))
    path = write_plan(plan, tmp_path / "plan.yaml")
    data = yaml.safe_load(path.read_text())
    data[key] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=f"plan.yaml: .*{message}"):
        load_plan(path)


def test_budget_validation() -> None:
    with pytest.raises(ConfigError, match="device"):
        Budget(memory_bytes=GIB, minutes=1, device="tpu")
    with pytest.raises(ConfigError, match="positive"):
        Budget(memory_bytes=GIB, minutes=0)
    with pytest.raises(ConfigError, match="validation_share"):
        Budget(memory_bytes=GIB, minutes=1, validation_share=1.0)


def test_a_3d_plan_config_crops_and_resamples_to_the_planned_spacing(tmp_path: Path) -> None:
    fp = _volume_fingerprint((1.0, 1.0, 1.0), (32, 64, 64))
    plan = make_plan(fp, Budget(memory_bytes=16 * GIB, minutes=60, device="cuda", step_seconds=0.2))
    plan.data = {"source": "phantom"}
    assert plan.spatial_dims == 3
    cfg = plan_to_config(plan, tmp_path)
    assert cfg.data.target_spacing == plan.target_spacing and cfg.data.crop_nonzero is True
    flat = make_plan(_fingerprint(n_channels=1), Budget(memory_bytes=4 * GIB, minutes=10, device="cpu"))
    flat.data = {"source": "phantom"}
    two_d = plan_to_config(flat, tmp_path)
    assert two_d.data.target_spacing is None and two_d.data.crop_nonzero is False
