"""Service benchmark: API throughput and latency, and progress-stream fan-out.

    .venv/bin/python benchmarks/service_bench.py [--clients 20] [--requests 200] [--streams 100]
                                                 [--rounds 3] [--no-fan-out]

1. Throughput: ``--clients`` concurrent clients (persistent connections, treq) each send
   ``--requests`` requests one after another to ``GET /api/v1/health`` and
   ``GET /api/v1/builds`` of a running ``twistd databuild`` (a copy of examples/color_votes
   with a few builds done); ``--rounds`` interleaved rounds, the median shown. Baseline,
   same run, same client: a bare ``twisted.web`` resource answering, on every path, the very
   bytes the service answered to ``GET /api/v1/builds`` (the floor of the HTTP stack).
2. Fan-out: ``--streams`` readers open the progress stream of one build of 40 job runs right
   after it is requested; each must see every event of the build (checked against
   ``/api/v1/events``) and the final ``build_finished``. Baseline, same run: the same kind of
   build (other dates) watched by a single reader.

Client and service share the machine, so the figures include the client's own cost.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.task import react
from twisted.web.client import Agent, HTTPConnectionPool

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.service.conftest import (  # noqa: E402  (the tests' service starter, reused)
    Service,
    StreamReader,
    start_service,
)

BARE_SERVER = """
import sys
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

BODY = sys.stdin.buffer.read()

class Fixed(Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return BODY

port = reactor.listenTCP(0, Site(Fixed()), interface="127.0.0.1")
print(port.getHost().port, flush=True)
reactor.run()
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def hammer(
    client: HTTPClient, url: str, headers: dict[str, str], clients: int, requests: int
) -> dict[str, float]:
    """``clients`` concurrent loops of ``requests`` GETs; req/s and latency percentiles (ms)."""
    latencies: list[float] = []

    async def one_client() -> None:
        for _ in range(requests):
            start = time.perf_counter()
            response = await client.get(url, headers=headers)
            await response.content()
            assert response.code == 200, response.code
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await gatherResults([ensureDeferred(one_client()) for _ in range(clients)])
    elapsed = time.perf_counter() - start
    return {
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
    }


async def submit(service: Service, refs: list[str]) -> str:
    response = await treq.post(
        service.url + "/api/v1/cli/build", json={"partitions": refs}, headers=service.headers()
    )
    body = await response.json()
    assert response.code == 202, body
    return body["build_request_id"]


async def open_reader(service: Service, build_id: str, agent: Agent) -> StreamReader:
    response = await treq.get(
        f"{service.url}/api/v1/cli/builds/{build_id}/progress",
        headers=service.headers(),
        unbuffered=True,
        agent=agent,
    )
    assert response.code == 200
    reader = StreamReader()
    response.deliverBody(reader)
    return reader


async def logged_events(service: Service, build_id: str) -> list[dict[str, Any]]:
    response = await treq.get(
        f"{service.url}/api/v1/events?build_request_id={build_id}&limit=1000",
        headers=service.headers(),
    )
    return (await response.json())["events"]


async def fan_out(service: Service, refs: list[str], streams: int) -> dict[str, float]:
    """Request a build, open ``streams`` readers at once, wait until every one has finished."""
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    start = time.perf_counter()
    build_id = await submit(service, refs)
    readers = await gatherResults(
        [ensureDeferred(open_reader(service, build_id, agent)) for _ in range(streams)]
    )
    all_frames = await gatherResults([r.done for r in readers])
    elapsed = time.perf_counter() - start
    expected = await logged_events(service, build_id)
    complete = sum(
        1
        for frames in all_frames
        if [f.data for f in frames[:-1]] == expected
        and frames[-1].event == "build_finished"
        and frames[-1].data["status"] == "BUILD_REQUEST_COMPLETED"
    )
    return {"seconds": elapsed, "events": len(expected), "complete": complete}


def start_bare_server(body: bytes) -> tuple[subprocess.Popen[bytes], str]:
    """A bare twisted.web server answering ``body`` (setup only: it blocks until listening)."""
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(body)
    process.stdin.close()
    return process, f"http://127.0.0.1:{process.stdout.readline().decode().strip()}"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(args: argparse.Namespace, service: Service) -> None:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = args.clients
    client = HTTPClient(Agent(reactor, pool=pool))

    # A few finished builds, so the list has something to list.
    for day in range(1, 4):
        build_id = await submit(service, [f"daily_votes/2026-03-0{day}"])
        reader = await open_reader(service, build_id, Agent(reactor))
        await reader.done
    response = await client.get(service.url + "/api/v1/builds", headers=service.headers())
    bare, bare_url = start_bare_server(await response.content())
    try:
        await throughput(args, client, service, bare_url)
    finally:
        bare.terminate()
        bare.wait()
    if args.fan_out:
        await fan_outs(args, service)
    print(f"\nservice RSS after the run: {rss_mib(service.process.pid):.0f} MiB")
    await pool.closeCachedConnections()


async def throughput(
    args: argparse.Namespace, client: HTTPClient, service: Service, bare_url: str
) -> None:

    measure: list[tuple[str, Callable[[], Awaitable[dict[str, float]]]]] = [
        ("baseline: bare twisted.web", lambda: hammer(client, bare_url, {}, args.clients,
                                                       args.requests)),
        ("GET /api/v1/health", lambda: hammer(client, service.url + "/api/v1/health", {},
                                               args.clients, args.requests)),
        ("GET /api/v1/builds", lambda: hammer(client, service.url + "/api/v1/builds",
                                               service.headers(), args.clients,
                                               args.requests)),
    ]
    for _, measurement in measure:
        await measurement()  # warm-up, not counted
    # Interleaved rounds, so a change in the machine's load hits every line alike.
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _ in measure}
    for _ in range(args.rounds):
        for name, measurement in measure:
            rounds[name].append(await measurement())
    results = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in rounds.items()
    }
    base = results["baseline: bare twisted.web"]
    print(f"\nThroughput: {args.clients} concurrent clients x {args.requests} requests each, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'endpoint':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s vs baseline':>18}")
    for name, r in results.items():
        print(f"{name:<28} {r['rps']:>8.0f} {r['p50']:>8.1f} {r['p99']:>8.1f} "
              f"{r['rps'] / base['rps']:>17.2f}x")


async def fan_outs(args: argparse.Namespace, service: Service) -> None:
    dates = [f"2026-04-{d:02d}" for d in range(1, 11)]
    single = await fan_out(service, [f"daily_votes/{d}" for d in dates], 1)
    dates = [f"2026-05-{d:02d}" for d in range(1, 11)]
    many = await fan_out(service, [f"daily_votes/{d}" for d in dates], args.streams)
    print(f"\nFan-out: one build of {len(dates) * 4} job runs, readers opened as it starts")
    print(f"{'readers':>8} {'events':>7} {'complete':>9} {'build+streams s':>16} "
          f"{'vs 1 reader':>12}")
    for n, r in ((1, single), (args.streams, many)):
        print(f"{n:>8} {r['events']:>7} {int(r['complete']):>9} {r['seconds']:>16.2f} "
              f"{r['seconds'] / single['seconds']:>11.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-fan-out", dest="fan_out", action="store_false",
                        help="measure throughput only")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="service_bench-"))
    workspace = tmp / "color_votes"
    shutil.copytree(REPO / "examples" / "color_votes", workspace)
    service = start_service(workspace, "--idle-timeout", "0", "--max-parallel-jobs", "2")
    try:
        react(lambda _reactor: Deferred.fromCoroutine(run(args, service)))
    finally:
        service.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
