"""When appends fail: a failed transaction (here: a full disk) fails the appends queued behind
it too, so the log never stores a later event before an earlier one; an event appended again
is refused as a duplicate that says where the log holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from tests.conftest import fill
from twisted.internet import reactor
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from databuild.bel import (
    BuildRequestEvent,
    BuildStatus,
    DuplicateEvent,
    Event,
    StoreUnavailable,
    open_event_log,
)

REFS = ("a/1",)


def event(status: BuildStatus) -> Event:
    return Event("b1", BuildRequestEvent(status, REFS))


@pytest_twisted.ensureDeferred
async def test_a_failed_transaction_fails_everything_queued_behind_it(small_disk: Path) -> None:
    log = open_event_log(str(small_disk / "bel.sqlite"), small_disk, reactor)
    await log.open()
    try:
        await log.append(event(BuildStatus.BUILD_REQUEST_RECEIVED))
        await deferLater(reactor, 0, lambda: None)  # that commit's bookkeeping is over
        filler = fill(small_disk)
        planning = event(BuildStatus.BUILD_REQUEST_PLANNING)
        analysed = event(BuildStatus.BUILD_REQUEST_ANALYSIS_COMPLETED)

        def free_the_disk(failure: Failure) -> Failure:
            filler.unlink()  # the queued append could be stored now, but must not be
            return failure

        first = log.append(planning).addErrback(free_the_disk)
        queued = log.append(analysed)
        results = await DeferredList([first, queued], consumeErrors=True)
        for ok, failure in results:
            assert not ok and failure.check(StoreUnavailable), failure
        assert "disk is full" in results[0][1].getErrorMessage()
        assert (await log.get_build("b1"))["status"] == "BUILD_REQUEST_RECEIVED"

        stored = [await log.append(planning), await log.append(analysed)]
        assert [e.idx for e in stored] == [2, 3]
    finally:
        await log.close()


@pytest_twisted.ensureDeferred
async def test_an_event_appended_again_is_refused_naming_where_it_is(tmp_path: Path) -> None:
    log = open_event_log(str(tmp_path / "bel.sqlite"), tmp_path, reactor)
    await log.open()
    try:
        received = await log.append(event(BuildStatus.BUILD_REQUEST_RECEIVED))
        with pytest.raises(DuplicateEvent) as refused:
            await log.append(received.stored_at(None))  # type: ignore[arg-type]
        assert refused.value.idx == received.idx == 1
    finally:
        await log.close()
