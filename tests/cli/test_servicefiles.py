"""Finding the workspace, and telling a live service's files from stale ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.polling import poll_until

from databuild.cli.exits import USAGE, CliError
from databuild.cli.servicefiles import (
    PIDFILE,
    SERVER_JSON,
    clean_stale,
    log_tail,
    pidfile_owner,
    resolve_workspace,
    runs_service,
    server_json_owner,
    start_failure,
    to_seconds,
)
from databuild.proc.info import command_line, started_at


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "ws" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "ws" / "databuild.toml").write_text('[graph]\nlabel = "t"\n')
    (tmp_path / "ws" / ".databuild").mkdir()
    return tmp_path / "ws"


@pytest.fixture
def lookalike(workspace: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A live process whose command line reads like ``twistd ... databuild --workspace WS``."""
    proc = subprocess.Popen([
        sys.executable, "-c", "import time; time.sleep(60)", "twistd", "databuild",
        "--workspace", str(workspace),
    ])  # fmt: skip
    poll_until(
        lambda: started_at(proc.pid) is not None and "databuild" in command_line(proc.pid),
        "the lookalike to run",
    )
    yield proc
    proc.kill()
    proc.wait()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_workspace_from_flag_then_environment_then_ancestors(workspace: Path) -> None:
    other = workspace.parent / "other"
    other.mkdir()
    (other / "databuild.toml").write_text("")
    deeper = workspace / "sub" / "deeper"
    assert resolve_workspace(str(other), {"DATABUILD_WORKSPACE": str(workspace)}, deeper) == other
    assert resolve_workspace(None, {"DATABUILD_WORKSPACE": str(other)}, deeper) == other
    assert resolve_workspace(None, {}, deeper) == workspace
    assert resolve_workspace("../..", {}, deeper) == workspace


def test_no_workspace_is_a_usage_error_naming_the_directory(tmp_path: Path) -> None:
    with pytest.raises(CliError) as e:
        resolve_workspace(None, {}, tmp_path)
    assert e.value.exit_code == USAGE
    assert str(tmp_path) in e.value.message
    with pytest.raises(CliError) as e:
        resolve_workspace(str(tmp_path), {}, Path("/"))
    assert e.value.exit_code == USAGE
    assert "holds no databuild.toml" in e.value.message


def test_a_pidfile_written_by_its_live_process_is_kept(
    workspace: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    pidfile = workspace / ".databuild" / PIDFILE
    pidfile.write_text(str(lookalike.pid))
    assert pidfile_owner(pidfile) == lookalike.pid
    assert clean_stale(workspace / ".databuild") == []
    assert pidfile.exists()


def test_a_pidfile_of_a_dead_process_is_stale(workspace: Path) -> None:
    pidfile = workspace / ".databuild" / PIDFILE
    pidfile.write_text(f"{dead_pid()}\n")
    assert pidfile_owner(pidfile) is None
    assert clean_stale(workspace / ".databuild") == [PIDFILE]
    assert not pidfile.exists()


def test_a_pidfile_naming_some_other_live_program_is_stale(workspace: Path) -> None:
    pidfile = workspace / ".databuild" / PIDFILE
    pidfile.write_text(str(os.getpid()))
    assert pidfile_owner(pidfile) is None


def test_a_pid_reused_after_the_pidfile_was_written_is_stale(
    workspace: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    """The process started long after the file was written: the number was reused."""
    pidfile = workspace / ".databuild" / PIDFILE
    pidfile.write_text(str(lookalike.pid))
    an_hour_ago = time.time() - 3600
    os.utime(pidfile, (an_hour_ago, an_hour_ago))
    assert pidfile_owner(pidfile) is None


def test_a_pidfile_written_long_after_its_process_started_is_stale(
    workspace: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    """twistd writes the pidfile right after forking the daemon, never minutes later."""
    pidfile = workspace / ".databuild" / PIDFILE
    pidfile.write_text(str(lookalike.pid))
    later = time.time() + 600
    os.utime(pidfile, (later, later))
    assert pidfile_owner(pidfile) is None


def test_server_json_is_stale_once_its_pid_started_after_it(
    workspace: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    listening_ns = time.time_ns()
    info = {"pid": lookalike.pid, "started_at": listening_ns, "url": "http://127.0.0.1:1",
            "workspace": str(workspace)}
    assert server_json_owner(info, workspace) == lookalike.pid
    stale = [{**info, "started_at": listening_ns - 3600 * 10**9}, {**info, "pid": dead_pid()},
             {**info, "pid": os.getpid()}, {**info, "pid": "12"}]
    assert [server_json_owner(i, workspace) for i in stale] == [None] * 4


def test_the_files_of_another_workspaces_live_service_are_stale_in_a_copy(
    workspace: Path, lookalike: subprocess.Popen[bytes]
) -> None:
    """A copied workspace holds its original's ``server.json`` and ``twistd.pid``, which name
    the original's live service: stale for the copy, fine for the original."""
    copy = workspace.parent / "copy"
    state = workspace / ".databuild"
    (state / PIDFILE).write_text(str(lookalike.pid))
    info = {"pid": lookalike.pid, "started_at": time.time_ns(), "workspace": str(workspace)}
    (state / "server.json").write_text(json.dumps(info))
    shutil.copytree(workspace, copy)  # file times kept, as ``cp -a`` does
    assert server_json_owner(info, copy) is None
    assert pidfile_owner(copy / ".databuild" / PIDFILE) is None
    assert sorted(clean_stale(copy / ".databuild")) == ["server.json", PIDFILE]
    assert clean_stale(state) == []


def test_clean_stale_removes_unreadable_and_orphaned_server_json(workspace: Path) -> None:
    state = workspace / ".databuild"
    (state / SERVER_JSON).write_text("{not json")
    assert clean_stale(state) == [SERVER_JSON]
    (state / SERVER_JSON).write_text(json.dumps({"pid": dead_pid(), "started_at": 1}))
    (state / PIDFILE).write_text(str(os.getpid()))
    assert clean_stale(state) == [SERVER_JSON, PIDFILE]
    assert list(state.iterdir()) == []


def test_times_in_any_unit_become_seconds() -> None:
    assert to_seconds(1_795_000_000_123_000_000) == pytest.approx(1_795_000_000.123)
    assert to_seconds(1_795_000_000_123) == pytest.approx(1_795_000_000.123)
    assert to_seconds(1_795_000_000.5) == 1_795_000_000.5
    assert to_seconds("yesterday") is None


def test_log_tail_shows_only_what_was_written_since_the_start(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text("old 1\nold 2\n")
    offset = log.stat().st_size
    with log.open("a") as f:
        f.writelines(f"new {i}\n" for i in range(30))
    tail = log_tail(log, offset).splitlines()
    assert tail == [f"new {i}" for i in range(10, 30)]
    assert log_tail(tmp_path / "missing.log") == ""


def test_the_sentence_of_a_failed_start_is_twistds_last_line_or_the_daemons_report() -> None:
    said = "twistd databuild: /ws/databuild.toml: invalid TOML: Invalid value (at line 3, col 7)"
    assert start_failure(said, "") == (
        "/ws/databuild.toml: invalid TOML: Invalid value (at line 3, col 7)", ""
    )
    assert start_failure("", "log") == (None, "")
    reason = ("cannot open the event log at postgresql://é@db:1/x: connection failed: "
              "connection to server at db, port 1 failed: no route to host")
    cut = ("1 " + reason).encode()[:100][2:]
    assert len(cut) < len(reason.encode())
    said = f"An error has occurred: {cut!r}\nPlease look at log file for more information.\n"
    log = f"2026-01-01 [databuild.service.tree#error] the service could not start: {reason}\n"
    assert start_failure(said, log) == (reason, "")
    assert start_failure(said, "") == (cut.decode(), "")


def test_a_service_given_no_workspace_serves_the_directory_it_works_in(workspace: Path) -> None:
    started = []
    for cwd in (workspace, workspace.parent):
        started.append(subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)", "twistd", "databuild"], cwd=cwd
        ))  # fmt: skip
    try:
        for proc in started:
            poll_until(lambda proc=proc: "databuild" in command_line(proc.pid), "it to run")
        assert runs_service(started[0].pid, workspace)
        assert not runs_service(started[1].pid, workspace)
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
