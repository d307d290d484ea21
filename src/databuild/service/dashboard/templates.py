"""The dashboard's Jinja environment: templates shipped in the package, autoescaped."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from databuild.bel.shapes import BUILD_FINISHED, EVENT_TYPES


def when(ns: int | None) -> str:
    """A Unix-nanosecond time as UTC text."""
    if ns is None:
        return "—"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(ns: int | None) -> str:
    """How long ago ``ns`` was, briefly."""
    if ns is None:
        return "—"
    seconds = max(0.0, time.time() - ns / 1e9)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def seconds(value: float | None) -> str:
    """A duration in seconds, briefly."""
    if value is None:
        return "—"
    if value < 60:
        return f"{value:.2f} s"
    return f"{value / 60:.1f} min" if value < 3600 else f"{value / 3600:.1f} h"


def middle(text: str, n: int) -> str:
    """``text`` in at most ``n`` characters, cut in the middle: refs differ at their end."""
    if len(text) <= n:
        return text
    head = -(-(n - 1) * 35 // 100)
    return text[:head] + "…" + text[len(text) - (n - 1 - head) :]


def short(status: str | None) -> str:
    """``BUILD_REQUEST_COMPLETED`` → ``completed``."""
    if not status:
        return ""
    for prefix in ("BUILD_REQUEST_", "JOB_", "PARTITION_"):
        if status.startswith(prefix):
            return status[len(prefix) :].lower()
    return status.lower()


WORST_FIRST = (
    "PARTITION_FAILED", "PARTITION_BUILDING", "PARTITION_SCHEDULED", "PARTITION_REQUESTED",
    "PARTITION_DELEGATED", "PARTITION_AVAILABLE",
)
"""How a status strip's segment is coloured: by the first of these its partitions have."""


def worst(statuses: dict[str, int]) -> str:
    """The status a segment of a dataset's strip shows (``WORST_FIRST``)."""
    return next((s for s in WORST_FIRST if statuses.get(s)), "")


def segment(value: str) -> str:
    """``value`` as one percent-encoded path segment."""
    return quote(value, safe="")


def to_json(value: Any) -> Markup:
    """JSON safe to put inside a ``<script type="application/json">``."""
    text = json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text.replace("&", "\\u0026"))


def query(params: dict[str, Any]) -> str:
    """A query string of the non-empty ``params``."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


ENV = Environment(
    loader=PackageLoader("databuild.service.dashboard", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters.update(when=when, ago=ago, seconds=seconds, short=short, segment=segment,
                   json=to_json, query=query, middle=middle, worst=worst)
# The log's event types, for the pages' scripts (static/live.js follows them).
ENV.globals.update(event_types=list(EVENT_TYPES), build_finished=BUILD_FINISHED)


def render(name: str, **context: Any) -> bytes:
    """Template ``name`` filled with ``context``, as UTF-8."""
    return ENV.get_template(name).render(**context).encode("utf-8")
