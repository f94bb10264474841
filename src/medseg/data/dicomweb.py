"""A DICOMweb server (a PACS, Orthanc, …) as a data source and sink, through ``dicomweb-client``.

* **QIDO-RS** finds series: :meth:`DicomwebServer.series_of_study` (one study) and
  :meth:`DicomwebServer.search_series` (all studies, by modality / description / body part).
* **WADO-RS** retrieves a series into a folder of Part 10 files (:meth:`~DicomwebServer.retrieve_series`),
  which :func:`medseg.data.dicom.read_dicom_series` reads like any series on disk; and the metadata
  of a series (:meth:`~DicomwebServer.series_metadata`, no pixel data).
* **STOW-RS** stores one file (:meth:`~DicomwebServer.store`), a DICOM-SEG.

Credentials never come from the command line, so they stay out of shell histories and process
lists: :func:`credentials_from_environment` reads ``MEDSEG_DICOMWEB_TOKEN`` (a bearer token), or
``MEDSEG_DICOMWEB_USER`` and ``MEDSEG_DICOMWEB_PASSWORD`` (HTTP basic), or else the netrc entry of
the server's host (``~/.netrc`` or the file ``NETRC`` names). A URL with ``user:password@`` is
refused. They travel as a ``requests`` auth object, never as a header the client logs, and
:class:`Credentials` prints only where they came from. TLS certificates are always verified;
a hospital CA is given with ``REQUESTS_CA_BUNDLE``, as for any ``requests`` program.

Every failure is a :class:`DicomwebError`, one line that names the server and what was being done:
an unreachable server, a refused login (401), a missing study, a lost connection in mid-store.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from medseg.data.dicom import NON_IMAGE_MODALITIES
from medseg.errors import ConfigError, MedsegError
from medseg.io_utils import atomic_write

ENV_USER = "MEDSEG_DICOMWEB_USER"
ENV_PASSWORD = "MEDSEG_DICOMWEB_PASSWORD"
ENV_TOKEN = "MEDSEG_DICOMWEB_TOKEN"
#: seconds to connect, seconds to wait for an answer (a large series takes a while to send)
DEFAULT_TIMEOUT = (10.0, 300.0)

# QIDO-RS attributes asked for on every series search (StudyInstanceUID: a search over all studies)
_SERIES_FIELDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesDescription",
    "BodyPartExamined",
    "NumberOfSeriesRelatedInstances",
)
_T = TypeVar("_T")


class DicomwebError(MedsegError):
    """The DICOMweb server could not be reached, refused a request or answered something unusable."""


class BearerAuth:
    """``Authorization: Bearer <token>`` on every request (a ``requests`` auth callable)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:  # never the token itself
        return "BearerAuth(<hidden>)"


@dataclass(frozen=True)
class Credentials:
    """How requests authenticate: ``source`` says where the credentials came from (safe to print),
    ``auth`` is the ``requests`` auth object (None: no credentials), kept out of ``repr``."""

    source: str
    auth: Any = field(default=None, repr=False, compare=False)


def check_url(url: str) -> str:
    """The DICOMweb base URL without a trailing ``/``; a :class:`ConfigError` for anything but an
    ``http(s)://host[:port][/path]`` URL, and for one that carries credentials."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--dicomweb must be an http:// or https:// URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "--dicomweb URL must not contain credentials: set "
            f"{ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, or a netrc entry for the host"
        )
    if parts.query or parts.fragment:
        raise ConfigError(f"--dicomweb must be the service's base URL, without ?query or #fragment: {url!r}")
    return url.strip().rstrip("/")


def check_uid(uid: str, option: str) -> str:
    """``uid`` if it is a DICOM UID (digits and dots, at most 64 characters), else a ConfigError."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", uid or "") or len(uid) > 64:
        raise ConfigError(f"{option} {uid!r} is not a DICOM UID (digits separated by dots, at most 64)")
    return uid


def credentials_from_environment(url: str, environ: Mapping[str, str] | None = None) -> Credentials:
    """The credentials for ``url`` (module docstring): a token, a user and password, a netrc entry,
    or none. Setting both a token and a user, or only half of user/password, is a ConfigError."""
    import requests
    import requests.utils

    env = os.environ if environ is None else environ
    token, user, password = env.get(ENV_TOKEN), env.get(ENV_USER), env.get(ENV_PASSWORD)
    if token and (user or password):
        raise ConfigError(f"set either {ENV_TOKEN} or {ENV_USER}/{ENV_PASSWORD}, not both")
    if token:
        return Credentials(f"bearer token from {ENV_TOKEN}", BearerAuth(token))
    if user or password:
        if not (user and password):
            missing = ENV_PASSWORD if user else ENV_USER
            raise ConfigError(f"{ENV_USER} and {ENV_PASSWORD} go together: {missing} is not set")
        return Credentials(
            f"user {user} from {ENV_USER}/{ENV_PASSWORD}", requests.auth.HTTPBasicAuth(user, password)
        )
    netrc = requests.utils.get_netrc_auth(url)
    if netrc:
        host = urlsplit(url).hostname
        return Credentials(f"netrc entry of {host}", requests.auth.HTTPBasicAuth(*netrc))
    return Credentials("no credentials")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RemoteSeries:
    """One series on the server, as QIDO-RS describes it."""

    study_uid: str
    series_uid: str
    modality: str
    description: str = ""
    body_part: str = ""
    n_instances: int | None = None

    @property
    def is_image(self) -> bool:
        """Not a SEG, SR, RT structure set or other object without an image to segment."""
        return self.modality.upper() not in NON_IMAGE_MODALITIES

    def describe(self) -> str:
        count = "?" if self.n_instances is None else str(self.n_instances)
        return f"{self.series_uid} ({self.modality} '{self.description}', {count} instances)"


def _value(item: Mapping[str, Any], keyword: str) -> Any:
    """The first value of ``keyword`` in a DICOM JSON object (PS3.18 F.2), or None."""
    from pydicom.datadict import tag_for_keyword

    element = item.get(f"{tag_for_keyword(keyword):08X}") or {}
    values = element.get("Value") or [None]
    return values[0]


def series_from_json(item: Mapping[str, Any], study_uid: str | None = None) -> RemoteSeries:
    """A QIDO-RS series result (DICOM JSON) as a :class:`RemoteSeries`."""
    count = _value(item, "NumberOfSeriesRelatedInstances")
    return RemoteSeries(
        study_uid=str(_value(item, "StudyInstanceUID") or study_uid or ""),
        series_uid=str(_value(item, "SeriesInstanceUID") or ""),
        modality=str(_value(item, "Modality") or ""),
        description=str(_value(item, "SeriesDescription") or ""),
        body_part=str(_value(item, "BodyPartExamined") or ""),
        n_instances=None if count is None else int(count),
    )


def _reason(exc: BaseException) -> str:
    """The root cause of a ``requests`` error in a few words (``Connection refused``), one line."""
    text = str(exc)
    for pattern in (
        r"\[Errno -?\d+\] ([^'\")\]]+)",  # [Errno 111] Connection refused
        r"\w+Error\(\d+, '([^']+)'\)",  # ConnectionResetError(104, 'Connection reset by peer')
        r"RemoteDisconnected\('([^']+)'\)",
        r"(Read timed out|Connect timeout|certificate verify failed[^'\")]*)",
    ):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip().rstrip(".")
    return " ".join(text.split())[:200] or type(exc).__name__


class DicomwebServer:
    """One DICOMweb service (its base URL, e.g. ``http://localhost:8042/dicom-web`` for Orthanc).

    Args:
        url: the service's base URL (:func:`check_url`).
        credentials: default :func:`credentials_from_environment`.
        timeout: ``(connect, read)`` seconds for each request.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.url = check_url(url)
        self.credentials = credentials or credentials_from_environment(self.url)
        session = requests.Session()
        session.auth = self.credentials.auth
        session.verify = True  # explicit: a certificate is always checked (REQUESTS_CA_BUNDLE adds a CA)
        try:
            self._client = DICOMwebClient(self.url, session=session, timeout=timeout)
        except ValueError as e:
            raise ConfigError(f"--dicomweb {self.url}: {e}") from e
        # one try per request: the client would otherwise repeat any failed request (a refused
        # connection, a dropped store) for seconds; the caller decides (watch backs off and retries)
        self._client.set_http_retry_params(retry=False)

    def warnings(self) -> list[str]:
        """Why this connection is unsafe, if it is: credentials sent in clear text to another host."""
        if self.credentials.auth is not None and self.url.startswith("http://") and not is_loopback(self.url):
            return [
                f"{self.url} is plain http: the credentials ({self.credentials.source}) travel unencrypted"
            ]
        return []

    def _call(self, doing: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``function(*args, **kwargs)`` with every failure as one :class:`DicomwebError` line."""
        import requests

        try:
            return function(*args, **kwargs)
        except requests.exceptions.SSLError as e:
            raise DicomwebError(
                f"{self.url}: TLS certificate check failed while {doing} ({_reason(e)}); "
                "give your CA bundle with REQUESTS_CA_BUNDLE"
            ) from e
        except requests.exceptions.Timeout as e:
            raise DicomwebError(f"{self.url}: no answer in time while {doing} ({_reason(e)})") from e
        except requests.exceptions.ConnectionError as e:
            raise DicomwebError(f"{self.url}: connection failed while {doing} ({_reason(e)})") from e
        except requests.exceptions.HTTPError as e:
            status = e.response.status_code if e.response is not None else 0
            reason = e.response.reason if e.response is not None else ""
            hint = ""
            if status == 401:
                hint = (
                    f": the server refused the credentials ({self.credentials.source}); set "
                    f"{ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN}, or a netrc entry for the host"
                )
            elif status == 403:
                hint = f": these credentials ({self.credentials.source}) may not do this"
            raise DicomwebError(f"{self.url}: HTTP {status} {reason} while {doing}{hint}") from e
        except requests.exceptions.RequestException as e:
            raise DicomwebError(f"{self.url}: request failed while {doing} ({_reason(e)})") from e
        except ValueError as e:  # dicomweb-client: an invalid UID, an unexpected media type
            raise DicomwebError(f"{self.url}: {doing}: {' '.join(str(e).split())}") from e

    def study_exists(self, study_uid: str) -> bool:
        found = self._call(
            f"searching for study {study_uid}",
            self._client.search_for_studies,
            search_filters={"StudyInstanceUID": study_uid},
            fields=["StudyInstanceUID"],
        )
        return any(_value(item, "StudyInstanceUID") == study_uid for item in found)

    def series_of_study(self, study_uid: str) -> list[RemoteSeries]:
        """Every series of a study; a :class:`DicomwebError` when the server has no such study."""
        if not self.study_exists(study_uid):
            raise DicomwebError(f"{self.url}: no study with StudyInstanceUID {study_uid}")
        found = self._call(
            f"searching for the series of study {study_uid}",
            self._client.search_for_series,
            study_instance_uid=study_uid,
            fields=list(_SERIES_FIELDS),
            get_remaining=True,
        )
        return sorted((series_from_json(item, study_uid) for item in found), key=lambda s: s.series_uid)

    def search_series(self, filters: Mapping[str, str] | None = None) -> list[RemoteSeries]:
        """The series of all studies that match QIDO-RS ``filters`` (keyword → value, ``*`` wildcards)."""
        found = self._call(
            "searching for series",
            self._client.search_for_series,
            search_filters=dict(filters or {}),
            fields=list(_SERIES_FIELDS),
            get_remaining=True,
        )
        return [series_from_json(item) for item in found]

    def retrieve_series(self, series: RemoteSeries, folder: str | Path) -> list[Path]:
        """Write the series' instances into ``folder`` as ``<SOPInstanceUID>.dcm`` (WADO-RS, one
        instance in memory at a time); a :class:`DicomwebError` when fewer arrive than QIDO-RS
        announced."""
        folder = Path(folder)

        def write_each() -> list[Path]:
            paths = []
            for ds in self._client.iter_series(series.study_uid, series.series_uid):
                path = folder / f"{ds.SOPInstanceUID}.dcm"
                with atomic_write(path, "wb") as handle:
                    ds.save_as(handle, enforce_file_format=True)
                paths.append(path)
            return paths

        paths = self._call(f"retrieving series {series.series_uid}", write_each)
        if series.n_instances is not None and len(paths) < series.n_instances:
            raise DicomwebError(
                f"{self.url}: retrieved {len(paths)} of the {series.n_instances} instances of series "
                f"{series.series_uid}"
            )
        return paths

    def series_metadata(self, study_uid: str, series_uid: str) -> list[Any]:
        """The instances of a series as pydicom datasets without bulk data (WADO-RS metadata)."""
        import pydicom

        items = self._call(
            f"reading the metadata of series {series_uid}",
            self._client.retrieve_series_metadata,
            study_uid,
            series_uid,
        )
        return [pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda uri: b"") for item in items]

    def has_instance(self, study_uid: str, sop_instance_uid: str) -> bool:
        found = self._call(
            f"searching for instance {sop_instance_uid}",
            self._client.search_for_instances,
            study_instance_uid=study_uid,
            search_filters={"SOPInstanceUID": sop_instance_uid},
            fields=["SOPInstanceUID"],
        )
        return any(_value(item, "SOPInstanceUID") == sop_instance_uid for item in found)

    def store(self, path: str | Path) -> str:
        """Store one DICOM file (STOW-RS); its SOPInstanceUID. A :class:`DicomwebError` when the
        server lists it as failed."""
        import pydicom

        dataset = pydicom.dcmread(path)
        sop = str(dataset.SOPInstanceUID)
        response = self._call(
            f"storing {Path(path).name}",
            self._client.store_instances,
            [dataset],
            str(dataset.StudyInstanceUID),
        )
        for failed in response.get("FailedSOPSequence", None) or []:
            raise DicomwebError(
                f"{self.url}: the server refused {Path(path).name} "
                f"(failure reason {failed.get('FailureReason', '?')})"
            )
        return sop


def image_series(series: Sequence[RemoteSeries]) -> list[RemoteSeries]:
    """The series that hold images to segment (no SEG, SR, RTSTRUCT, …)."""
    return [s for s in series if s.is_image]
