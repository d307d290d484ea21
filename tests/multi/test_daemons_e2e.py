"""Daemonized services (``twistd databuild`` without ``-n``) on one log register the process
they run as, not the one twistd was before it forked, so they never take each other over."""

from __future__ import annotations

import json
import os
import subprocess

import psycopg
from tests.conftest import BIN, installed
from tests.multi.conftest import Cluster

from databuild.proc.info import start_ticks


def test_two_daemons_on_one_log_register_their_own_pids_and_both_build(
    cluster: Cluster,
) -> None:
    a = cluster.start("a", daemon=True)
    # b sweeps this host's services at its start: one registered under the launching
    # twistd's pid, gone by now, would be declared dead and taken over.
    b = cluster.start("b", daemon=True)
    for team in (a, b):
        assert team.pid != team.process.pid  # twistd forked: the daemon is another process
        server = json.loads((team.workspace / ".databuild" / "server.json").read_text())
        assert server["pid"] == team.pid

    builds = [(a, a.submit("leaf/1", "mid/1")), (b, b.submit("leaf/3", "mid/3"))]
    for team, build_id in builds:
        assert team.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED", team.log_text()

    services = {s["pid"]: s for s in b.services()}
    assert set(services) == {a.pid, b.pid}
    for team in (a, b):
        assert services[team.pid]["lease"] == "live"
        assert services[team.pid]["process_start"] == start_ticks(team.pid)
    assert "took over" not in a.log_text() + b.log_text()


def test_two_cli_started_services_on_one_log_both_stay_live(cluster: Cluster) -> None:
    """The same through the installed CLI, which starts each workspace's service itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "DATABUILD_BUILD_EVENT_LOG": cluster.event_log,
        "DATABUILD_SERVICE_TIMEOUT": "30",
        "TEAM_DATA": str(cluster.data),
    })  # fmt: skip
    roots = [cluster.workspace("a"), cluster.workspace("b")]
    try:
        for root, refs in zip(roots, (("leaf/1", "mid/1"), ("leaf/3", "mid/3")), strict=True):
            done = subprocess.run(
                [installed("databuild"), "build", *refs], cwd=root, env=env,
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        pids = [json.loads((root / ".databuild" / "server.json").read_text())["pid"]
                for root in roots]
        with psycopg.connect(cluster.event_log) as conn:
            rows = conn.execute("SELECT pid, state FROM services").fetchall()
        assert sorted(rows) == sorted((pid, "live") for pid in pids)
    finally:
        for root in roots:
            subprocess.run([installed("databuild"), "service", "stop"], cwd=root, env=env,
                           capture_output=True, timeout=60)
