"""Starting and stopping a real ``twistd databuild`` (SPEC §5.1-5.3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from tests.conftest import installed
from tests.polling import poll_until, poll_until_async
from tests.service.conftest import Service, call, free_port, with_lasting_job

import databuild
from databuild.proc.info import alive


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A port some other program listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


async def exited(service: Service) -> int:
    async def code() -> tuple[int] | None:
        returncode = service.process.poll()
        return None if returncode is None else (returncode,)

    (returncode,) = await poll_until_async(code, "the service to exit", 60)
    return returncode


async def start_slow_build(service: Service, name: str) -> tuple[str, int]:
    """Request ``slow/NAME``; the build id and the pid of its job once it runs."""
    code, body = await call(service, "POST", "/api/v1/builds", {"partitions": [f"slow/{name}"]})
    assert code == 202
    pid_file = service.workspace / "pids" / name

    async def job_pid() -> int | None:
        text = pid_file.read_text() if pid_file.exists() else ""
        return int(text) if text else None

    return body["build_request_id"], await poll_until_async(job_pid, "the slow job to start", 60)


@pytest_twisted.ensureDeferred
async def test_server_json_describes_the_running_service(
    color_votes: Path, service_factory: Any
) -> None:
    port = free_port()
    before = time.time_ns()
    service = service_factory(color_votes, "--port", str(port))
    info = json.loads(service.server_file.read_text())
    assert info == {
        "pid": service.process.pid,
        "port": port,
        "url": f"http://127.0.0.1:{port}",
        "token": info["token"],
        "started_at": info["started_at"],
        "version": databuild.__version__,
        "workspace": str(color_votes.resolve()),
        "event_log": str(color_votes.resolve() / ".databuild" / "bel.sqlite"),
        "event_log_setting": ".databuild/bel.sqlite",
    }
    assert before < info["started_at"] < time.time_ns()
    assert len(info["token"]) >= 32
    assert stat.S_IMODE(service.server_file.stat().st_mode) == 0o600
    assert int(service.pid_file.read_text()) == service.process.pid
    code, health = await call(service, "GET", "/api/v1/health")
    assert (code, health["pid"]) == (200, service.process.pid)


@pytest_twisted.ensureDeferred
async def test_taken_preferred_port_moves_to_the_next_free_one(
    color_votes: Path, service_factory: Any, listening_socket: int
) -> None:
    service = service_factory(color_votes, "--port", str(listening_socket))
    chosen = service.info["port"]
    assert listening_socket < chosen <= listening_socket + 20
    assert service.info["url"] == f"http://127.0.0.1:{chosen}"
    code, _ = await call(service, "GET", "/api/v1/health")
    assert code == 200
    assert f"port {listening_socket} on 127.0.0.1 is taken" in service.log_text()


def test_no_free_port_in_the_range_says_so_and_stops(
    color_votes: Path, listening_socket: int
) -> None:
    from tests.service.conftest import start_service

    with pytest.raises(AssertionError, match="service exited with 1") as failure:
        start_service(color_votes, "--port", str(listening_socket), "--port-range", "0")
    assert "could not start" in str(failure.value)
    assert f"no free port among {listening_socket}..{listening_socket}" in str(failure.value)
    assert not (color_votes / ".databuild" / "server.json").exists()


@pytest_twisted.ensureDeferred
async def test_idle_service_stops_cleanly_and_removes_its_files(
    color_votes: Path, service_factory: Any
) -> None:
    service = service_factory(color_votes, "--idle-timeout", "1")
    code, _ = await call(service, "GET", "/api/v1/builds")
    assert code == 200
    assert await exited(service) == 0
    assert not service.server_file.exists()
    assert not service.pid_file.exists()
    log = service.log_text()
    assert "idle for 1.0 s" in log and "shutting down: idle for 1 s" in log
    assert "closed event log" in log


@pytest_twisted.ensureDeferred
async def test_idle_timeout_waits_for_a_running_build(
    color_votes: Path, service_factory: Any
) -> None:
    # The run lasts well past the timeout, and nothing calls the service meanwhile: only the
    # running build can keep it up.
    service = service_factory(with_lasting_job(color_votes, 2.0), "--idle-timeout", "0.5")
    code, body = await call(service, "POST", "/api/v1/builds", {"partitions": ["lasting/up"]})
    assert code == 202, body
    build_id = body["build_request_id"]
    assert await exited(service) == 0
    assert (color_votes / "done-up").exists()
    log = service.log_text()
    ended = log.index(f"build {build_id} ended: completed")
    assert "shutting down: idle" in log[ended:]
    assert "shutting down" not in log[:ended]


@pytest_twisted.ensureDeferred
async def test_sigterm_cancels_the_running_build_and_leaves_no_job_process(
    slow_workspace: Path, service_factory: Any
) -> None:
    service = service_factory(slow_workspace, "--idle-timeout", "0")
    build_id, job_pid = await start_slow_build(service, "interrupted")
    assert alive(job_pid)
    service.process.send_signal(signal.SIGTERM)
    assert await exited(service) == -signal.SIGTERM  # twistd re-raises the signal at exit
    assert not alive(job_pid)
    assert not service.server_file.exists()
    assert not service.pid_file.exists()

    again = service_factory(slow_workspace, "--idle-timeout", "0")
    code, build = await call(again, "GET", f"/api/v1/builds/{build_id}")
    assert (code, build["status"]) == (200, "BUILD_REQUEST_CANCELLED")
    assert [t["status"] for t in build["tasks"]] == ["JOB_CANCELLED"]


@pytest_twisted.ensureDeferred
async def test_shutdown_request_is_refused_while_building_unless_forced(
    slow_workspace: Path, service_factory: Any
) -> None:
    service = service_factory(slow_workspace, "--idle-timeout", "0")
    _, job_pid = await start_slow_build(service, "forced")
    code, body = await call(service, "POST", "/api/v1/service/shutdown")
    assert (code, body["error"]["code"]) == (409, "builds_running")
    code, body = await call(service, "POST", "/api/v1/service/shutdown", {"force": True})
    assert (code, body) == (202, {"status": "stopping", "active_builds": 1})
    assert await exited(service) == 0
    assert not alive(job_pid)
    assert "shutting down: requested over the API, cancelling 1 build(s)" in service.log_text()


@pytest_twisted.ensureDeferred
async def test_shutdown_request_of_an_idle_service(
    color_votes: Path, service_factory: Any
) -> None:
    service = service_factory(color_votes, "--idle-timeout", "0")
    code, body = await call(service, "POST", "/api/v1/service/shutdown")
    assert (code, body) == (202, {"status": "stopping", "active_builds": 0})
    assert await exited(service) == 0
    assert not service.server_file.exists()


@pytest_twisted.ensureDeferred
async def test_token_file_token_is_the_one_clients_must_send(
    color_votes: Path, service_factory: Any, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("team-secret-token-of-this-team\n")
    service = service_factory(color_votes, "--token-file", str(token_file))
    assert service.info["token"] == "team-secret-token-of-this-team"
    code, _ = await call(service, "GET", "/api/v1/builds", token="team-secret-token-of-this-team")
    assert code == 200


def test_non_loopback_interface_without_token_file_is_refused_at_start(
    color_votes: Path,
) -> None:
    result = subprocess.run(
        [installed("twistd"), "-n", "--pidfile", "", "databuild", "--workspace",
         str(color_votes), "--interface", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")},
    )
    assert result.returncode == 1
    assert "refusing to listen on the non-loopback address 0.0.0.0 without --token-file" in (
        result.stdout + result.stderr)


def closed_port() -> int:
    """A port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("daemonized", [True, False], ids=["daemonized", "nodaemon"])
def test_a_service_that_cannot_open_its_event_log_exits_non_zero(
    color_votes: Path, daemonized: bool
) -> None:
    """So that systemd's Restart=on-failure fires: the start fails after startService returned
    (the log opens on its own thread), and twistd still exits 1."""
    state = color_votes / ".databuild"
    state.mkdir()
    uri = f"postgresql://postgres@127.0.0.1:{closed_port()}/test"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DATABUILD_")}
    result = subprocess.run(
        [installed("twistd"), *([] if daemonized else ["-n"]),
         "--pidfile", str(state / "twistd.pid"), "--logfile", str(state / "service.log"),
         "databuild", "--workspace", str(color_votes), "--port", "0"],
        capture_output=True, text=True, timeout=60,
        env={**environ, "DATABUILD_BUILD_EVENT_LOG": uri},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    if daemonized:  # the launching twistd says why: the whole sentence first, as text
        first = result.stderr.splitlines()[0]
        assert first.startswith(f"twistd databuild: cannot open the event log at {uri}: ")
        assert first.endswith("Connection refused")  # past the status pipe's 98 bytes
    poll_until(lambda: not (state / "twistd.pid").exists(), "the daemon to clean up")
    assert f"could not start: cannot open the event log at {uri}" in (
        (state / "service.log").read_text()
    )


@pytest_twisted.ensureDeferred
async def test_restart_after_kill_fails_the_unfinished_build(
    slow_workspace: Path, service_factory: Any
) -> None:
    service = service_factory(slow_workspace, "--idle-timeout", "0")
    build_id, job_pid = await start_slow_build(service, "killed")
    service.process.kill()
    service.process.wait()
    # The job dies with its service (its tether's watchdog), so no orphan survives the kill.
    await poll_until_async(lambda: not alive(job_pid), "the job to die with its service", 30)

    again = service_factory(slow_workspace, "--idle-timeout", "0")
    code, build = await call(again, "GET", f"/api/v1/builds/{build_id}")
    assert (code, build["status"]) == (200, "BUILD_REQUEST_FAILED")
    assert "stopped" in build["message"]


@pytest_twisted.ensureDeferred
async def test_service_keeps_its_log_in_postgresql(
    color_votes: Path, service_factory: Any, pg_schema: str
) -> None:
    service = service_factory(
        color_votes, "--idle-timeout", "0", env={"DATABUILD_BUILD_EVENT_LOG": pg_schema}
    )
    code, body = await call(
        service, "POST", "/api/v1/builds", {"partitions": ["daily_color_votes/2026-06-01/red"]}
    )
    assert code == 202
    build_id = body["build_request_id"]

    async def completed() -> bool:
        _, build = await call(service, "GET", f"/api/v1/builds/{build_id}")
        return build["status"] == "BUILD_REQUEST_COMPLETED"

    await poll_until_async(completed, "the build to complete", 60)
    assert not (color_votes / ".databuild" / "bel.sqlite").exists()
    assert "postgresql://postgres@127.0.0.1:5432/test" in service.log_text()


@pytest_twisted.ensureDeferred
async def test_lost_database_gives_json_500_and_the_service_keeps_running(
    color_votes: Path, service_factory: Any, pg_schema: str
) -> None:
    import psycopg
    from tests.conftest import PG_ADMIN_DSN

    service = service_factory(color_votes, "--idle-timeout", "0", "--event-log", pg_schema)
    schema = pg_schema.rsplit("%3D", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.execute(f'CREATE SCHEMA "{schema}"')  # for the fixture to drop again
    code, body = await call(service, "GET", "/api/v1/builds")
    assert code == 500
    assert body["error"]["message"]
    code, _ = await call(service, "GET", "/api/v1/health")
    assert code == 200
    assert "Traceback" in service.log_text()
