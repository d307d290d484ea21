"""A build request whose RECEIVED the log fails to store (the connection dropped as it was
sent) is answered 503 at once, naming the build; the build is then recorded FAILED, with the
reason, as soon as the log takes events again: none is left open, and nothing of it ran."""

from __future__ import annotations

import re
from typing import Any

from tests.multi.conftest import FINAL, Cluster
from tests.multi.proxy import Proxy
from tests.polling import poll_until


def test_a_build_request_the_log_failed_to_store_is_refused_and_ends_failed(
    cluster: Cluster, proxy: Proxy
) -> None:
    cluster.event_log = proxy.uri(cluster.event_log)
    a = cluster.start("a")
    proxy.drop_at(b"INSERT INTO events")  # the first append: this build's RECEIVED

    status, body = a.call("POST", "/api/v1/builds", {"partitions": ["leaf/1"]})

    assert proxy.dropped == 1
    assert status == 503, body
    message = body["error"]["message"]
    found = re.search(r"build ([0-9a-f]+) will be recorded as failed", message)
    assert found, message

    def stored_final() -> dict[str, Any] | None:  # stored once the log is tried again
        code, build = a.call("GET", f"/api/v1/builds/{found[1]}")
        return build if code == 200 and build["status"] in FINAL else None

    build = poll_until(stored_final, "the refused build to be recorded as ended")
    assert build["status"] == "BUILD_REQUEST_FAILED", build
    assert "cannot store events" in build["message"], build
    assert cluster.starts() == {}
    assert a.finished(a.submit("leaf/2"))["status"] == "BUILD_REQUEST_COMPLETED"
