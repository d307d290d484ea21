"""A real headless Chromium driven by Selenium, and blocking calls to a service's API."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from tests.service.conftest import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,1000",
)


def chromium(profile: Path) -> Any:
    """A Chromium with a fresh profile, logging the page's console.

    Without one the test skips on a developer's machine, but fails under CI (``CI`` set),
    whose ``.ci/run`` installs them: a skip there would hide a missing install step.
    """
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))


def api(service: Service, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One blocking API call with the service's token: status and decoded JSON."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        service.url + path, data=data, method=method, headers=service.headers()
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def login_url(service: Service) -> str:
    """A fresh one-time login link, as ``databuild dashboard`` prints it: at the dashboard's
    own name, ``<random>.localhost`` on the service's port (docs/dashboard.md)."""
    code, body = api(service, "POST", "/api/v1/dashboard/login-code")
    assert code == 200, body
    return str(body["login_url"])


def dashboard_url(service: Service) -> str:
    """Where a browser reaches the service's dashboard (its own name, the service's port)."""
    return login_url(service).partition("/login?")[0]


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The browser console's errors since the last call."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


class CuttableProxy:
    """A TCP relay in front of a service whose open connections a test can cut at will.

    It runs on threads of its own (the browser tests block; no reactor runs in them).
    """

    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection open now (new ones are relayed as before)."""
        with self._lock:
            cut, self._open = self._open, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()
