"""The HTML report in a real browser (Debian chromium through playwright; skipped when absent)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medseg.report.html import build_report

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium")
DICE_CELLS = "#cases-table tbody tr td:nth-child(2)"  # column 1 is the case name


def _playwright():  # noqa: ANN202 - the module, when installed
    try:
        from playwright import sync_api
    except ImportError:
        return None
    return sync_api


@pytest.mark.skipif(CHROMIUM is None or _playwright() is None, reason="needs chromium and playwright")
def test_report_in_chromium_is_offline_error_free_and_sortable(tmp_path: Path) -> None:
    from test_report_html import _cases, write_eval_dir

    run = write_eval_dir(
        tmp_path / "run",
        _cases(12),
        empty={"case_004": "both"},
        history=True,
        config={"train": {"epochs": 3}},
    )
    other = write_eval_dir(tmp_path / "other", _cases(12)[1:], seed=3)
    report = build_report(
        [run, other], tmp_path / "report.html", n_worst=4, n_median=2, n_best=2, n_compare=3, timestamp="t"
    )
    requests: list[str] = []
    errors: list[str] = []
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            assert all(url.split(":", 1)[0] in ("file", "data", "blob") for url in requests), requests
            widths = page.eval_on_selector_all(
                "img", "images => images.map(i => i.complete ? i.naturalWidth : 0)"
            )
            assert len(widths) == 1 + 1 + 8 + 3 * 2  # distributions, training, overlays, side by side
            assert all(w > 0 for w in widths), widths
            assert page.locator("#cases-table tbody tr").count() == 12
            assert page.locator("#paired-table tbody tr").count() == 11
            # sort by Dice: ascending first, so the minimum comes first
            page.locator("#cases-table th", has_text="Dice").first.click()
            first = float(page.locator("#cases-table tbody tr").first.locator("td").nth(1).inner_text())
            values = [
                float(v) for v in page.locator("#cases-table tbody tr td:nth-child(2)").all_inner_texts()
            ]
            assert first == min(values) and values == sorted(values)
            page.locator("#cases-table th", has_text="Dice").first.click()
            values = [
                float(v) for v in page.locator("#cases-table tbody tr td:nth-child(2)").all_inner_texts()
            ]
            assert values == sorted(values, reverse=True)
            # filtering hides the other rows; a row with an overlay jumps to it
            page.fill('input[data-filter="cases-table"]', "case_004")
            assert page.locator("#cases-table tbody tr:visible").count() == 1
            page.locator("#cases-table tbody tr:visible").first.click()
            assert page.evaluate("window.location.hash").startswith("#overlay-")
            page.fill('input[data-filter="cases-table"]', "")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None or _playwright() is None, reason="needs chromium and playwright")
def test_multi_class_report_in_chromium_opens_on_the_result(tmp_path: Path) -> None:
    from test_report_classes import _cases, _write

    from medseg.config import EvalConfig
    from medseg.engine.evaluate import evaluate_files, write_evaluation

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    for name, gt, pred in _cases(8):
        _write(tmp_path / "gt" / f"{name}.nrrd", gt)
        _write(tmp_path / "pred" / f"{name}.nrrd", pred)
    result = evaluate_files(tmp_path / "pred", tmp_path / "gt", EvalConfig(), labels="all")
    write_evaluation(result, tmp_path / "eval")
    report = build_report([tmp_path / "eval"], tmp_path / "report.html", n_worst=4, timestamp="t")
    errors: list[str] = []
    sync_api = _playwright()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.resolve().as_uri())
            page.wait_for_load_state("load")
            # the first screen shows the result: the per-class summary, not the provenance
            assert page.locator("table.class-summary").is_visible()
            assert page.locator("table.class-summary").bounding_box()["y"] < 900
            assert page.locator("#provenance").bounding_box()["y"] > 900
            assert page.locator("#class-table tbody tr").count() == 16
            page.locator("#class-table th", has_text="Dice").first.click()
            values = [
                float(v) for v in page.locator("#class-table tbody tr td:nth-child(3)").all_inner_texts()
            ]
            assert values == sorted(values)
            page.screenshot(path=str(tmp_path / "report.png"))
        finally:
            browser.close()
    assert not errors, errors
    assert (tmp_path / "report.png").stat().st_size > 10_000
