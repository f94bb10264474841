"""A real Orthanc with its DICOMweb plugin, for the PACS tests (a helper module, not a test file).

Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``.ci/run`` installs them when it runs as
root); :func:`missing_reason` says why the tests skip without them. Each :class:`OrthancServer`
gets a free loopback port, its own configuration and storage under a temporary folder, HTTP basic
authentication, no DICOM (DIMSE) port, and ``RemoteAccessAllowed: false`` (Orthanc 1.10 has no
bind address option: it refuses every client that is not on loopback, and the tests only use
127.0.0.1). :class:`FaultProxy` sits between a client and Orthanc to make a request fail on the
wire, e.g. the server going down in the middle of a STOW-RS store.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ORTHANC_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
)
USER, PASSWORD = "medseg-test", "s3cret-pacs-password"


def orthanc_executable() -> str | None:
    found = shutil.which("Orthanc")
    return found or next((p for p in ORTHANC_CANDIDATES if Path(p).is_file()), None)


def dicomweb_plugin() -> str | None:
    for candidate in PLUGIN_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    matches = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))
    return str(matches[0]) if matches else None


def missing_reason() -> str | None:
    """Why the Orthanc tests cannot run here, or None."""
    if orthanc_executable() is None:
        return "Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb)"
    if dicomweb_plugin() is None:
        return "the Orthanc DICOMweb plugin is not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OrthancServer:
    """One Orthanc process; :meth:`stop` always ends it (the fixtures call it in ``finally``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """The DICOMweb base URL (loopback)."""
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def _config(self) -> Path:
        config = {
            "Name": "medseg-test",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [dicomweb_plugin()],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
            "HttpThreadsCount": 4,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "ExecuteLuaEnabled": False,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        return path

    def _answers(self) -> bool:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/system", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def start(self, timeout: float = 20.0) -> OrthancServer:
        """Start on ``self.port`` (a restart keeps the port and the stored instances)."""
        executable = orthanc_executable()
        assert executable is not None, missing_reason()
        log = (self.folder / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [executable, str(self._config())], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.folder / "orthanc.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Orthanc exited with code {self.process.returncode}:\n{tail}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Kill the process: a clean shutdown takes Orthanc seconds, and a killed server is what
        the fault tests want anyway (SQLite recovers its journal on the next start)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


class FaultProxy:
    """A loopback TCP proxy in front of ``target_port`` (one thread per connection).

    ``on_post`` runs when a client's request is a POST (a STOW-RS store), before anything of it
    reaches the server; the proxy then drops that client's connection, as a server that goes down
    in mid-store would. ``on_post`` returns whether to drop (False: pass the request on).
    """

    def __init__(self, target_port: int, on_post: Callable[[], bool]) -> None:
        self.target_port = target_port
        self.on_post = on_post
        self.posts_dropped = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed: the proxy is shutting down
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            first = client.recv(65536)
            if first.startswith(b"POST") and self.on_post():
                self.posts_dropped += 1
                return  # closing the client socket mid-request
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=30)
            except OSError:
                return  # the server is down: the client sees its connection dropped
            with upstream:
                upstream.sendall(first)
                pump = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
                pump.start()
                _pipe(client, upstream)
                pump.join(timeout=30)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until ``source`` closes, then half-close ``sink``."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        return  # the other side went away: nothing left to copy
