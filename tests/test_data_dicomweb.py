"""The DICOMweb client wrapper without a PACS: URLs, where credentials come from (and that they are
never printed or logged), a bearer token on the wire, TLS verified by default, one-line errors.
The round trip against a real Orthanc is tests/test_engine_pacs.py."""

from __future__ import annotations

import http.server
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from medseg.data.dicomweb import (
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USER,
    BearerAuth,
    Credentials,
    DicomwebError,
    DicomwebServer,
    RemoteSeries,
    _reason,
    check_uid,
    check_url,
    credentials_from_environment,
    image_series,
    is_loopback,
    series_from_json,
)
from medseg.errors import ConfigError


def test_check_url() -> None:
    assert check_url(" https://pacs.example.org/dicom-web/ ") == "https://pacs.example.org/dicom-web"
    with pytest.raises(ConfigError, match="must not contain credentials"):
        check_url("https://bob:pw@pacs.example.org/dicom-web")
    with pytest.raises(ConfigError, match="http:// or https://"):
        check_url("ftp://pacs.example.org")
    with pytest.raises(ConfigError, match="http:// or https://"):
        check_url("pacs.example.org/dicom-web")
    with pytest.raises(ConfigError, match="without \\?query"):
        check_url("http://pacs.example.org/dicom-web?x=1")


def test_check_uid() -> None:
    assert check_uid("1.2.840.10008", "--study") == "1.2.840.10008"
    for bad in ("", "1..2", "1.2.", "abc", "1." + "2" * 70):
        with pytest.raises(ConfigError, match="is not a DICOM UID"):
            check_uid(bad, "--study")


def test_credentials_come_from_the_environment_or_netrc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://pacs.example.org/dicom-web"
    monkeypatch.setenv("NETRC", str(tmp_path / "absent"))
    token = credentials_from_environment(url, {ENV_TOKEN: "tok-123"})
    assert token.source == f"bearer token from {ENV_TOKEN}" and isinstance(token.auth, BearerAuth)
    basic = credentials_from_environment(url, {ENV_USER: "bob", ENV_PASSWORD: "pw-456"})
    assert isinstance(basic.auth, requests.auth.HTTPBasicAuth)
    assert (basic.auth.username, basic.auth.password) == ("bob", "pw-456")
    assert "pw-456" not in repr(basic) and "tok-123" not in repr(token) and "tok-123" not in repr(token.auth)
    assert credentials_from_environment(url, {}) == Credentials("no credentials")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.example.org login carol password pw-789\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    from_netrc = credentials_from_environment(url, {})
    assert from_netrc.source == "netrc entry of pacs.example.org"
    assert (from_netrc.auth.username, from_netrc.auth.password) == ("carol", "pw-789")
    assert credentials_from_environment("https://other.example.org", {}).auth is None
    with pytest.raises(ConfigError, match="not both"):
        credentials_from_environment(url, {ENV_TOKEN: "t", ENV_USER: "bob"})
    with pytest.raises(ConfigError, match=f"{ENV_PASSWORD} is not set"):
        credentials_from_environment(url, {ENV_USER: "bob"})
    with pytest.raises(ConfigError, match=f"{ENV_USER} is not set"):
        credentials_from_environment(url, {ENV_PASSWORD: "pw"})


def test_bearer_auth_sets_the_header() -> None:
    prepared = requests.Request("GET", "https://pacs.example.org/x").prepare()
    assert BearerAuth("tok")(prepared).headers["Authorization"] == "Bearer tok"


def test_reason_finds_the_root_cause() -> None:
    refused = requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /x (Caused by "
        "NewConnectionError('<urllib3.connection.HTTPConnection object at 0x7f>: Failed to establish a "
        "new connection: [Errno 111] Connection refused'))"
    )
    assert _reason(refused) == "Connection refused"
    dropped = "('Connection aborted.', RemoteDisconnected('Remote end closed connection without response'))"
    assert (
        _reason(requests.exceptions.ConnectionError(dropped))
        == "Remote end closed connection without response"
    )
    reset = "('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))"
    assert _reason(requests.exceptions.ConnectionError(reset)) == "Connection reset by peer"
    assert _reason(ValueError("two\nlines")) == "two lines"


def test_series_from_qido_json() -> None:
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2"]},
        "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0008103E": {"vr": "LO", "Value": ["abdomen"]},
        "00201209": {"vr": "IS", "Value": [40]},
    }
    series = series_from_json(item)
    assert series == RemoteSeries("1.2", "1.2.3", "CT", "abdomen", "", 40)
    assert series.is_image and series.describe() == "1.2.3 (CT 'abdomen', 40 instances)"
    seg = series_from_json({"00080060": {"vr": "CS", "Value": ["SEG"]}}, study_uid="9.9")
    assert seg.study_uid == "9.9" and seg.n_instances is None and not seg.is_image
    assert image_series([series, seg]) == [series]


def test_loopback_and_clear_text_warnings() -> None:
    assert is_loopback("http://127.0.0.1:8042/dicom-web") and is_loopback("http://localhost/x")
    assert is_loopback("http://[::1]:8042/x") and not is_loopback("http://pacs.example.org/x")
    with_password = Credentials("user bob", requests.auth.HTTPBasicAuth("bob", "pw"))
    assert DicomwebServer("http://127.0.0.1:1/dicom-web", with_password).warnings() == []
    (warning,) = DicomwebServer("http://pacs.example.org/dicom-web", with_password).warnings()
    assert "travel unencrypted" in warning and "pw" not in warning
    assert DicomwebServer("http://pacs.example.org/dicom-web", Credentials("none")).warnings() == []


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every QIDO-RS search with no results and records the Authorization header."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        type(self).seen.append(self.headers.get("Authorization"))
        body = json.dumps([]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return  # keep the test output quiet


@pytest.fixture()
def http_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_a_bearer_token_goes_on_the_wire_and_never_into_logs(
    http_server: http.server.HTTPServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(ENV_TOKEN, "tok-secret-42")
    monkeypatch.delenv(ENV_USER, raising=False)
    monkeypatch.delenv(ENV_PASSWORD, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    _RecordingHandler.seen = []
    url = f"http://127.0.0.1:{http_server.server_address[1]}/dicom-web"
    with caplog.at_level(logging.DEBUG):
        server = DicomwebServer(url)
        assert not server.study_exists("1.2.3")
        with pytest.raises(DicomwebError, match="no study with StudyInstanceUID 1.2.3"):
            server.series_of_study("1.2.3")
    assert _RecordingHandler.seen == ["Bearer tok-secret-42"] * 2
    assert "tok-secret-42" not in caplog.text and "tok-secret-42" not in repr(server.credentials)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_and_a_bad_uid_are_one_line_errors() -> None:
    server = DicomwebServer(f"http://127.0.0.1:{closed_port()}/dicom-web", Credentials("no credentials"))
    with pytest.raises(
        DicomwebError, match=r"connection failed while searching for study 1\.2 \(Connection refused\)"
    ):
        server.study_exists("1.2")
    with pytest.raises(DicomwebError, match="reading the series: .*not a uid"):
        server._call("reading the series", server._client.search_for_series, "not a uid")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command makes the test certificate")
def test_tls_certificates_are_verified_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A self-signed certificate is refused with a one-line error; given as the CA bundle
    (REQUESTS_CA_BUNDLE), it is accepted."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.HTTPServer(("127.0.0.1", 0), _RecordingHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.handle_error = lambda request, address: None  # type: ignore[method-assign]  # refused handshakes
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    url = f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    try:
        with pytest.raises(DicomwebError, match="TLS certificate check failed.*REQUESTS_CA_BUNDLE"):
            DicomwebServer(url, Credentials("no credentials")).study_exists("1.2")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert not DicomwebServer(url, Credentials("no credentials")).study_exists("1.2")
    finally:
        server.shutdown()
        server.server_close()
