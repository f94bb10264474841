"""The HTML report (``medseg report``): embedded data, provenance, stats, compare mode, determinism."""

from __future__ import annotations

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
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.config import Config, EvalConfig, flatten_config
from medseg.errors import DataError
from medseg.metrics import compute_segmentation_metrics
from medseg.provenance import code_provenance, git_commit
from medseg.report.html import (
    build_report,
    calibration_tables,
    config_differences,
    select_overlay_cases,
    summarize_metrics,
)
from medseg.report.results import load_result_dir
from medseg.report.slices import case_slice, read_case_slices, write_case_slices
from medseg.report.stats import describe, paired_comparison

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


# --- summary and case slices --------------------------------------------------------------------------


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
    from medseg.models import build_from_config

    cfg = load_config(None, ["model.options={features: [4, 8]}"])
    model = build_from_config(cfg).eval()
    gt = np.zeros((3, 16, 16), np.uint8)
    gt[1, 4:12, 4:12] = 1
    volume = Sample(np.random.rand(1, 3, 16, 16), {"expert": gt}, "expert", (2.0, 0.5, 0.5), "pat")
    result, predictions = evaluate_model(
        model, [volume], (16, 16), "zscore", EvalConfig(), torch.device("cpu"), progress=False
    )
    item = result.case_slices["pat"]
    errors = (predictions["pat"].astype(bool) ^ gt.astype(bool)).reshape(3, -1).sum(1)
    assert item.slice_index == int(np.argmax(errors)) and item.spacing == (0.5, 0.5)


# --- overlay selection --------------------------------------------------------------------------------


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
    from medseg.engine.evaluate import evaluate_checkpoint
    from medseg.engine.experiment import train_and_evaluate
    from medseg.provenance import file_sha256

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


def test_provenance_rows_read_the_summary_then_hash_best_pt(tmp_path: Path) -> None:
    from medseg.provenance import file_sha256
    from medseg.report.html import provenance_rows

    run = write_eval_dir(
        tmp_path / "run", _cases(2), config={"train": {"seed": 5}, "data": {"source": "lgg"}}
    )
    rows = provenance_rows(load_result_dir(run))
    assert rows["checkpoint"] == "—" and rows["seed"] == "5" and rows["HD95"] == "pooled"
    assert rows["threshold"] == "0.5" and rows["data source"] == "lgg {}"
    (run / "best.pt").write_bytes(b"weights")
    rows = provenance_rows(load_result_dir(run))
    assert rows["checkpoint SHA-256"] == file_sha256(run / "best.pt")
