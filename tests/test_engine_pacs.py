"""PACS in the loop against a real Orthanc with its DICOMweb plugin (tests/orthanc_server.py):
`medseg predict --dicomweb` stores one SEG that references the series and decodes to the mask a
local `medseg predict` writes; `watch` segments new series once and skips them after a restart
(also after a kill -9); and the faults, each a one-line error or a logged retry with no partial
or duplicate SEG. Orthanc runs on loopback with authentication on; without the Debian packages
`orthanc` and `orthanc-dicomweb` these tests skip with the reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from orthanc_server import PASSWORD, USER, FaultProxy, OrthancServer, free_port, missing_reason
from typer.testing import CliRunner

import medseg
from medseg.cli import app
from medseg.config import load_config
from medseg.data.dicom import read_dicom_series, write_dicom_series
from medseg.data.dicom_seg import SegAlgorithm, read_dicom_seg, seg_algorithm_of, write_dicom_seg
from medseg.data.dicomweb import ENV_PASSWORD, ENV_TOKEN, ENV_USER, DicomwebServer, RemoteSeries
from medseg.data.sample import Sample
from medseg.engine.checkpoint import save_checkpoint
from medseg.engine.pacs import (
    PacsModel,
    SeriesFilter,
    SeriesOutcome,
    load_pacs_model,
    retry_delay,
    segment_series,
    study_series_to_segment,
    watch,
)
from medseg.engine.predict import predict_probabilities
from medseg.errors import DataError
from medseg.models import build_from_config
from medseg.provenance import file_sha256

pytestmark = pytest.mark.usefixtures("one_thread")
REPO_ROOT = Path(__file__).resolve().parents[1]
ORTHANC_MISSING = missing_reason()
needs_orthanc = pytest.mark.skipif(ORTHANC_MISSING is not None, reason=ORTHANC_MISSING or "")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# ---------------------------------------------------------------- without a server
def test_series_filter() -> None:
    ct = RemoteSeries("1", "1.1", "CT", "Abdomen 5mm", "ABDOMEN", 40)
    assert SeriesFilter("ct", "abdomen*", "abdomen").matches(ct)
    assert SeriesFilter().matches(ct) and not SeriesFilter(modality="MR").matches(ct)
    assert not SeriesFilter(series_description="*lung*").matches(ct)
    assert not SeriesFilter().matches(RemoteSeries("1", "1.2", "SEG"))
    assert SeriesFilter("ct", "lung*", "CHEST").qido_filters() == {
        "Modality": "CT",
        "BodyPartExamined": "CHEST",
    }
    assert SeriesFilter("C?", None, "*").qido_filters() == {}  # patterns are matched here, not by the server
    assert SeriesFilter().describe() == "every image series"
    assert SeriesFilter("CT", "lung*").describe() == "modality 'CT', series description 'lung*'"


def test_retry_delay_doubles_up_to_the_cap() -> None:
    # 30 s, 60 s, 120 s, then the 100 s cap
    assert [retry_delay(n, 30.0, 100.0) for n in (1, 2, 3, 4)] == [30.0, 60.0, 100.0, 100.0]


def test_summary_line() -> None:
    outcome = SeriesOutcome(RemoteSeries("9", "9.1", "CT", "x", "", 3), "stored", "SEG 9.2 (1 segment)", 1.25)
    assert (
        outcome.summary_line()
        == "stored: series 9.1 (CT 'x', 3 instances) of study 9: SEG 9.2 (1 segment) (1.2 s)"
    )


# ---------------------------------------------------------------- fixtures
@pytest.fixture()
def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The test Orthanc's user in the environment; no proxy between us and loopback."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv(ENV_USER, USER)
    monkeypatch.setenv(ENV_PASSWORD, PASSWORD)
    return {ENV_USER: USER, ENV_PASSWORD: PASSWORD}


@pytest.fixture()
def orthanc(tmp_path: Path, credentials: dict[str, str]) -> Iterator[OrthancServer]:
    if ORTHANC_MISSING is not None:
        pytest.skip(ORTHANC_MISSING)
    server = OrthancServer(tmp_path / "orthanc")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three phantom volumes as DICOM series (one study each) by `medseg data export --to dicom`."""
    out = tmp_path_factory.mktemp("dicom")
    result = CliRunner().invoke(
        app,
        ["data", "export", "--to", "dicom", "--source", "phantom", "--out", str(out),
         "--option", "n_patients=3", "--option", "shape=[6, 32, 32]"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, exported: Path) -> Path:
    """A tiny random 2D U-Net whose output bias puts the median voxel of the first exported series
    on the threshold: a mask that is neither empty nor full, predicted in milliseconds."""
    cfg = load_config(None, ["data.image_size=[32, 32]", "model.options={features: [4, 8]}"])
    torch.manual_seed(0)
    model = build_from_config(cfg)
    array, spacing, _ = read_dicom_series(_series_folder(exported, 0))
    sample = Sample(image=array[None], masks={}, target="expert", spacing=spacing, case_id="x")
    probs = predict_probabilities(model, sample, cfg.data.image_size, cfg.data.intensity, torch.device("cpu"))
    median = float(np.clip(np.median(probs), 1e-6, 1 - 1e-6))
    with torch.no_grad():
        list(model.parameters())[-1].sub_(float(np.log(median / (1 - median))))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict()}, path)


def _series_folder(exported: Path, index: int) -> Path:
    return exported / f"phantom_{index:02d}"


def _upload(server: DicomwebServer, files: list[Path]) -> None:
    for path in files:
        server.store(path)


def _upload_case(server: DicomwebServer, exported: Path, index: int) -> dict:
    folder = _series_folder(exported, index)
    _upload(server, sorted(folder.glob("*.dcm")))
    return read_dicom_series(folder)[2]


def _segs(server: DicomwebServer, study_uid: str) -> list[RemoteSeries]:
    return [s for s in server.series_of_study(study_uid) if s.modality == "SEG"]


def _predict(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["predict", *(str(a) for a in args), "--device", "cpu"])
    return result.exit_code, result.output


def _error_lines(output: str) -> list[str]:
    assert "Traceback" not in output
    return [line for line in output.splitlines() if line.startswith("error:")]


def _non_image(folder: Path, modality: str, study_uid: str) -> Path:
    """A minimal SR or RTSTRUCT object in the study."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = {"SR": "1.2.840.10008.5.1.4.1.1.88.11", "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3"}[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality, ds.SeriesNumber = "anonymous", "anonymous^", modality, 7
    path = folder / f"{modality}.dcm"
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ---------------------------------------------------------------- the round trip
@needs_orthanc
def test_predict_dicomweb_stores_one_seg_that_matches_a_local_prediction(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    server = DicomwebServer(orthanc.url)
    meta = _upload_case(server, exported, 0)
    study = meta["study_uid"]

    code, output = _predict(
        checkpoint, "--dicomweb", orthanc.url, "--study", study, "--dry-run", "--out", tmp_path / "dry"
    )
    assert code == 0, output
    assert "dry-run: series" in output and _segs(server, study) == []
    assert [p.name for p in (tmp_path / "dry").rglob("*.dcm")] == ["series_seg.dcm"]

    code, output = _predict(
        checkpoint, "--dicomweb", orthanc.url, "--study", study, "--out", tmp_path / "pacs"
    )
    assert code == 0, output
    sha = file_sha256(checkpoint)
    assert f"sha256 {sha}" in output and "stored: series" in output
    assert PASSWORD not in output
    (seg_series,) = _segs(server, study)
    assert seg_series.n_instances == 1
    (seg_file,) = server.retrieve_series(seg_series, tmp_path / "from_pacs")
    seg = pydicom.dcmread(seg_file)
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == meta["series_uid"]
    assert {str(i.ReferencedSOPInstanceUID) for i in referenced.ReferencedInstanceSequence} == set(
        meta["sop_instance_uids"]
    )
    assert seg_algorithm_of(seg) == SegAlgorithm("unet", sha, medseg.__version__)
    assert seg.SeriesDescription == f"medseg unet {sha[:12]}"

    # the same series predicted locally, written as NIfTI
    code, output = _predict(checkpoint, _series_folder(exported, 0), "--out", tmp_path / "local")
    assert code == 0, output
    local = np.asarray(nib.load(tmp_path / "local" / "phantom_00_mask.nii.gz").dataobj).transpose(2, 1, 0)
    assert 0 < local.mean() < 1
    back, segments = read_dicom_seg(seg_file, meta["sop_instance_uids"])
    np.testing.assert_array_equal(back, local)
    assert [s.name for s in segments] == ["class 1"]

    (report_path,) = (tmp_path / "pacs").rglob("report.json")
    report = json.loads(report_path.read_text())
    assert report["stored"] and report["checkpoint_sha256"] == sha and report["model"] == "unet"
    assert (
        report["medseg_version"] == medseg.__version__
        and report["seg_sop_instance_uid"] == seg.SOPInstanceUID
    )
    assert PASSWORD not in report_path.read_text()

    # again: the server already holds this checkpoint's SEG of the series
    code, output = _predict(
        checkpoint, "--dicomweb", orthanc.url, "--study", study, "--out", tmp_path / "again"
    )
    assert code == 0 and "skipped: series" in output, output
    assert len(_segs(server, study)) == 1


@needs_orthanc
def test_watch_segments_new_series_once_and_skips_them_after_a_restart(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    server = DicomwebServer(orthanc.url)
    studies = [_upload_case(server, exported, i)["study_uid"] for i in (1, 2)]
    mr_files = write_dicom_series(tmp_path / "mr", np.zeros((3, 8, 8)), (1, 1, 1), modality="MR")
    _upload(server, mr_files)
    mr_study = str(pydicom.dcmread(mr_files[0]).StudyInstanceUID)
    model = load_pacs_model(checkpoint, "cpu")
    only_ct = SeriesFilter(modality="CT", series_description="med*")
    lines: list[str] = []
    first = watch(server, model, only_ct, tmp_path / "watch", once=True, log=lines.append)
    assert (first.stored, first.skipped, first.failed) == (2, 0, 0)
    assert sum(line.startswith("stored: series") for line in lines) == 2
    assert lines[-1] == first.line() and "2 stored" in lines[-1]
    assert [len(_segs(server, s)) for s in studies] == [1, 1] and _segs(server, mr_study) == []
    # a restart: a new watcher knows only what the server holds
    second = watch(server, model, only_ct, tmp_path / "watch", once=True, log=lines.append)
    assert (second.stored, second.skipped, second.failed) == (0, 2, 0)
    assert [len(_segs(server, s)) for s in studies] == [1, 1]


@needs_orthanc
def test_watch_stops_cleanly_on_ctrl_c_and_resumes(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    server = DicomwebServer(orthanc.url)
    studies = [_upload_case(server, exported, i)["study_uid"] for i in (1, 2)]
    model = load_pacs_model(checkpoint, "cpu")

    def ctrl_c(outcome: SeriesOutcome) -> None:
        raise KeyboardInterrupt

    lines: list[str] = []
    stopped = watch(
        server, model, SeriesFilter(), tmp_path / "w", once=True, log=lines.append, after_series=ctrl_c
    )
    assert stopped.interrupted and stopped.stored == 1 and "stopped by interrupt" in lines[-1]
    resumed = watch(server, model, SeriesFilter(), tmp_path / "w", once=True, log=lines.append)
    assert (resumed.stored, resumed.skipped) == (1, 1)
    assert [len(_segs(server, s)) for s in studies] == [1, 1]


@needs_orthanc
def test_watch_survives_kill_9_without_a_duplicate(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path, credentials: dict[str, str]
) -> None:
    server = DicomwebServer(orthanc.url)
    studies = [_upload_case(server, exported, i)["study_uid"] for i in (1, 2)]
    env = {
        **os.environ,
        **credentials,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "medseg", "watch", str(checkpoint), "--dicomweb", orthanc.url,
               "--poll", "0.2", "--out", str(tmp_path / "w"), "--device", "cpu"]  # fmt: skip
    log = (tmp_path / "watch.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not any(_segs(server, s) for s in studies):
            assert process.poll() is None, (tmp_path / "watch.log").read_text()
            assert time.monotonic() < deadline, "the watcher stored no SEG within 120 s"
            time.sleep(0.05)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        log.close()
    model = load_pacs_model(checkpoint, "cpu")
    after = watch(server, model, SeriesFilter(), tmp_path / "w", once=True, log=lambda line: None)
    assert after.skipped >= 1 and after.stored + after.skipped == 2 and after.failed == 0
    assert [len(_segs(server, s)) for s in studies] == [1, 1]


# ---------------------------------------------------------------- bad input and faults
def test_an_unreachable_server_is_a_one_line_error(
    credentials: dict[str, str], checkpoint: Path, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    code, output = _predict(checkpoint, "--dicomweb", url, "--study", "1.2.3", "--out", tmp_path)
    assert code == 2
    (line,) = _error_lines(output)
    assert "connection failed while searching for study 1.2.3 (Connection refused)" in line
    code, output = _predict(
        checkpoint, "--dicomweb", "https://u:p@pacs.example.org", "--study", "1.2", "--out", tmp_path
    )
    assert code == 2 and "must not contain credentials" in output
    code, output = _predict(checkpoint, "--study", "1.2", "--out", tmp_path)
    assert code == 2 and "go with --dicomweb URL --study UID" in output
    code, output = _predict(checkpoint, tmp_path, "--dicomweb", url, "--study", "1.2", "--out", tmp_path)
    assert code == 2 and "give only the CHECKPOINT" in output


@needs_orthanc
def test_wrong_credentials_are_a_401_that_does_not_print_the_password(
    orthanc: OrthancServer, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PASSWORD, "not-the-password-4711")
    code, output = _predict(checkpoint, "--dicomweb", orthanc.url, "--study", "1.2.3", "--out", tmp_path)
    assert code == 2
    (line,) = _error_lines(output)
    assert "HTTP 401 Unauthorized" in line and "refused the credentials" in line
    assert "not-the-password-4711" not in output


@needs_orthanc
def test_an_unknown_study_and_a_study_without_images(
    orthanc: OrthancServer, checkpoint: Path, tmp_path: Path
) -> None:
    code, output = _predict(checkpoint, "--dicomweb", orthanc.url, "--study", "1.2.3.4", "--out", tmp_path)
    assert code == 2
    (line,) = _error_lines(output)
    assert "no study with StudyInstanceUID 1.2.3.4" in line
    server = DicomwebServer(orthanc.url)
    server.store(_non_image(tmp_path / "sr", "SR", "1.2.826.0.1.3680043.8.498.7"))
    code, output = _predict(
        checkpoint, "--dicomweb", orthanc.url, "--study", "1.2.826.0.1.3680043.8.498.7", "--out", tmp_path
    )
    assert code == 2
    (line,) = _error_lines(output)
    assert "has no image series to segment" in line and "(SR " in line


@needs_orthanc
@pytest.mark.parametrize("modality", ["SEG", "SR", "RTSTRUCT"])
def test_a_non_image_series_offered_as_input_is_refused(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path, modality: str
) -> None:
    server = DicomwebServer(orthanc.url)
    meta = _upload_case(server, exported, 0)
    if modality == "SEG":
        mask = np.zeros((6, 32, 32), np.uint8)
        mask[2:4, 8:20, 8:20] = 1
        path = write_dicom_seg(mask, meta["files"], tmp_path / "seg.dcm")
    else:
        path = _non_image(tmp_path / modality, modality, meta["study_uid"])
    server.store(path)
    offered = str(pydicom.dcmread(path).SeriesInstanceUID)
    segs_before = len(_segs(server, meta["study_uid"]))
    code, output = _predict(
        checkpoint,
        "--dicomweb",
        orthanc.url,
        "--study",
        meta["study_uid"],
        "--series",
        offered,
        "--out",
        tmp_path,
    )
    assert code == 2
    (line,) = _error_lines(output)
    assert f"is a {modality} object, not an image series" in line
    assert len(_segs(server, meta["study_uid"])) == segs_before


@needs_orthanc
def test_a_series_with_a_missing_slice_is_refused(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    server = DicomwebServer(orthanc.url)
    _, _, meta = read_dicom_series(_series_folder(exported, 0))
    files = [Path(f) for f in meta["files"]]
    _upload(server, files[:3] + files[4:])  # slice 3 never arrived
    code, output = _predict(
        checkpoint, "--dicomweb", orthanc.url, "--study", meta["study_uid"], "--out", tmp_path
    )
    assert code == 2
    (line,) = _error_lines(output)
    assert f"series {meta['series_uid']}" in line and "(a missing slice?)" in line
    assert _segs(server, meta["study_uid"]) == []


@needs_orthanc
def test_the_server_going_down_mid_store_leaves_no_seg_and_the_next_run_stores_one(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    server = DicomwebServer(orthanc.url)
    meta = _upload_case(server, exported, 0)

    def server_dies() -> bool:
        orthanc.stop()
        return True

    proxy = FaultProxy(orthanc.port, server_dies)
    try:
        code, output = _predict(
            checkpoint, "--dicomweb", proxy.url, "--study", meta["study_uid"], "--out", tmp_path
        )
    finally:
        proxy.close()
    assert code == 2 and proxy.posts_dropped == 1
    (line,) = _error_lines(output)
    assert "connection failed while storing" in line and "the SEG is kept at" in line
    orthanc.start()  # back up, same storage
    assert _segs(server, meta["study_uid"]) == []
    (report,) = tmp_path.rglob("report.json")
    assert json.loads(report.read_text())["stored"] is False
    code, output = _predict(
        checkpoint, "--dicomweb", orthanc.url, "--study", meta["study_uid"], "--out", tmp_path
    )
    assert code == 0, output
    assert len(_segs(server, meta["study_uid"])) == 1
    assert json.loads(report.read_text())["stored"] is True


@needs_orthanc
def test_watch_logs_a_dropped_store_and_retries_it(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """The server goes down in mid-store and comes back; the watcher logs the failure, waits its
    back-off and stores the SEG once. A series first seen waits one poll (it may still arrive)."""
    server = DicomwebServer(orthanc.url)
    meta = _upload_case(server, exported, 1)

    def server_restarts() -> bool:
        if proxy.posts_dropped:
            return False
        orthanc.restart()
        return True

    proxy = FaultProxy(orthanc.port, server_restarts)
    lines: list[str] = []
    try:
        summary = watch(
            DicomwebServer(proxy.url),
            load_pacs_model(checkpoint, "cpu"),
            SeriesFilter(),
            tmp_path / "w",
            poll_seconds=0.05,
            retry_seconds=0.05,
            max_passes=4,
            log=lines.append,
        )
    finally:
        proxy.close()
    assert (summary.stored, summary.failed, summary.failed_attempts) == (1, 0, 1), lines
    assert any("once it is complete" in line for line in lines)
    (failure,) = [line for line in lines if line.startswith("failed: series")]
    assert "connection failed while storing" in failure and "attempt 1, retry in 0 s" in failure
    assert len(_segs(server, meta["study_uid"])) == 1


@needs_orthanc
def test_a_checkpoint_that_changes_mid_prediction_stores_nothing(
    orthanc: OrthancServer, exported: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """The duplicate check used one hash, the SEG would record another: refused, nothing stored."""
    server = DicomwebServer(orthanc.url)
    meta = _upload_case(server, exported, 2)
    (series,) = study_series_to_segment(server, meta["study_uid"])
    stale = PacsModel(checkpoint, SegAlgorithm("unet", "0" * 64, medseg.__version__), "cpu")
    with pytest.raises(DataError, match="the checkpoint changed while medseg was predicting"):
        segment_series(server, stale, series, tmp_path, log=lambda line: None)
    assert _segs(server, meta["study_uid"]) == []
