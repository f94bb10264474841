"""PACS in the loop: segment series from a DICOMweb server and store the DICOM-SEG back.

:func:`predict_study` is ``medseg predict CHECKPOINT --dicomweb URL --study UID``: find the image
series of the study (QIDO-RS), retrieve each into a temporary folder (WADO-RS), predict it with
:func:`medseg.engine.predict.predict_files` exactly as a local ``medseg predict --format
dicom-seg`` of that folder would, and store the SEG (STOW-RS). :func:`watch` is ``medseg watch``:
a small router that polls for new series matching a :class:`SeriesFilter` and segments each once.

What makes it safe to run again, or to kill at any moment:

* **No duplicates.** Before segmenting a series the server is asked whether it already holds a
  SEG that references the series and was made by the same checkpoint (the SHA-256 every medseg
  SEG records, :class:`medseg.data.dicom_seg.SegAlgorithm`); if so the series is skipped. The
  answer lives on the server, so a restart (or a ``kill -9``) repeats no work.
* **No partial SEG.** A SEG is one instance, written to disk atomically and sent in one STOW-RS
  request: the server stores all of it or none of it.
* **Nothing lost.** The SEG and ``report.json`` (the model, its checkpoint hash, medseg's version,
  the UIDs, whether it was stored) stay in ``OUT/<study>/<series>/``; the retrieved images are
  deleted. A failed store says so and the next run stores it.
* **A series still arriving** is left alone: the watcher segments a series once its number of
  instances has stayed the same for one poll (``--once`` takes it as it is).
"""

from __future__ import annotations

import fnmatch
import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medseg.data.dicom_seg import SegAlgorithm, checkpoint_algorithm, referenced_series_uids, seg_algorithm_of
from medseg.data.dicomweb import DicomwebError, DicomwebServer, RemoteSeries, check_uid, image_series
from medseg.errors import DataError, MedsegError
from medseg.io_utils import write_text_atomic

Log = Callable[[str], None]


@dataclass(frozen=True)
class PacsModel:
    """The checkpoint that segments, with the identity its SEGs record."""

    checkpoint: Path
    algorithm: SegAlgorithm
    device: str = "auto"

    def describe(self) -> str:
        a = self.algorithm
        return (
            f"model {a.model_name}, {self.checkpoint.name} sha256 {a.checkpoint_sha256}, "
            f"medseg {a.medseg_version}"
        )


def load_pacs_model(checkpoint: str | Path, device: str = "auto") -> PacsModel:
    """Check that ``checkpoint`` loads (before any network traffic) and hash it."""
    from medseg.engine.inference import resolve_device
    from medseg.export.runtime import load_predictor

    path = Path(checkpoint)
    _, cfg, _ = load_predictor(path, resolve_device("cpu"))
    return PacsModel(path, checkpoint_algorithm(path, cfg.model.name), device)


@dataclass
class SeriesOutcome:
    """What happened to one series: ``stored``, ``dry-run`` (written locally only), ``skipped`` (a
    SEG of this checkpoint is already there) or ``failed``."""

    series: RemoteSeries
    status: str
    detail: str
    seconds: float = 0.0
    seg_path: Path | None = None
    seg_sop_instance_uid: str | None = None
    error: MedsegError | None = field(default=None, repr=False)

    def summary_line(self) -> str:
        return (
            f"{self.status}: series {self.series.describe()} of study {self.series.study_uid}: "
            f"{self.detail} ({self.seconds:.1f} s)"
        )


def existing_seg(server: DicomwebServer, series: RemoteSeries, algorithm: SegAlgorithm) -> str | None:
    """The SOPInstanceUID of a SEG in the series' study that references it and was made by the
    same checkpoint (same SHA-256), or None."""
    for other in server.series_of_study(series.study_uid):
        if other.modality.upper() != "SEG":
            continue
        for dataset in server.series_metadata(other.study_uid, other.series_uid):
            made_by = seg_algorithm_of(dataset)
            if (
                made_by is not None
                and made_by.checkpoint_sha256 == algorithm.checkpoint_sha256
                and series.series_uid in referenced_series_uids(dataset)
            ):
                return str(dataset.SOPInstanceUID)
    return None


def _series_error(series: RemoteSeries, error: DataError) -> DataError:
    """A reader's error about a file in the temporary folder, said about the series instead."""
    where = f" (instance {Path(error.path).stem})" if error.path and error.path.endswith(".dcm") else ""
    return DataError(f"series {series.series_uid} of study {series.study_uid}: {error.problem}{where}")


def _write_report(folder: Path, report: dict[str, Any]) -> Path:
    return write_text_atomic(folder / "report.json", json.dumps(report, indent=2) + "\n")


def segment_series(
    server: DicomwebServer,
    model: PacsModel,
    series: RemoteSeries,
    out_dir: str | Path,
    dry_run: bool = False,
    log: Log = print,
) -> SeriesOutcome:
    """Segment one image series and store its SEG (or only write it, ``dry_run``).

    Skips a series that already has a SEG from this checkpoint. Writes ``OUT/<study>/<series>/``:
    ``series_seg.dcm``, ``measurements.csv`` and ``report.json``. Raises a
    :class:`~medseg.errors.MedsegError` (one line) for a non-image series, a series the reader
    refuses (missing slices, …) and any server failure.
    """
    from medseg.engine.predict import predict_files

    start = time.perf_counter()
    if not series.is_image:
        raise DataError(
            f"series {series.series_uid} is a {series.modality} object, not an image series: "
            "medseg segments image series (CT, MR, ...)"
        )
    found = existing_seg(server, series, model.algorithm)
    if found is not None:
        return SeriesOutcome(
            series,
            "skipped",
            f"SEG {found} of this checkpoint is already there",
            time.perf_counter() - start,
        )
    out = Path(out_dir) / series.study_uid / series.series_uid
    with tempfile.TemporaryDirectory(prefix="medseg-pacs-") as tmp:
        folder = Path(tmp) / "series"  # the SEG is series_seg.dcm (a UID's dots would read as a suffix)
        log(f"  retrieving {series.describe()}")
        server.retrieve_series(series, folder)
        log(f"  predicting {series.series_uid}")
        try:
            (result,) = predict_files(
                model.checkpoint,
                [folder],
                out,
                device=model.device,
                output_format="dicom-seg",
                overwrite=True,
            )
        except DataError as e:
            raise _series_error(series, e) from e
    import pydicom

    seg = pydicom.dcmread(result.mask, stop_before_pixels=True)
    if seg_algorithm_of(seg) != model.algorithm:  # the SEG must carry the hash the duplicate check used
        raise DataError(
            "the checkpoint changed while medseg was predicting (its SHA-256 is no longer "
            f"{model.algorithm.short_hash()}…); nothing was stored, run again",
            model.checkpoint,
        )
    sop = str(seg.SOPInstanceUID)
    segments = [str(item.SegmentLabel) for item in seg.SegmentSequence]
    report: dict[str, Any] = {
        "server": server.url,
        "study_uid": series.study_uid,
        "series": asdict(series),
        "seg_file": result.mask.name,
        "seg_sop_instance_uid": sop,
        "seg_series_instance_uid": str(seg.SeriesInstanceUID),
        "segments": segments,
        "model": model.algorithm.model_name,
        "checkpoint": str(model.checkpoint.resolve()),
        "checkpoint_sha256": model.algorithm.checkpoint_sha256,
        "medseg_version": model.algorithm.medseg_version,
        "stored": False,
    }
    _write_report(out, report)
    what = f"SEG {sop} ({len(segments)} segment{'s' * (len(segments) != 1)}: {', '.join(segments)})"
    if dry_run:
        return SeriesOutcome(
            series,
            "dry-run",
            f"{what} written to {result.mask}",
            time.perf_counter() - start,
            result.mask,
            sop,
        )
    log(f"  storing {what}")
    try:
        server.store(result.mask)
    except DicomwebError as e:
        raise DicomwebError(
            f"{e}; the SEG is kept at {result.mask}, and the next run stores it "
            "(it never stores a second one)"
        ) from e
    report["stored"] = True
    _write_report(out, report)
    return SeriesOutcome(series, "stored", what, time.perf_counter() - start, result.mask, sop)


def study_series_to_segment(
    server: DicomwebServer, study_uid: str, series_uid: str | None = None
) -> list[RemoteSeries]:
    """The image series of a study, or the one named ``series_uid``; a one-line error for an
    unknown study or series, a non-image series, or a study without image series."""
    check_uid(study_uid, "--study")
    if series_uid is not None:
        check_uid(series_uid, "--series")
    found = server.series_of_study(study_uid)
    if series_uid is not None:
        match = [s for s in found if s.series_uid == series_uid]
        if not match:
            listing = "; ".join(s.describe() for s in found) or "none"
            raise DataError(f"study {study_uid} has no series {series_uid} (its series: {listing})")
        if not match[0].is_image:
            raise DataError(
                f"series {series_uid} is a {match[0].modality} object, not an image series: "
                "medseg segments image series (CT, MR, ...)"
            )
        return match
    images = image_series(found)
    if not images:
        listing = "; ".join(s.describe() for s in found) or "no series at all"
        raise DataError(f"study {study_uid} has no image series to segment (it holds {listing})")
    return images


def predict_study(
    server: DicomwebServer,
    model: PacsModel,
    study_uid: str,
    out_dir: str | Path,
    series_uid: str | None = None,
    dry_run: bool = False,
    log: Log = print,
) -> list[SeriesOutcome]:
    """Segment the image series of a study (or the one ``series_uid``) and store their SEGs.

    Each series is one :func:`segment_series`; a failed one is a ``failed`` outcome with its error
    and the others still run. Errors about the study itself (unknown, no image series, a SEG
    offered as input, an unreachable server) raise.
    """
    log(f"{model.describe()}")
    log(f"server {server.url} ({server.credentials.source})")
    for warning in server.warnings():
        log(f"warning: {warning}")
    outcomes = []
    for series in study_series_to_segment(server, study_uid, series_uid):
        start = time.perf_counter()
        try:
            outcome = segment_series(server, model, series, out_dir, dry_run, log)
        except MedsegError as e:
            outcome = SeriesOutcome(series, "failed", str(e), time.perf_counter() - start, error=e)
        log(outcome.summary_line())
        outcomes.append(outcome)
    return outcomes


@dataclass(frozen=True)
class SeriesFilter:
    """Which series ``watch`` segments: modality, series description and body part examined, each
    an exact value or a pattern with ``*`` and ``?`` (case-insensitive); None matches anything.
    Non-image series (SEG, SR, RTSTRUCT, …) never match."""

    modality: str | None = None
    series_description: str | None = None
    body_part: str | None = None

    def qido_filters(self) -> dict[str, str]:
        """The QIDO-RS search filters that narrow the search on the server: modality and body part
        when they are exact values (both are upper-case code strings). :meth:`matches` decides:
        servers differ in how they match case and wildcards (Orthanc 1.10 misses a ``*`` that the
        client sends URL-encoded), so patterns and the description are matched here."""
        pairs = {"Modality": self.modality, "BodyPartExamined": self.body_part}
        return {key: value.upper() for key, value in pairs.items() if value and not set(value) & set("*?")}

    def matches(self, series: RemoteSeries) -> bool:
        def like(value: str, pattern: str | None) -> bool:
            return pattern is None or fnmatch.fnmatchcase(value.lower(), pattern.lower())

        return (
            series.is_image
            and like(series.modality, self.modality)
            and like(series.description, self.series_description)
            and like(series.body_part, self.body_part)
        )

    def describe(self) -> str:
        pairs = {
            "modality": self.modality,
            "series description": self.series_description,
            "body part": self.body_part,
        }
        return ", ".join(f"{k} {v!r}" for k, v in pairs.items() if v) or "every image series"


@dataclass
class WatchSummary:
    """What a :func:`watch` run did: series stored, skipped (a SEG of this checkpoint was there)
    and still failing at the end (``failed_series``), and failed attempts in all."""

    passes: int = 0
    stored: int = 0
    skipped: int = 0
    failed_attempts: int = 0
    interrupted: bool = False
    failed_series: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failed_series)

    def line(self) -> str:
        how = "stopped by interrupt" if self.interrupted else "done"
        return (
            f"watch {how} after {self.passes} pass{'es' * (self.passes != 1)}: {self.stored} stored, "
            f"{self.skipped} skipped, {self.failed} failing ({self.failed_attempts} failed attempts)"
        )


@dataclass
class _Retry:
    attempts: int
    not_before: float


def retry_delay(attempts: int, first_seconds: float, max_seconds: float) -> float:
    """Back-off before try ``attempts + 1``: ``first · 2^(attempts−1)``, at most ``max_seconds``."""
    return min(first_seconds * 2.0 ** max(attempts - 1, 0), max_seconds)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``systemctl stop``, ``docker stop``) stops the watcher like Ctrl-C does."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def watch(
    server: DicomwebServer,
    model: PacsModel,
    series_filter: SeriesFilter,
    out_dir: str | Path,
    once: bool = False,
    poll_seconds: float = 60.0,
    retry_seconds: float = 30.0,
    max_retry_seconds: float = 3600.0,
    max_passes: int | None = None,
    log: Log = print,
    after_series: Callable[[SeriesOutcome], None] | None = None,
) -> WatchSummary:
    """Poll the server and segment each new series that matches ``series_filter``, once.

    Each pass searches (QIDO-RS) and segments the series not yet done (:func:`segment_series`,
    which skips one that already has a SEG of this checkpoint). A series is taken once its number
    of instances was the same on the previous pass (one still arriving waits); with ``once`` it is
    taken at once and the watcher stops after one pass. A failed series is logged and retried
    after ``retry_seconds``, doubling up to ``max_retry_seconds``, while the others go on; an
    unreachable server is logged and polled again. Ctrl-C or SIGTERM stops it between two
    requests; it returns a :class:`WatchSummary` either way. ``max_passes`` bounds the passes
    (tests); ``after_series`` sees every outcome.
    """
    summary = WatchSummary()
    done: set[str] = set()
    retries: dict[str, _Retry] = {}
    previous_counts: dict[str, int | None] = {}
    log(f"{model.describe()}")
    log(f"watching {server.url} ({server.credentials.source}) for {series_filter.describe()}")
    for warning in server.warnings():
        log(f"warning: {warning}")
    with _sigterm_as_interrupt():
        try:
            while True:
                summary.passes += 1
                _watch_pass(
                    server, model, series_filter, out_dir, once, retry_seconds, max_retry_seconds,
                    done, retries, previous_counts, summary, log, after_series,
                )  # fmt: skip
                if once or (max_passes is not None and summary.passes >= max_passes):
                    break
                now = time.monotonic()
                due = [r.not_before for r in retries.values()]
                wait = min([poll_seconds, *(max(d - now, 0.0) for d in due)])
                time.sleep(max(wait, 0.0))
        except KeyboardInterrupt:
            summary.interrupted = True
    log(summary.line())
    return summary


def _watch_pass(
    server: DicomwebServer,
    model: PacsModel,
    series_filter: SeriesFilter,
    out_dir: str | Path,
    once: bool,
    retry_seconds: float,
    max_retry_seconds: float,
    done: set[str],
    retries: dict[str, _Retry],
    previous_counts: dict[str, int | None],
    summary: WatchSummary,
    log: Log,
    after_series: Callable[[SeriesOutcome], None] | None,
) -> None:
    """One poll of :func:`watch`."""
    try:
        found = [s for s in server.search_series(series_filter.qido_filters()) if series_filter.matches(s)]
    except DicomwebError as e:
        log(f"poll {summary.passes} failed, polling again later: {e}")
        return
    for series in sorted(found, key=lambda s: (s.study_uid, s.series_uid)):
        key = series.series_uid
        if key in done:
            continue
        settled = once or (key in previous_counts and previous_counts[key] == series.n_instances)
        previous_counts[key] = series.n_instances
        if not settled:
            log(f"new series {series.describe()}: segmenting it once it is complete")
            continue
        retry = retries.get(key)
        if retry is not None and time.monotonic() < retry.not_before:
            continue
        log(f"series {series.describe()} of study {series.study_uid}")
        start = time.perf_counter()
        try:
            outcome = segment_series(server, model, series, out_dir, log=log)
        except Exception as e:  # one bad series must not stop the router: logged and retried
            error = (
                e if isinstance(e, MedsegError) else MedsegError(f"internal error {type(e).__name__}: {e}")
            )
            attempts = 1 if retry is None else retry.attempts + 1
            delay = retry_delay(attempts, retry_seconds, max_retry_seconds)
            retries[key] = _Retry(attempts, time.monotonic() + delay)
            then = "not retried (--once)" if once else f"retry in {delay:.0f} s"
            outcome = SeriesOutcome(
                series,
                "failed",
                f"{error} (attempt {attempts}, {then})",
                time.perf_counter() - start,
                error=error,
            )
            summary.failed_attempts += 1
        else:
            done.add(key)
            retries.pop(key, None)
            if outcome.status == "skipped":
                summary.skipped += 1
            else:
                summary.stored += 1
        summary.failed_series = sorted(retries)
        log(outcome.summary_line())
        if after_series is not None:
            after_series(outcome)
