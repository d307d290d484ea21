"""A job run's log over HTTP: pages by line index, or followed live as Server-Sent Events.

Files are read on a thread, a page (or, when following, a batch) at a time: memory stays flat
whatever the size of the log. A followed log waits for its reader before reading on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.server import Request

from databuild.bel import JobStatus
from databuild.executor.runlog import count_lines, find_run_log, position_of, read_from, read_page
from databuild.service.responses import query_int, whole_number
from databuild.service.sse import EventStream, frame

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000
FOLLOW_POLL_S = 0.2
LINE_EVENT = "log_line"
END_EVENT = "log_end"

TaskStatus = Callable[[], Awaitable[str | None]]
"""The current status of the followed task (None if it is unknown)."""


def log_page(
    state_dir: Path, job_run_id: str, offset: int, limit: int, tail: int | None
) -> dict[str, Any]:
    """The answer to ``GET /api/v1/tasks/{id}/logs`` (blocking: run it on a thread)."""
    path = find_run_log(state_dir, job_run_id)
    if path is None:
        return {"job_run_id": job_run_id, "offset": 0, "lines": [], "next_offset": 0,
                "more": False}
    if tail is not None:
        offset = max(0, count_lines(path) - tail)
    lines, next_offset, more = read_page(path, offset, limit)
    return {"job_run_id": job_run_id, "offset": offset, "lines": lines,
            "next_offset": next_offset, "more": more}


async def follow_start(
    request: Request, state_dir: Path, job_run_id: str, offset: int, tail: int | None
) -> int:
    """The index a followed log starts at: after ``Last-Event-ID``, else ``offset``, else
    ``tail`` lines before its end."""
    resumed = request.getHeader(b"last-event-id")
    if resumed is not None:
        return whole_number(resumed.decode("latin-1"), "Last-Event-ID", 0) + 1
    if tail is None:
        return offset
    path = await deferToThread(find_run_log, state_dir, job_run_id)
    return 0 if path is None else max(0, await deferToThread(count_lines, path) - tail)


class LogFollower:
    """Streams a run's log lines from index ``start`` until the run has ended and every line
    is sent; then a ``log_end`` frame, and the stream is over.

    Each line is a ``log_line`` frame whose ``id`` is its index, so a reader resumes with
    ``Last-Event-ID``.
    """

    def __init__(
        self,
        stream: EventStream,
        clock: IReactorTime,
        state_dir: Path,
        job_run_id: str,
        status: TaskStatus,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._state_dir = state_dir
        self._job_run_id = job_run_id
        self._status = status

    async def run(self, start: int) -> None:
        """Follow the log from line ``start``; returns when the stream is over."""
        stream = self._stream
        stream.open()
        path: Path | None = None
        position, index = 0, 0
        ended = False
        while not stream.closed:
            if path is None:
                path = await deferToThread(find_run_log, self._state_dir, self._job_run_id)
                if path is not None:
                    position, index = await deferToThread(position_of, path, start)
            more = False
            if path is not None:
                await stream.writable()
                lines, position, more = await deferToThread(
                    read_from, path, position, DEFAULT_LIMIT
                )
                for line in lines:
                    if index >= start:  # a start past the end of the log so far
                        stream.write(frame(LINE_EVENT, line, index))
                    index += 1
            if more:
                continue
            if ended:
                break
            status = await self._status()
            # Once the run has ended nothing more is written: one more read, and done.
            ended = status is None or JobStatus.parse(status).final
            if not ended:
                await deferLater(self._clock, FOLLOW_POLL_S, lambda: None)
        stream.write(frame(END_EVENT, {"job_run_id": self._job_run_id, "next_offset": index}))
        await stream.end()


async def follow(
    request: Request,
    clock: IReactorTime,
    keepalive_s: float,
    state_dir: Path,
    job_run_id: str,
    status: TaskStatus,
) -> None:
    """Answer ``request`` with the run's log followed live (``?offset=``, ``?tail=``,
    ``Last-Event-ID``), for the API and the dashboard's run page alike."""
    offset = query_int(request, "offset", 0, 0)
    tail = query_int(request, "tail", None, 0)
    stream = EventStream(request, clock, keepalive_s)
    follower = LogFollower(stream, clock, state_dir, job_run_id, status)
    await follower.run(await follow_start(request, state_dir, job_run_id, offset, tail))
