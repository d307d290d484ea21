"""``databuild dashboard``: a one-time login link from the workspace's service (SPEC §8)."""

from __future__ import annotations

import http.client
import stat
from pathlib import Path
from urllib.parse import urlsplit

from tests.polling import poll_until


def visit(url: str) -> http.client.HTTPResponse:
    """GET ``url`` as a browser does: a ``*.localhost`` name (the dashboard's own) reaches the
    loopback address whatever the system's resolver says (RFC 6761)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.hostname.endswith(".localhost"), url
    connection = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=30)
    connection.request("GET", f"{parts.path}?{parts.query}", headers={"Host": parts.netloc})
    return connection.getresponse()


def test_dashboard_prints_a_link_that_logs_in_once(databuild, workspace: Path) -> None:
    result = databuild("dashboard", env={"DISPLAY": ""})
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    assert "/login?code=" in url
    assert "within 60 s" in result.stderr
    first = visit(url)
    assert first.status == 303 and first.getheader("location") == "/"
    cookie = first.getheader("set-cookie")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert visit(url).status == 403


def test_dashboard_opens_the_link_where_a_desktop_browser_exists(
    databuild, workspace: Path, tmp_path: Path
) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IXUSR)
    result = databuild("dashboard", env={"DISPLAY": ":0", "BROWSER": str(browser)})
    assert result.returncode == 0, result.stderr
    poll_until(lambda: opened.exists() and opened.read_text().strip(), "the browser to be run")
    assert opened.read_text().strip() == result.stdout.strip()
