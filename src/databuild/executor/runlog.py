"""Run logs: every line a job run prints, one JSON object per line (SPEC §3.2).

A run's log lives at ``.databuild/logs/<YYYY-MM-DD>/<job_run_id>.jsonl``, the date being the
UTC day the run started; a run that prints nothing has no file. Lines are appended to a
buffered file and flushed at most ``FLUSH_DELAY_S`` after they arrive (and when the run ends),
so a chatty job costs one small write per burst rather than one per line, and a reader sees a
line within that delay.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

LOGS_DIR = "logs"
FLUSH_DELAY_S = 0.1


def run_log_path(state_dir: Path, job_run_id: str, started_ns: int) -> Path:
    """Where the log of ``job_run_id``, started at ``started_ns``, lives."""
    day = datetime.fromtimestamp(started_ns / 1e9, tz=UTC).strftime("%Y-%m-%d")
    return state_dir / LOGS_DIR / day / f"{job_run_id}.jsonl"


def find_run_log(state_dir: Path, job_run_id: str) -> Path | None:
    """The log file of ``job_run_id``, whatever day it started, or None if there is none."""
    matches = sorted((state_dir / LOGS_DIR).glob(f"*/{job_run_id}.jsonl"))
    return matches[-1] if matches else None


def read_run_log(path: Path) -> list[dict[str, Any]]:
    """The lines of a run log; a torn last line (the writer died mid-line) is left out."""
    lines = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue
    return lines


def log_record(stream: str, text: str, time_ns: int) -> dict[str, Any]:
    """One log line as stored: time, stream, text, and ``data`` for a JSON-object stdout line."""
    record: dict[str, Any] = {"time": time_ns, "stream": stream, "text": text}
    if stream == "stdout" and text.startswith("{"):
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

    def line(self, stream: str, text: str) -> None:
        """Append one line; it reaches the file within FLUSH_DELAY_S."""
        if self._closed:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(log_record(stream, text, time.time_ns())) + "\n")
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
