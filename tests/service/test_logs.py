"""Job run logs over the API of a real service: pages, tails, a live follow, long lines, and a
300 MB log served in flat memory."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import treq
from tests.conftest import EXAMPLES
from tests.polling import poll_until_async
from tests.service.conftest import Service, call, start_service

TALK_JOB = '''\
"""Job ``talk``: for talk/NAME prints "before", writes pids/NAME, waits for release-NAME, prints
"after"; talk/long prints 3 MiB and a half without a newline instead."""
import json, os, sys, time
if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r]} for r in sys.argv[2:]]}))
    sys.exit(0)
name = sys.argv[2].split("/")[1]
if name == "long":
    sys.stdout.write("é" * (7 * 256 * 1024))
    sys.exit(0)
workspace = os.environ["DATABUILD_WORKSPACE"]
print("before", flush=True)
with open(os.path.join(workspace, "pids", name), "w") as f:
    f.write(str(os.getpid()))
while not os.path.exists(os.path.join(workspace, f"release-{name}")):
    time.sleep(0.05)
print("after", flush=True)
'''
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("logs") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    (workspace / "jobs" / "talk.py").write_text(TALK_JOB)
    (workspace / "pids").mkdir()
    with (workspace / "databuild.toml").open("a") as f:
        f.write('\n[[jobs]]\nlabel = "talk"\noutputs = [\'talk/[a-z0-9]+\']\n'
                'command = ["python3", "jobs/talk.py"]\n')
    running = start_service(workspace, "--idle-timeout", "0", "--keepalive", "0.2")
    yield running
    running.stop()


async def task_of(service: Service, ref: str) -> str:
    code, body = await call(service, "POST", "/api/v1/builds", {"partitions": [ref]})
    assert code == 202, body
    build_id = body["build_request_id"]

    async def task() -> str | None:
        _, doc = await call(service, "GET", f"/api/v1/tasks?build_request_id={build_id}")
        return doc["tasks"][0]["job_run_id"] if doc["tasks"] else None

    return await poll_until_async(task, f"the task of {ref}")


async def ended(service: Service, task_id: str) -> None:
    async def final() -> bool:
        _, task = await call(service, "GET", f"/api/v1/tasks/{task_id}")
        return task["status"] in ("JOB_COMPLETED", "JOB_FAILED")

    await poll_until_async(final, f"task {task_id} to end")


async def sse(service: Service, path: str, until: str, **headers: str) -> list[dict[str, Any]]:
    """The frames of an SSE answer, read to ``until`` (or the end), as id/event/data."""
    response = await treq.get(service.url + path, headers={**service.headers(), **headers},
                              unbuffered=True)
    assert response.code == 200
    frames: list[dict[str, Any]] = []
    buffer = b""

    def collect(data: bytes) -> None:
        nonlocal buffer
        buffer += data
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n")
                          if line and not line.startswith(":"))
            if fields:
                frames.append({"id": fields.get("id"), "event": fields["event"],
                               "data": json.loads(fields["data"])})

    await treq.collect(response, collect)
    assert frames and frames[-1]["event"] == until
    return frames


@pytest_twisted.ensureDeferred
async def test_a_running_task_is_followed_to_its_end_and_resumed(service: Service) -> None:
    task_id = await task_of(service, "talk/follow")

    async def started() -> bool:
        return (service.workspace / "pids" / "follow").exists()

    await poll_until_async(started, "talk/follow to print")
    response = await treq.get(
        f"{service.url}/api/v1/tasks/{task_id}/logs?follow=true", headers=service.headers(),
        unbuffered=True,
    )
    assert response.headers.getRawHeaders("content-type") == ["text/event-stream; charset=utf-8"]
    (service.workspace / "release-follow").touch()
    text = (await treq.content(response)).decode()
    assert text.index("before") < text.index("after") < text.index("event: log_end")

    frames = await sse(service, f"/api/v1/tasks/{task_id}/logs?follow=true", "log_end")
    assert [(f["id"], f["event"], f["data"].get("text")) for f in frames] == [
        ("0", "log_line", "before"), ("1", "log_line", "after"), (None, "log_end", None)]
    assert frames[-1]["data"] == {"job_run_id": task_id, "next_offset": 2}
    resumed = await sse(service, f"/api/v1/tasks/{task_id}/logs?follow=true", "log_end",
                        **{"Last-Event-ID": "0"})
    assert [f["data"].get("text") for f in resumed] == ["after", None]
    tailed = await sse(service, f"/api/v1/tasks/{task_id}/logs?follow=true&tail=1", "log_end")
    assert [f["id"] for f in tailed] == ["1", None]


@pytest_twisted.ensureDeferred
async def test_a_line_over_1_mib_is_stored_in_marked_pieces(service: Service) -> None:
    task_id = await task_of(service, "talk/long")
    await ended(service, task_id)
    lines: list[dict[str, Any]] = []
    more, offset = True, 0
    while more:
        code, page = await call(service, "GET", f"/api/v1/tasks/{task_id}/logs?offset={offset}")
        assert code == 200
        lines += page["lines"]
        more, offset = page["more"], page["next_offset"]
    assert len(lines) == 4  # 3.5 MiB in pieces of at most 1 MiB
    assert [line.get("continued", False) for line in lines] == [True, True, True, False]
    assert all(len(line["text"].encode()) <= MIB for line in lines)
    assert "".join(line["text"] for line in lines) == "é" * (7 * 256 * 1024)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest_twisted.ensureDeferred
async def test_a_300_mb_log_is_paged_and_tailed_in_flat_memory(service: Service) -> None:
    task_id = await task_of(service, "talk/huge")
    (service.workspace / "release-huge").touch()
    await ended(service, task_id)
    [path] = (service.state / "logs").glob(f"*/{task_id}.jsonl")
    record = {"time": 1, "stream": "stdout", "text": "x" * 950}
    block = "".join(json.dumps({**record, "n": n}) + "\n" for n in range(1000)).encode()
    with path.open("ab") as f:
        for _ in range(300):
            f.write(block)
    total = 2 + 300 * 1000
    assert path.stat().st_size > 300 * 10**6
    before = rss_bytes(service.process.pid)

    code, page = await call(service, "GET", f"/api/v1/tasks/{task_id}/logs?offset=2&limit=3")
    assert code == 200
    assert [line["n"] for line in page["lines"]] == [0, 1, 2]
    assert (page["offset"], page["next_offset"], page["more"]) == (2, 5, True)
    code, page = await call(service, "GET", f"/api/v1/tasks/{task_id}/logs?tail=2")
    assert [line["n"] for line in page["lines"]] == [998, 999]
    assert (page["offset"], page["next_offset"], page["more"]) == (total - 2, total, False)
    code, page = await call(service, "GET", f"/api/v1/tasks/{task_id}/logs?limit=10000")
    assert 0 < page["next_offset"] < 10000 and page["more"]  # a page holds at most ~4 MiB
    frames = await sse(
        service, f"/api/v1/tasks/{task_id}/logs?follow=true&offset={total - 5000}", "log_end"
    )
    assert len(frames) == 5000 + 1
    assert frames[-1]["data"]["next_offset"] == total

    grown = rss_bytes(service.process.pid) - before
    assert grown < 100 * MIB, f"the service grew by {grown / MIB:.0f} MiB"


@pytest_twisted.ensureDeferred
async def test_bad_log_parameters_are_400_naming_them(service: Service) -> None:
    task_id = await task_of(service, "talk/params")
    (service.workspace / "release-params").touch()
    for query in ["offset=-1", "offset=x", f"offset={2**63}", "limit=0", "limit=10001",
                  "tail=-2", "follow=maybe"]:
        code, body = await call(service, "GET", f"/api/v1/tasks/{task_id}/logs?{query}")
        assert code == 400, query
        assert query.split("=")[0] in body["error"]["message"]
    response = await treq.get(
        f"{service.url}/api/v1/tasks/{task_id}/logs?follow=true",
        headers={**service.headers(), "Last-Event-ID": str(2**63)},
    )
    assert response.code == 400
    assert "Last-Event-ID" in (await response.json())["error"]["message"]
