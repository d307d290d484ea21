"""The dashboard's session belongs to its service alone (SPEC §8): Debian's Chromium, logged in
with the link ``databuild dashboard`` prints, then sent to pages of another server on another
port of the same host, which record every cookie they receive."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests.service.browser import chromium

from .conftest import Run


class Recorder(BaseHTTPRequestHandler):
    """A page that records the ``Host`` and ``Cookie`` of every request it gets."""

    def do_GET(self) -> None:
        self.server.seen.append(  # type: ignore[attr-defined]
            (self.headers.get("Host"), self.path, self.headers.get("Cookie") or "")
        )
        body = b"<html><body>another local server</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def other_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_session_cookie_never_reaches_another_local_server(
    databuild: Run, workspace: Path, tmp_path: Path, other_server: ThreadingHTTPServer
) -> None:
    printed = databuild("dashboard", env={"DISPLAY": ""})
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    service_port = urlsplit(link).port
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(link)
        home = driver.current_url.rstrip("/")
        assert urlsplit(home).port == service_port and "/welcome" not in home
        driver.get(home + "/builds")
        assert driver.current_url == home + "/builds"  # the session holds
        assert any(c["name"].startswith("databuild_session") for c in driver.get_cookies())
        port = other_server.server_address[1]
        for page in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/builds",
                     f"http://127.0.0.1:{port}/api/v1/builds"):
            driver.get(page)
            assert "another local server" in driver.page_source
    finally:
        driver.quit()
    seen = other_server.seen  # type: ignore[attr-defined]
    assert {path for _, path, _ in seen} >= {"/", "/builds", "/api/v1/builds"}
    assert not [s for s in seen if "databuild" in s[2]], seen
