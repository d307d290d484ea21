"""A connection dropped while a run claims its outputs costs a reconnect, not the build:
cut before the claim reaches the server, or after the server committed it but before its
answer came back (the claim is then read again and recognised as this run's)."""

from __future__ import annotations

import pytest
from tests.multi.conftest import Cluster
from tests.multi.proxy import Proxy


@pytest.mark.parametrize("answer_lost", [False, True], ids=["before-server", "commit-answer"])
def test_a_claim_survives_one_dropped_connection(
    cluster: Cluster, proxy: Proxy, answer_lost: bool
) -> None:
    cluster.event_log = proxy.uri(cluster.event_log)
    a = cluster.start("a")
    # The server's answer to a COMMIT is its command tag, "COMMIT".
    proxy.drop_at(b"INSERT INTO claims", answer=b"COMMIT\0" if answer_lost else None)

    build = a.finished(a.submit("mid/1"))

    assert proxy.dropped == 1
    assert build["status"] == "BUILD_REQUEST_COMPLETED", build
    assert cluster.starts() == {"leaf/1": 1, "leaf/2": 1, "mid/1": 1}
