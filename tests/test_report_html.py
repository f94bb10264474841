"""The HTML report (``medseg report``): embedded data, provenance, stats, compare mode, determinism."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from rich.console import Console
from scipy.stats import wilcoxon
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.config import Config, EvalConfig
from medseg.errors import DataError
from medseg.metrics import compute_segmentation_metrics
from medseg.provenance import code_provenance
from medseg.report.html import (
    build_report,
    calibration_tables,
    case_reason,
    config_differences,
    distribution_png,
    flatten_config,
    git_commit,
    load_result_dir,
    overlay_png,
    reliability_png,
    report_level,
    select_overlay_cases,
    summarize_metrics,
    training_png,
    uncertainty_png,
    unusable_reason,
)
from medseg.report.slices import (
    CaseSlice,
    case_slice,
    read_case_slices,
    shared_slice_index,
    write_case_slices,
)
from medseg.report.stats import (
    bootstrap_mean_ci,
    describe,
    higher_is_better,
    paired_comparison,
    wilcoxon_p,
    win_tie_loss,
)

STAMP = re.compile(r'<p id="generated" class="muted">Generated [^<]*</p>')


# --- synthetic inputs ---------------------------------------------------------------------------------


def _disk(shape: tuple[int, int], center: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2).astype(np.uint8)


def write_eval_dir(
    out: Path,
    cases: list[str],
    seed: int = 0,
    shift: float = 0.0,
    empty: dict[str, str] | None = None,
    slices: bool = True,
    config: dict | None = None,
    history: bool = False,
) -> Path:
    """An evaluation folder as ``medseg evaluate`` writes it, with real metrics of disk masks.

    ``empty`` maps a case to "gt", "pred" or "both"; ``shift`` moves every prediction (px).
    """
    rng = np.random.default_rng(seed)
    empty = empty or {}
    out.mkdir(parents=True, exist_ok=True)
    rows, items = [], {}
    for i, name in enumerate(cases):
        shape = (32, 40)
        gt = _disk(shape, (16, 20), 6 + i % 5)
        pred = _disk(
            shape, (16 + rng.uniform(-3, 3) + shift, 20 + rng.uniform(-3, 3)), 6 + rng.uniform(-2, 2)
        )
        if empty.get(name) in ("gt", "both"):
            gt[:] = 0
        if empty.get(name) in ("pred", "both"):
            pred[:] = 0
        spacing = (0.8, 0.5)
        image = (rng.normal(size=shape) + 2 * gt).astype(np.float32)
        metrics = compute_segmentation_metrics(pred, gt, spacing)
        rows.append({"level": "image", "case": name, "patient": name, "slice_index": -1, **metrics})
        items[name] = case_slice(image[None], gt, pred, spacing)
    table = pd.DataFrame(rows)
    patients = table.copy()
    patients["level"] = "patient"
    pd.concat([patients, table]).to_csv(out / "metrics.csv", index=False, float_format="%.6f")
    (out / "summary.json").write_text(
        json.dumps({"hd95_mode": "pooled", "nsd_tolerance_mm": 1.0, "threshold": 0.5})
    )
    if slices:
        write_case_slices(items, out / "case_slices.npz")
    if config is not None:
        (out / "config.yaml").write_text(yaml.safe_dump(config))
    if history:
        pd.DataFrame(
            {
                "epoch": [1, 2, 3],
                "train_loss": [0.9, 0.6, 0.4],
                "val_loss": [0.95, 0.7, 0.5],
                "val_dice": [0.2, 0.5, 0.7],
                "lr": [1e-3, 5e-4, 1e-4],
                "epoch_time_s": [2.0, 1.5, 1.6],
                "elapsed_s": [2.0, 3.5, 5.1],
            }
        ).to_csv(out / "history.csv", index=False)
    return out


def _json_script(html: str, element_id: str) -> object:
    found = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', html, re.S)
    assert found is not None, element_id
    return json.loads(found.group(1))


def _cases(n: int) -> list[str]:
    return [f"case_{i:03d}" for i in range(n)]


# --- stats --------------------------------------------------------------------------------------------


def test_describe_by_hand() -> None:
    d = describe([1.0, 2.0, 3.0, 4.0, np.nan, np.inf])
    assert d["n"] == 4 and d["mean"] == 2.5 and d["median"] == 2.5
    assert d["sd"] == pytest.approx(np.sqrt(5 / 3))
    assert (d["q1"], d["q3"]) == (1.75, 3.25)  # linear interpolation: 1 + 0.75, 1 + 2.25
    assert d["p5"] == pytest.approx(1.15) and d["p95"] == pytest.approx(3.85)
    assert describe([])["n"] == 0 and np.isnan(describe([])["mean"])
    assert describe([7.0])["sd"] == 0.0


def test_wilcoxon_p_matches_the_exact_distribution_by_hand() -> None:
    # |d| ranks 1..5, W- = 3: subsets of {1..5} with sum <= 3 are {}, {1}, {2}, {3}, {1,2}: 5 of 32,
    # so the two-sided exact p is 2 * 5 / 32
    d = [1.0, 2.0, -3.0, 4.0, 5.0]
    assert wilcoxon_p(d) == pytest.approx(10 / 32)
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue)
    assert wilcoxon_p([0.0, 0.0]) == 1.0
    with pytest.raises(ValueError, match="no differences"):
        wilcoxon_p([])


def test_bootstrap_ci_is_seeded_and_matches_a_manual_resample() -> None:
    values = np.array([0.1, 0.4, 0.35, 0.8, 0.5])
    rng = np.random.default_rng(3)
    means = values[rng.integers(0, 5, size=(500, 5))].mean(axis=1)
    assert bootstrap_mean_ci(values, n_boot=500, seed=3) == tuple(np.quantile(means, [0.025, 0.975]))
    assert bootstrap_mean_ci(values, seed=1) == bootstrap_mean_ci(values, seed=1)
    assert bootstrap_mean_ci(values, seed=1) != bootstrap_mean_ci(values, seed=2)
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_mean_ci([1.0, np.nan])


def test_win_tie_loss_and_direction() -> None:
    delta = [0.0005, 0.002, -0.01, 0.001, -0.0009]
    assert win_tie_loss(delta, tie_tolerance=1e-3) == (1, 3, 1)
    assert win_tie_loss(delta, tie_tolerance=1e-3, higher_better=False) == (1, 3, 1)
    assert win_tie_loss([0.5, 0.5, -0.5], 0.0, higher_better=False) == (1, 0, 2)
    assert higher_is_better("dice") and not higher_is_better("hd95_mm")
    with pytest.raises(ValueError, match="tie_tolerance"):
        win_tie_loss([0.1], -1.0)


def test_paired_comparison_fields() -> None:
    a = np.array([0.5, 0.6, 0.7, 0.8, np.nan])
    b = np.array([0.6, 0.6, 0.9, 0.7, 0.9])
    result = paired_comparison(a, b, "dice", tie_tolerance=1e-3, seed=0)
    assert result.n == 4 and result.mean_delta == pytest.approx(0.05)
    assert (result.wins, result.ties, result.losses) == (2, 1, 1)
    assert result.ci_low <= result.mean_delta <= result.ci_high
    assert result.wilcoxon_p == pytest.approx(wilcoxon([0.1, 0.2, -0.1]).pvalue)
    hd = paired_comparison([5.0, 6.0], [4.0, 7.0], "hd95_mm", tie_tolerance=0.0)
    assert (hd.wins, hd.losses) == (1, 1) and not hd.higher_is_better
    with pytest.raises(ValueError, match="length"):
        paired_comparison([1.0], [1.0, 2.0])


# --- usable values ------------------------------------------------------------------------------------


def test_unusable_reasons_follow_the_empty_mask_policy() -> None:
    both = {
        "case": "a",
        "dice": 1.0,
        "hd95_mm": 0.0,
        "specificity": 1.0,
        "empty_gt": True,
        "empty_pred": True,
    }
    gt = {
        "case": "b",
        "dice": 0.0,
        "hd95_mm": 50.0,
        "sensitivity": 1.0,
        "empty_gt": True,
        "empty_pred": False,
    }
    pred = {
        "case": "c",
        "dice": 0.0,
        "hd95_mm": 50.0,
        "sensitivity": 0.0,
        "empty_gt": False,
        "empty_pred": True,
    }
    missing = {"case": "d", "dice": 0.0, "empty_gt": False, "empty_pred": True, "missing_pred": True}
    fine = {"case": "e", "dice": 0.9, "hd95_mm": float("nan"), "empty_gt": "False", "empty_pred": "False"}
    assert unusable_reason(both, "dice") == "both empty" and unusable_reason(both, "specificity") is None
    assert unusable_reason(gt, "dice") is None and unusable_reason(gt, "hd95_mm") == "empty GT"
    assert unusable_reason(gt, "sensitivity") == "empty GT"
    assert unusable_reason(pred, "dice") is None and unusable_reason(pred, "hd95_mm") == "empty prediction"
    assert unusable_reason(pred, "sensitivity") is None
    assert unusable_reason(missing, "dice") == "missing prediction"
    assert unusable_reason(fine, "dice") is None and unusable_reason(fine, "hd95_mm") == "no value"
    assert [case_reason(r) for r in (both, gt, pred, missing, fine)] == [
        "both empty",
        "empty GT",
        "empty prediction",
        "missing prediction",
        "no value",
    ]


def test_summarize_metrics_leaves_out_policy_values() -> None:
    table = pd.DataFrame(
        {
            "case": ["a", "b", "c"],
            "dice": [0.5, 0.7, 1.0],
            "hd95_mm": [3.0, 5.0, 0.0],
            "empty_gt": [False, False, True],
            "empty_pred": [False, False, True],
        }
    )
    by_metric = {m["metric"]: m for m in summarize_metrics(table)}
    assert by_metric["dice"]["n"] == 2 and by_metric["dice"]["mean"] == pytest.approx(0.6)
    assert by_metric["dice"]["excluded"] == [("c", "both empty")] and by_metric["dice"]["n_total"] == 3
    assert by_metric["hd95_mm"]["median"] == 4.0


# --- case slices --------------------------------------------------------------------------------------


def test_case_slice_picks_the_slice_with_most_error_and_round_trips(tmp_path: Path) -> None:
    gt = np.zeros((4, 8, 8), np.uint8)
    pred = np.zeros_like(gt)
    gt[1, 2:6, 2:6] = 1  # slice 1: largest GT, no error
    pred[1, 2:6, 2:6] = 1
    gt[2, 3:5, 3:5] = 1  # slice 2: 4 missed pixels
    pred[3, 0:3, 0:3] = 1  # slice 3: 9 false positives: the most error
    image = np.random.default_rng(0).normal(size=(1, 4, 8, 8))
    item = case_slice(image, gt, pred, (3.0, 0.5, 0.7))
    assert item.slice_index == 3 and item.spacing == (0.5, 0.7) and item.pred.sum() == 9
    assert item.image.dtype == np.uint8 and item.image.shape == (8, 8) and item.has_image
    # no error: the largest ground truth; nothing at all: the middle slice
    assert case_slice(None, gt, gt, (1, 1, 1)).slice_index == 1
    assert case_slice(None, np.zeros_like(gt), np.zeros_like(gt), (1, 1, 1)).slice_index == 2
    flat = case_slice(None, gt[1], pred[1], (1.0, 2.0))
    assert flat.slice_index == -1 and not flat.has_image and flat.image.max() == 0
    path = write_case_slices({"vol#1": item, "b/2": flat}, tmp_path / "case_slices.npz")
    back = read_case_slices(path)
    assert sorted(back) == ["b/2", "vol#1"]
    assert np.array_equal(back["vol#1"].pred, item.pred) and back["vol#1"].slice_index == 3
    assert back["b/2"].spacing == (1.0, 2.0) and not back["b/2"].has_image
    with pytest.raises(ValueError, match="spacing"):
        case_slice(None, gt, pred, (1.0, 1.0))
    np.savez(tmp_path / "bad.npz", x=np.zeros(1))
    with pytest.raises(DataError, match="bad.npz"):
        read_case_slices(tmp_path / "bad.npz")


def test_volumes_keep_a_shared_slice_that_depends_on_the_ground_truth_alone(tmp_path: Path) -> None:
    gt = np.zeros((4, 8, 8), np.uint8)
    gt[1, 2:6, 2:6] = 1  # the largest ground truth: the shared slice of every run
    gt[2, 3:5, 3:5] = 1
    run_a, run_b = gt.copy(), gt.copy()
    run_a[3, 0:3, 0:3] = 1  # run a errs most on slice 3, run b on slice 2
    run_b[2] = 0
    a, b = case_slice(None, gt, run_a, (1, 1, 1)), case_slice(None, gt, run_b, (1, 1, 1))
    assert (a.slice_index, b.slice_index) == (3, 2)
    assert a.shared_view().slice_index == b.shared_view().slice_index == shared_slice_index(gt) == 1
    assert np.array_equal(a.shared.gt, gt[1]) and np.array_equal(b.shared.pred, run_b[1])
    assert shared_slice_index(np.zeros_like(gt)) == 2  # no ground truth: the middle slice
    flat = case_slice(None, gt[1], gt[1], (1.0, 1.0))
    assert flat.shared is None and flat.shared_view() is flat
    back = read_case_slices(write_case_slices({"v": a, "f": flat}, tmp_path / "s.npz"))
    assert back["v"].shared.slice_index == 1 and np.array_equal(back["v"].shared.pred, run_a[1])
    assert back["f"].shared is None
    # an older file without the shared arrays still reads
    with np.load(tmp_path / "s.npz") as data:
        old = {k: data[k] for k in data.files if not k.startswith("shared")}
    np.savez(tmp_path / "old.npz", **old)
    assert read_case_slices(tmp_path / "old.npz")["v"].shared is None


def test_evaluate_files_writes_mask_only_slices_and_flags_missing_predictions(tmp_path: Path) -> None:
    from medseg.engine.evaluate import evaluate_files, write_evaluation

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name, radius in (("a", 5), ("b", 7)):
        Image.fromarray(_disk((24, 24), (12, 12), radius) * 255).save(tmp_path / "gt" / f"{name}.png")
    Image.fromarray(_disk((24, 24), (11, 12), 5) * 255).save(tmp_path / "pred" / "a.png")
    result = evaluate_files(tmp_path / "pred", tmp_path / "gt", EvalConfig(), spacing=(0.5, 0.5))
    write_evaluation(result, tmp_path / "eval")
    slices = read_case_slices(tmp_path / "eval" / "case_slices.npz")
    assert sorted(slices) == ["a", "b"] and not slices["a"].has_image
    assert slices["b"].pred.sum() == 0 and slices["b"].gt.sum() > 0
    html = build_report([tmp_path / "eval"], tmp_path / "r.html", timestamp="t").read_text()
    assert "missing prediction" in html and "no image: masks only" in html


def test_evaluate_model_stores_the_most_error_slice_per_volume() -> None:
    import torch

    from medseg.config import load_config
    from medseg.data.sample import Sample
    from medseg.engine.evaluate import evaluate_model
    from medseg.engine.predict import build_model_from_config

    cfg = load_config(None, ["model.options={features: [4, 8]}"])
    model = build_model_from_config(cfg).eval()
    gt = np.zeros((3, 16, 16), np.uint8)
    gt[1, 4:12, 4:12] = 1
    volume = Sample(np.random.rand(1, 3, 16, 16), {"expert": gt}, "expert", (2.0, 0.5, 0.5), "pat")
    result, predictions = evaluate_model(
        model, [volume], (16, 16), "zscore", EvalConfig(), torch.device("cpu"), progress=False
    )
    item = result.case_slices["pat"]
    errors = (predictions["pat"].astype(bool) ^ gt.astype(bool)).reshape(3, -1).sum(1)
    assert item.slice_index == int(np.argmax(errors)) and item.spacing == (0.5, 0.5)


# --- figures ------------------------------------------------------------------------------------------


def test_overlay_png_keeps_the_physical_aspect_and_draws_both_contours() -> None:
    gt = _disk((20, 40), (10, 15), 6)
    pred = _disk((20, 40), (10, 22), 6)
    item = CaseSlice(np.full((20, 40), 90, np.uint8), gt, pred, (1.0, 0.25))  # 20 mm × 10 mm
    with Image.open(io.BytesIO(overlay_png(item, size=100))) as image:
        assert image.size == (50, 100)  # (width, height): the taller physical side is 100 px
        rgb = np.asarray(image.convert("RGB")).reshape(-1, 3)
    colours = {tuple(int(v) for v in c) for c in rgb}
    assert (0x56, 0xB4, 0xE9) in colours and (0xD5, 0x5E, 0x00) in colours
    # an RGB image (three channels, e.g. LGG's pre-contrast, FLAIR, post-contrast) keeps exact contours
    channels = np.random.default_rng(0).normal(size=(3, 20, 40))
    colour = case_slice(channels, gt, pred, (1.0, 0.25))
    assert colour.image.shape == (20, 40, 3)
    with Image.open(io.BytesIO(overlay_png(colour, size=100))) as image:
        assert image.mode == "P"
        rgb = {tuple(int(v) for v in c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)}
    assert {(0x56, 0xB4, 0xE9), (0xD5, 0x5E, 0x00)} <= rgb and len(rgb) > 50


def test_figure_helpers_return_png_bytes() -> None:
    table = pd.DataFrame({"case": ["a", "b"], "dice": [0.4, 0.8], "hd95_mm": [3.0, 1.0]})
    history = pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.0, 0.5],
            "val_loss": [1.1, 0.6],
            "val_dice": [0.3, 0.6],
            "lr": [1e-3, 1e-5],
            "epoch_time_s": [1.0, 1.1],
        }
    )
    reliability = pd.DataFrame(
        {
            "region": ["whole", "whole"],
            "bin": [0, 1],
            "lower": [0.5, 0.75],
            "upper": [0.75, 1.0],
            "count": [10, 90],
            "mean_confidence": [0.6, 0.9],
            "accuracy": [0.55, 0.92],
        }
    )
    calib = pd.DataFrame({"case": ["a", "b"], "dice": [0.4, 0.8], "mean_entropy_region": [0.3, 0.1]})
    for png in (
        distribution_png({"run": table}, ["dice", "hd95_mm"]),
        training_png({"run": history}),
        reliability_png(reliability),
        uncertainty_png(calib),
    ):
        assert png.startswith(b"\x89PNG") and b"Software" not in png


def test_select_overlay_cases_worst_median_best() -> None:
    table = pd.DataFrame({"case": [f"c{i}" for i in range(10)], "dice": np.linspace(0.0, 0.9, 10)[::-1]})
    chosen = select_overlay_cases(table, n_worst=2, n_median=2, n_best=1)
    assert chosen == {"c9": "worst", "c8": "worst", "c5": "median", "c4": "median", "c0": "best"}
    assert list(select_overlay_cases(table, 5, 2, 0).values()) == ["worst"] * 5 + ["median"]
    assert len(select_overlay_cases(table, 20, 5, 5)) == 10  # no repeats
    with pytest.raises(ValueError, match="n_worst"):
        select_overlay_cases(table, -1)


# --- the report ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A run folder of 40 cases (two with empty masks, config, history, best.pt) and its report."""
    tmp = tmp_path_factory.mktemp("single")
    config = Config().to_dict()
    config["train"]["epochs"] = 7
    config["train"]["seed"] = 11
    config["data"]["source"] = "lgg"
    empty = {"case_003": "both", "case_007": "pred", "case_002": "gt"}
    run = write_eval_dir(tmp / "run", _cases(40), empty=empty, config=config, history=True)
    (run / "best.pt").write_bytes(b"weights")
    html = build_report([run], tmp / "report.html", timestamp="t", command="medseg report run").read_text()
    return run, html


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    """Two folders sharing 8 cases (each has cases the other lacks), reported twice."""
    tmp = tmp_path_factory.mktemp("paired")
    a = write_eval_dir(tmp / "a", _cases(10), config={"optim": {"lr": 0.001}}, history=True)
    b = write_eval_dir(
        tmp / "b", [*_cases(10)[2:], "extra"], seed=1, shift=1.5, config={"optim": {"lr": 0.01}}
    )
    first = build_report([a, b], tmp / "first.html", n_compare=3, command="medseg report x").read_text()
    second = build_report(
        [a, b],
        tmp / "second.html",
        n_compare=3,
        command="medseg report x",
        timestamp="2000-01-01 00:00:00 UTC",
    ).read_text()
    return a, b, first, second


def test_report_embeds_the_csv_and_nothing_from_the_network(single: tuple[Path, str]) -> None:
    run, html = single
    embedded = pd.DataFrame(_json_script(html, "cases-data"))
    csv = pd.read_csv(run / "metrics.csv")
    csv = csv[csv["level"] == "image"]
    expected = csv.sort_values(["dice", "case"], kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(embedded[list(csv.columns)], expected, check_dtype=False)
    assert embedded["dice"].is_monotonic_increasing  # worst first
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http" not in re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    # 20 worst + 5 median (ranks 19-23, two of them among the worst) + 5 best overlays, each the
    # target of its table row
    anchors = {k: v["anchor"] for k, v in _json_script(html, "cases-extra").items() if v["anchor"]}
    assert len(anchors) == 28 and all(f'id="{a}"' in html for a in anchors.values())
    assert html.count("<img ") == 30  # overlays, distributions, training curves
    notes = {k: v["note"] for k, v in _json_script(html, "cases-extra").items()}
    assert notes["case_003"] == "both empty" and notes["case_007"] == "empty prediction"
    assert notes["case_002"] == "empty GT" and notes["case_010"] == ""
    assert "HD95 is in mm" in html and "tolerance of 1 mm" in html


def test_report_summary_numbers_match_describe(single: tuple[Path, str]) -> None:
    run, html = single
    table = pd.read_csv(run / "metrics.csv").query("level == 'image'")
    usable = table[~table["case"].isin(["case_002", "case_003", "case_007"])]["hd95_mm"]
    d = describe(usable)
    assert f"{d['mean']:.2f} ± {d['sd']:.2f}" in html and "37 / 40" in html
    assert f"{d['median']:.2f} [{d['q1']:.2f}, {d['q3']:.2f}]" in html
    assert f"{d['p5']:.2f} / {d['p95']:.2f}" in html
    assert "<tr><td>case_003</td><td>both empty</td>" in html


def test_report_is_deterministic_apart_from_the_timestamp(paired: tuple[Path, Path, str, str]) -> None:
    *_, first, second = paired
    assert first != second
    assert len(STAMP.findall(first)) == 1
    assert STAMP.sub("", first) == STAMP.sub("", second)
    diff = [(a, b) for a, b in zip(first.splitlines(), second.splitlines(), strict=True) if a != b]
    assert len(diff) == 1 and "Generated" in diff[0][0]


def test_run_dir_provenance_config_diff_and_training_curves(single: tuple[Path, str], tmp_path: Path) -> None:
    import hashlib

    _, html = single
    assert hashlib.sha256(b"weights").hexdigest() in html
    assert "train.epochs" in html and "medseg report run" in html and 'id="training"' in html
    assert re.search(r"<th>seed</th><td class=\"mono\">11</td>", html)
    config = Config().to_dict()
    config["train"]["epochs"] = 7
    config["data"]["options"] = {"root": "x"}
    rows = config_differences(config)
    assert [r["key"] for r in rows] == ["data.options", "train.epochs"]
    assert rows[1] == {"key": "train.epochs", "value": "7", "default": "20"}
    assert config_differences({"train": {"epochs": 3}, "bogus": 1})[0]["default"] == "(not a medseg key)"
    assert flatten_config({"a": {"b": 1, "options": {"x": 2}}}) == {"a.b": 1, "a.options": {"x": 2}}
    commit = git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit)
    assert git_commit(tmp_path) is None  # not a checkout


def test_compare_mode_pairs_cases_and_lists_the_unshared(paired: tuple[Path, Path, str, str]) -> None:
    a, b, html, _ = paired
    rows = _json_script(html, "paired-data")
    assert len(rows) == 8
    ta = pd.read_csv(a / "metrics.csv").query("level == 'image'").set_index("case")
    tb = pd.read_csv(b / "metrics.csv").query("level == 'image'").set_index("case")
    shared = _cases(10)[2:]
    for row in rows:
        assert row["dice:1"] - row["dice:0"] == pytest.approx(row["d_dice:1"])
    expected = paired_comparison(ta.loc[shared, "dice"], tb.loc[shared, "dice"], "dice")
    assert f"{expected.mean_delta:+.4f}" in html and f"{expected.wilcoxon_p:.3g}" in html
    assert f"[{expected.ci_low:+.4f}, {expected.ci_high:+.4f}]" in html
    assert f"{expected.wins} / {expected.ties} / {expected.losses}" in html
    for case, where, missing in (("case_000", "a", "b"), ("case_001", "a", "b"), ("extra", "b", "a")):
        assert f"<tr><td>{case}</td><td>{where}</td><td>{missing}</td></tr>" in html  # listed, not dropped
    assert re.search(r'optim\.lr</td><td class="mono">0\.001</td><td class="mono">0\.01</td>', html)
    anchors = [v["anchor"] for v in _json_script(html, "paired-extra").values() if v["anchor"]]
    assert len(anchors) == 3 and all(f'id="{x}"' in html for x in anchors)
    assert html.count('<figure id="cmp-') == 3


def test_compare_mode_needs_shared_cases(tmp_path: Path) -> None:
    a = write_eval_dir(tmp_path / "a", ["x"], slices=False)
    with pytest.raises(DataError, match="share no case"):
        build_report([a, write_eval_dir(tmp_path / "c", ["zzz"], slices=False)], tmp_path / "x.html")


def test_calibration_files_render_when_present(tmp_path: Path) -> None:
    run = write_eval_dir(tmp_path / "run", _cases(5), slices=False)
    plain = build_report([run], tmp_path / "plain.html", timestamp="t").read_text()
    assert 'id="calibration"' not in plain and "case_slices.npz does not exist" in plain
    bins = np.arange(4)
    reliability = pd.concat(
        pd.DataFrame(
            {
                "region": region,
                "bin": bins,
                "lower": bins / 4,
                "upper": (bins + 1) / 4,
                "count": [5, 10, 20, 200],
                "mean_confidence": (bins + 0.5) / 4,
                "accuracy": (bins + 0.4) / 4,
            }
        )
        for region in ("whole", "region")
    )
    reliability.to_csv(run / "reliability.csv", index=False)
    pd.DataFrame(
        {
            "case": _cases(5),
            "dice": np.linspace(0.3, 0.9, 5),
            "mean_entropy_whole": 0.1,
            "mean_entropy_region": np.linspace(0.5, 0.1, 5),
        }
    ).to_csv(run / "calibration_cases.csv", index=False)
    (run / "calibration.json").write_text(
        json.dumps({"pooled": {"ece_whole": 0.0123}, "mean_of_cases": {"nll_region": 0.5}, "n_bins": 4})
    )
    html = build_report([run], tmp_path / "cal.html", timestamp="t").read_text()
    assert 'id="calibration"' in html and "0.0123" in html and "0.5000" in html and "n_bins" in html
    assert html.count("<img ") == 3  # distributions, reliability, scatter
    (run / "calibration_cases.csv").write_text("case,dice\na,0.5\n")
    with pytest.raises(DataError, match="calibration_cases.csv"):
        build_report([run], tmp_path / "bad.html")


def test_calibration_tables_grid_and_remaining_keys() -> None:
    tables = calibration_tables(
        {
            "pooled": {"ece_whole": 0.1, "ece_region": 0.2, "n_voxels_whole": 9},
            "mean_of_cases": {"ece_whole": 0.15, "brier_region": 0.05},
            "spearman_rho": -0.5,
        }
    )
    assert tables["grid"] == [
        {"metric": "ECE", "cells": ["0.1000", "0.2000", "0.1500", "—"]},
        {"metric": "Brier", "cells": ["—", "—", "—", "0.0500"]},
    ]
    assert [row["key"] for row in tables["summary"]] == ["pooled.n_voxels_whole", "spearman_rho"]
    assert calibration_tables({}) == {"grid": [], "summary": []}


def test_load_result_dir_levels_and_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        load_result_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metrics.csv"):
        load_result_dir(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.csv").write_text("case,score\na,1\n")
    with pytest.raises(DataError, match="missing column"):
        load_result_dir(tmp_path / "bad")
    assert report_level(pd.DataFrame({"level": ["patient", "slice"]})) == "patient"
    assert report_level(pd.DataFrame({"level": ["patient", "image"]})) == "image"
    assert report_level(pd.DataFrame({"case": ["a"]})) is None
    run = write_eval_dir(tmp_path / "run", _cases(3))
    assert load_result_dir(run).level == "image" and load_result_dir(run, level="patient").level == "patient"
    with pytest.raises(DataError, match="no rows of level"):
        load_result_dir(run, level="slice")
    with pytest.raises(DataError, match="no run or evaluation"):
        build_report([], tmp_path / "x.html")


def test_cli_report(tmp_path: Path) -> None:
    a = write_eval_dir(tmp_path / "a", _cases(6))
    b = write_eval_dir(tmp_path / "b", _cases(6), seed=2)
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "report",
            str(a),
            "--compare",
            str(b),
            "-o",
            str(tmp_path / "r.html"),
            "--worst",
            "2",
            "--median",
            "1",
            "--best",
            "1",
        ],
    )
    assert done.exit_code == 0, done.output
    html = (tmp_path / "r.html").read_text()
    assert 'id="comparison"' in html and f"medseg report {a}" in html
    assert sum(1 for v in _json_script(html, "cases-extra").values() if v["anchor"]) == 4
    missing = runner.invoke(app, ["report", str(tmp_path / "gone"), "-o", str(tmp_path / "x.html")])
    assert missing.exit_code == 2 and "gone" in missing.output and "not found" in missing.output


def test_summarize_grid_writes_and_links_a_report(tmp_path: Path) -> None:
    from medseg.engine.compare import build_grid, summarize_grid

    tree = {
        "name": "toy",
        "output_dir": str(tmp_path / "grid"),
        "axes": {"loss": {"dice": {"loss.name": "dice"}, "bce": {"loss.name": "bce"}}},
    }
    grid = build_grid(tree)
    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "val_dice": 0.5, "elapsed_s": 6.0}]
    for i, run in enumerate(grid.runs):
        out = write_eval_dir(Path(run.config.output_dir), _cases(4), seed=i)
        summary = {"per_patient": {"n": 4, "dice": {"mean": 0.5, "median": 0.5}, "hd95_mm": {"median": 2.0}}}
        row = {"run": run.name, "best_val_dice": 0.5, "dice_mean": 0.5, "dice_median": 0.5}
        row.update(
            {
                k: 0.0
                for k in (
                    "loss",
                    "optimizer",
                    "lr",
                    "max_epoch",
                    "batch_size",
                    "epochs_run",
                    "convergence_epoch",
                    "convergence_min",
                    "train_min",
                    "min_per_epoch",
                    "hd95_mm_median",
                )
            }
        )
        (out / "result.json").write_text(
            json.dumps({"row": row, "history": history, "summary": summary, "per_volume_dice": [0.5] * 4})
        )
    noop = SimpleNamespace(
        **{
            name: (lambda *a, **k: None)
            for name in (
                "save_loss_curves",
                "save_val_dice_curves",
                "save_dice_distributions",
                "save_overlay_comparison",
            )
        }
    )
    summarize_grid(grid, None, noop, Console(quiet=True))
    html = (tmp_path / "grid" / "report.html").read_text()
    assert "bce" in html and "dice" in html and 'id="comparison"' in html
    assert "[report.html](report.html)" in (tmp_path / "grid" / "compare.md").read_text()


def test_a_trained_run_and_its_evaluation_get_slices_provenance_and_a_report(tmp_path: Path) -> None:
    from medseg.config import load_config
    from medseg.engine.checkpoint import file_sha256
    from medseg.engine.evaluate import evaluate_checkpoint
    from medseg.engine.experiment import train_and_evaluate

    overrides = [
        "data.options={n_patients: 4, seed: 0, shape: [4, 32, 32]}",
        "data.image_size=[32, 32]",
        "model.options={features: [4, 8]}",
        "train.epochs=1",
        "train.batch_size=4",
        "train.progress=false",
        "train.tensorboard=false",
        f"output_dir={tmp_path / 'run'}",
    ]
    run = train_and_evaluate(load_config(None, overrides), "val", Console(quiet=True)).train.output_dir
    sha = file_sha256(run / "best.pt")
    stored = json.loads((run / "summary.json").read_text())["provenance"]
    assert stored == {
        "checkpoint": str(run / "best.pt"),
        "checkpoint_sha256": sha,
        "split": "val",
        "device": "cpu",
        **code_provenance(),
    }
    patients = pd.read_csv(run / "metrics.csv").query("level == 'patient'")["case"]
    assert sorted(read_case_slices(run / "case_slices.npz")) == sorted(patients)
    evaluation = tmp_path / "eval"
    evaluate_checkpoint(run / "best.pt", evaluation, split="val", device="cpu", progress=False)
    assert json.loads((evaluation / "summary.json").read_text())["provenance"]["checkpoint_sha256"] == sha
    assert load_config(evaluation / "config.yaml").to_dict() == load_config(run / "config.yaml").to_dict()
    html = build_report([run, evaluation], tmp_path / "r.html", timestamp="t").read_text()
    assert html.count(sha) == 2 and ">val</td>" in html and ">run</td>" in html
    # each folder shows the code that made its numbers, beside the report builder's
    row = re.search(r"<tr><th>medseg version \(evaluation\)</th>(.*?)</tr>", html)
    assert row and row.group(1).count(f">{medseg.__version__}<") == 2
    assert "command (evaluation)" in html and "command (report builder)" in html
    assert re.search(r"mm, slice \d", html)  # volumes: the most-error slice
    assert len(_json_script(html, "paired-data")) == len(patients)
    # the same checkpoint on the same data: every paired difference is zero, a tie, p = 1
    assert f"0 / {len(patients)} / 0" in html
