"""Run logs: every line a job run prints, one JSON object per line (SPEC §3.2).

A run's log lives at ``.databuild/logs/<YYYY-MM-DD>/<job_run_id>.jsonl``, the date being the
UTC day the run started; a run that prints nothing has no file. Lines are appended to a
buffered file and flushed at most ``FLUSH_DELAY_S`` after they arrive (and when the run ends),
so a chatty job costs one small write per burst rather than one per line, and a reader sees a
line within that delay.

A line of over ``MAX_LINE_BYTES`` is stored in pieces, each but the last marked
``"continued": true``. Readers page through a log by line index and never hold more than a
page of it (``read_page``, ``read_from``), whatever its size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

LOGS_DIR = "logs"
FLUSH_DELAY_S = 0.1
MAX_LINE_BYTES = 1024 * 1024
"""The longest piece of a line stored as one record."""
PAGE_BYTES = 4 * 1024 * 1024
"""A page of log holds at most this much stored JSON (and at least one line)."""
MAX_RECORD_BYTES = 8 * MAX_LINE_BYTES
"""A stored record longer than this (only a log written without the cap) is left out."""


def run_log_path(state_dir: Path, job_run_id: str, started_ns: int) -> Path:
    """Where the log of ``job_run_id``, started at ``started_ns``, lives."""
    day = time.strftime("%Y-%m-%d", time.gmtime(started_ns // 1_000_000_000))
    return state_dir.joinpath(LOGS_DIR, day, f"{job_run_id}.jsonl")


def find_run_log(state_dir: Path, job_run_id: str) -> Path | None:
    """The log file of ``job_run_id``, whatever day it started, or None if there is none."""
    matches = sorted((state_dir / LOGS_DIR).glob(f"*/{job_run_id}.jsonl"))
    return matches[-1] if matches else None


def read_run_log(path: Path) -> list[dict[str, Any]]:
    """All the lines of a run log (for small logs and tests; the API pages with read_page)."""
    return read_from(path, 0, None, None)[0]


def read_page(
    path: Path, offset: int, limit: int, max_bytes: int = PAGE_BYTES
) -> tuple[list[dict[str, Any]], int, bool]:
    """Lines ``offset``.. of a log, at most ``limit`` and about ``max_bytes``; the index after
    the last one, and whether more lines follow. Lines before ``offset`` are skipped over,
    not kept."""
    position, index = position_of(path, offset)
    lines, _, more = read_from(path, position, limit, max_bytes)
    return lines, index + len(lines), more


def count_lines(path: Path) -> int:
    """How many whole lines a log holds (read in blocks, so in flat memory)."""
    count = 0
    try:
        with path.open("rb") as f:
            while block := f.read(1024 * 1024):
                count += block.count(b"\n")
    except FileNotFoundError:
        pass
    return count


def position_of(path: Path, offset: int) -> tuple[int, int]:
    """The byte position of line ``offset`` of a log and the index there (fewer lines: the
    end); a log not written yet is at ``(0, 0)``."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return 0, 0
    with f:
        for index in range(offset):
            if not _next_line(f)[1]:
                return f.tell(), index
        return f.tell(), offset


def read_from(
    path: Path, position: int, limit: int | None, max_bytes: int | None = PAGE_BYTES
) -> tuple[list[dict[str, Any]], int, bool]:
    """The whole lines stored from byte ``position`` on (at most ``limit`` and about
    ``max_bytes``), the position after them, and whether more whole lines follow. A torn last
    line (being written, or the writer died) is left for later."""
    lines: list[dict[str, Any]] = []
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return lines, position, False
    size = 0
    with f:
        f.seek(position)
        while True:
            record, length = _next_record(f)
            if not length:
                return lines, position, False
            if (limit is not None and len(lines) >= limit) or (
                max_bytes is not None and size >= max_bytes
            ):
                return lines, position, True
            lines.append(record)
            size += length
            position += length


def _next_record(f: IO[bytes]) -> tuple[dict[str, Any], int]:
    """The next whole line of ``f`` and its length; length 0 at the end or at a torn line."""
    raw, length = _next_line(f)
    if raw is None:
        text = f"databuild: a stored line of over {MAX_RECORD_BYTES} bytes was left out"
        return {"time": 0, "stream": "stderr", "text": text}, length
    if not length:
        return {}, 0
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        record = {"time": 0, "stream": "stderr", "text": "databuild: an unreadable line"}
    return record, length


def _next_line(f: IO[bytes]) -> tuple[bytes | None, int]:
    """The next whole line of ``f`` (None if over MAX_RECORD_BYTES) and its length; length 0
    at the end or at a torn line, ``f`` being left where that line starts."""
    start = f.tell()
    raw = f.readline(MAX_RECORD_BYTES)
    if raw.endswith(b"\n"):
        return raw, len(raw)
    if len(raw) == MAX_RECORD_BYTES:
        while (more := f.readline(MAX_RECORD_BYTES)) and not more.endswith(b"\n"):
            pass
        if more:
            return None, f.tell() - start
    f.seek(start)
    return b"", 0


def log_record(
    stream: str, text: str, time_ns: int, *, continued: bool = False
) -> dict[str, Any]:
    """One log line as stored: time, stream, text, and ``data`` for a JSON-object stdout line;
    a piece of a longer line is marked ``continued`` instead."""
    record: dict[str, Any] = {"time": time_ns, "stream": stream, "text": text}
    if continued:
        record["continued"] = True
    elif stream == "stdout" and text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            record["data"] = data
    return record


class RunLogWriter:
    """Appends the lines of one job run to its log file, created with the first line."""

    def __init__(self, reactor: IReactorTime, path: Path) -> None:
        self._reactor = reactor
        self.path = path
        self._file: IO[str] | None = None
        self._closed = False
        self._flush_call: IDelayedCall | None = None

    def line(self, stream: str, text: str, continued: bool = False) -> None:
        """Append one line (or a ``continued`` piece); it reaches the file within
        FLUSH_DELAY_S."""
        if self._closed:
            return
        record = log_record(stream, text, time.time_ns(), continued=continued)
        self._write(json.dumps(record, ensure_ascii=False) + "\n")

    def records(self, lines: Sequence[str]) -> None:
        """Append lines already stored elsewhere as JSON records (a remote run's, SPEC §10)."""
        if self._closed or not lines:
            return
        self._write("".join(line + "\n" for line in lines))

    def _write(self, text: str) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(text)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(FLUSH_DELAY_S, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flush what is buffered and close the file."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None
