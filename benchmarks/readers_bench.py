"""Stalled progress readers: what readers that never read cost the service (SPEC §7).

    .venv/bin/python benchmarks/readers_bench.py [--readers 500] [--rounds 3]
                                                 [--refs 1000] [--ref-length 1000]

A real ``twistd databuild`` (a copy of examples/color_votes) records one finished build whose
progress stream is big: ``--refs`` refs of ``--ref-length`` characters that no job makes, so
the build fails at once (about 6.6 MB of frames with the defaults). Each round opens
``--readers`` raw connections that ask for that stream, offer a 4 KiB receive window and never
read, samples the service's RSS every 50 ms until the service has dropped them all (its
stalled-reader rule), then closes them. Printed per round: RSS before, peak, after the drop
and once the connections are closed, and the subscriptions the service still holds
(``databuild_progress_subscriptions`` of ``/metrics``). The baseline is the service's own RSS
before the first round, in the same run; the target is ≤ 100 MiB above it at the peak, and
the memory back once the readers are dropped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.service.conftest import Service, start_service  # noqa: E402
from tests.service.test_logs import MIB, rss_bytes  # noqa: E402

TARGET_MIB = 100
SAMPLE_S = 0.05


def call(service: Service, method: str, path: str, body: object = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        service.url + path, data=data, method=method, headers=service.headers()
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        return bytes(answer.read())


def subscriptions(service: Service) -> int:
    for line in call(service, "GET", "/metrics").decode().splitlines():
        if line.startswith("databuild_progress_subscriptions "):
            return int(float(line.split()[1]))
    return -1  # a service without the gauge


def big_build(service: Service, refs: int, length: int) -> str:
    names = [f"nojob/{i:06d}_" + "x" * max(0, length - 14) for i in range(refs)]
    build_id = json.loads(call(service, "POST", "/api/v1/builds", {"partitions": names}))[
        "build_request_id"
    ]
    deadline = time.monotonic() + 120
    while json.loads(call(service, "GET", f"/api/v1/builds/{build_id}"))["status"] not in (
        "BUILD_REQUEST_FAILED", "BUILD_REQUEST_COMPLETED"
    ):
        if time.monotonic() > deadline:
            raise SystemExit("the big build did not finish")
        time.sleep(0.1)
    return str(build_id)


def stream_size(service: Service, build_id: str) -> int:
    request = urllib.request.Request(
        f"{service.url}/api/v1/cli/builds/{build_id}/progress", headers=service.headers()
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        return len(answer.read())


def stalled_reader(service: Service, build_id: str) -> socket.socket:
    host, port = service.url.split("//")[1].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/v1/cli/builds/{build_id}/progress HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {service.info['token']}\r\nConnection: close\r\n\r\n".encode()
    )
    # Peeked, not read: the answer's first bytes stay in the window the reader never drains.
    sock.settimeout(60)
    status = sock.recv(64, socket.MSG_PEEK).split(b"\r\n", 1)[0]
    sock.settimeout(None)
    if not status.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"the service did not give a reader the stream: {status!r}")
    return sock


def one_round(service: Service, build_id: str, readers: int) -> dict[str, float]:
    pid = service.process.pid
    before = rss_bytes(pid)
    drops = service.log_text().count("dropping a stream reader") + readers
    started = time.monotonic()
    socks = [stalled_reader(service, build_id) for _ in range(readers)]
    peak = before
    while service.log_text().count("dropping a stream reader") < drops:
        peak = max(peak, rss_bytes(pid))
        if time.monotonic() - started > 300:
            raise SystemExit("the service did not drop every stalled reader in 300 s")
        time.sleep(SAMPLE_S)
    dropped_s = time.monotonic() - started
    time.sleep(1.0)  # the release of what they held is debounced by 0.5 s
    after_drop = rss_bytes(pid)
    for sock in socks:
        sock.close()
    time.sleep(1.0)
    after_close = rss_bytes(pid)
    return {
        "before": before / MIB,
        "peak": peak / MIB,
        "after_drop": after_drop / MIB,
        "after_close": after_close / MIB,
        "dropped_s": dropped_s,
        "subscriptions": subscriptions(service),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--refs", type=int, default=1000)
    parser.add_argument("--ref-length", type=int, default=1000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "color_votes"
        shutil.copytree(REPO / "examples" / "color_votes", workspace)
        service = start_service(workspace, "--idle-timeout", "0")
        try:
            build_id = big_build(service, options.refs, options.ref_length)
            size = stream_size(service, build_id)
            baseline = rss_bytes(service.process.pid) / MIB
            print(f"stream of the build: {size / 1e6:.1f} MB; service RSS {baseline:.0f} MiB "
                  f"with one reader done; {options.readers} stalled readers per round")
            print(f"{'round':>5} {'before':>8} {'peak':>8} {'after drop':>11} "
                  f"{'after close':>12} {'peak-base':>10} {'target':>7} {'drop s':>7} "
                  f"{'subs':>5}")
            for n in range(1, options.rounds + 1):
                r = one_round(service, build_id, options.readers)
                print(f"{n:>5} {r['before']:>8.0f} {r['peak']:>8.0f} {r['after_drop']:>11.0f} "
                      f"{r['after_close']:>12.0f} {r['peak'] - baseline:>10.0f} "
                      f"{TARGET_MIB:>7} {r['dropped_s']:>7.1f} {r['subscriptions']:>5}",
                      flush=True)
        finally:
            service.stop()
    print("RSS in MiB; peak-base: the peak over the RSS measured before the first round")


if __name__ == "__main__":
    main()
