"""Any service serves any build: a progress stream on B of A's build (SPEC §5.6, §5.8)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from tests.multi.conftest import Cluster


def test_a_stream_on_one_service_of_anothers_build_ends_with_its_build_finished(
    cluster: Cluster,
) -> None:
    a = cluster.start("a")
    b = cluster.start("b")
    build_id = a.submit("after/x")
    cluster.started_pid("x")
    parts = urlsplit(b.info["url"])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", f"/api/v1/cli/builds/{build_id}/progress",
                 headers={"Authorization": f"Bearer {b.info['token']}"})
    response = conn.getresponse()
    assert response.status == 200

    cluster.release("x")
    frames: list[tuple[str, dict]] = []
    kind = ""
    for raw in response:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            frames.append((kind, json.loads(line[len("data: "):])))
            if kind == "build_finished":
                break
    conn.close()

    kind, finished = frames[-1]
    assert kind == "build_finished"
    assert finished["build_request_id"] == build_id
    assert finished["status"] == "BUILD_REQUEST_COMPLETED"
    jobs = [data["status"] for kind, data in frames if kind == "job"]
    assert jobs.count("JOB_COMPLETED") == 2
    assert all(data["build_request_id"] == build_id for _, data in frames)
    idx = [data["idx"] for kind, data in frames if kind != "build_finished"]
    assert idx == sorted(set(idx))
