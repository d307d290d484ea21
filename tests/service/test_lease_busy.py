"""A reactor busy for longer than the lease timeout keeps its lease (SPEC §5.8, §9)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest_twisted
from tests.polling import poll_until_async
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from databuild.bel import open_event_log
from databuild.bel.services import Identity
from databuild.proc.info import start_ticks
from databuild.service.lease import LeaseKeeper

HEARTBEAT_S = 0.2
LEASE_S = 1.5
BUSY_S = 3 * LEASE_S


def busy_for(
    seconds: float, renewed_at: Callable[[], float | None]
) -> Deferred[tuple[float, float, float | None]]:
    """Hold the reactor's thread in a CPU loop for ``seconds``; fires with when the loop began,
    when it ended, and ``renewed_at()`` read as it ended."""
    done: Deferred[tuple[float, float, float | None]] = Deferred()

    def spin() -> None:
        began = reactor.seconds()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        done.callback((began, reactor.seconds(), renewed_at()))

    reactor.callLater(0, spin)
    return done


@pytest_twisted.ensureDeferred
async def test_a_reactor_busy_past_the_lease_timeout_keeps_its_lease(
    pg_schema: str, tmp_path: Path
) -> None:
    log = open_event_log(pg_schema, tmp_path, reactor)
    other = open_event_log(pg_schema, tmp_path, reactor)
    await log.open()
    await other.open()
    lost: list[str] = []
    me = Identity("busy", "elsewhere", os.getpid(), start_ticks(os.getpid()), "0", "/ws")
    keeper = LeaseKeeper(
        reactor, log, lambda: me, heartbeat_s=HEARTBEAT_S, lease_timeout_s=LEASE_S,
        take_over=lambda services: Deferred(), on_lost=lost.append,
    )  # fmt: skip
    try:
        await keeper.startService()
        line = keeper._line
        assert line is not None
        began, ended, renewed_at = await busy_for(BUSY_S, lambda: line.renewed_at)
        # Renewals went on while the reactor was held, well past the lease timeout...
        assert renewed_at is not None and renewed_at > began + LEASE_S
        # ...so nobody may take the service over, and it has not given its lease up.
        assert await other.take_over("someone-else", []) == []
        [service] = await other.services()
        assert (service["service_id"], service["lease"]) == ("busy", "live")
        # The deadline that fell due during the spell has fired since, late, and asked the line.
        await poll_until_async(
            lambda: (line.renewed_at or 0) > ended, "a renewal after the busy spell"
        )
        assert keeper.lost is None and lost == []
    finally:
        await keeper.stopService()
        await other.close()
        await log.close()
