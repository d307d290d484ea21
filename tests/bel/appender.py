"""A child for the kill -9 test: appends events forever, printing each acknowledged one.

Usage: appender.py URI WORKSPACE. Each round records 20 builds concurrently, each with a job
run that starts and completes, so appends keep queueing up behind commits. Every line printed
is ``<idx> <event_id>`` of an append whose Deferred has fired.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults

from databuild.bel import (
    BuildRequestEvent,
    Event,
    EventLog,
    JobEvent,
    open_event_log,
)


def acknowledge(event: Event) -> Event:
    sys.stdout.write(f"{event.idx} {event.event_id}\n")
    sys.stdout.flush()
    return event


async def one_build(log: EventLog, build_id: str) -> None:
    def append(payload: object) -> Deferred[Event]:
        return log.append(Event(build_id, payload)).addCallback(acknowledge)  # type: ignore[arg-type]

    await append(BuildRequestEvent("received", ("out/1",)))
    for status in ("planning", "analysis_completed", "executing"):
        await append(BuildRequestEvent(status))
    for status in ("scheduled", "running", "completed"):
        await append(JobEvent(f"{build_id}-run", "job", status, ("out/1",)))
    await append(BuildRequestEvent("completed"))


async def main(reactor: object, uri: str, workspace: str) -> None:
    log = open_event_log(uri, Path(workspace), reactor)
    await log.open()
    for round_number in itertools.count():
        await gatherResults(
            [ensureDeferred(one_build(log, f"b{round_number}-{i}")) for i in range(20)]
        )


if __name__ == "__main__":
    task.react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:3])))
