"""databuild.proc.process: children in their own process group, lines, timeout, group kill."""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
import pytest_twisted
from tests.polling import poll_until_async
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from databuild.proc.info import alive, children, start_ticks
from databuild.proc.process import MARKER_ENV, ChildProcess, ProcessResult, spawn


async def _wait_gone(pid: int, deadline_s: float = 10.0) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not alive(pid):
            return True
        d: Deferred[None] = Deferred()
        reactor.callLater(0.05, d.callback, None)
        await d
    return False


@pytest_twisted.ensureDeferred
async def test_lines_of_both_streams_arrive_in_order_with_exit_code(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    child = spawn(
        reactor,
        [sys.executable, "-c", "import sys; print('a'); print('b', file=sys.stderr); "
         "sys.stdout.write('no newline'); sys.exit(3)"],
        cwd=tmp_path,
        env=os.environ,
        on_line=lambda stream, text: lines.append((stream, text)),
    )
    result = await child.result
    assert result.exit_code == 3
    assert not result.succeeded
    assert result.stderr_tail == "b"
    assert [t for s, t in lines if s == "stdout"] == ["a", "no newline"]
    assert ("stderr", "b") in lines


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("size", [0, 5, 1 << 20])
async def test_stdin_of_any_size_is_delivered_and_closed(tmp_path: Path, size: int) -> None:
    # Nothing at all, a little, and more than a pipe holds: the child reads what it was
    # given, then EOF.
    data = bytes(i % 251 for i in range(size))
    out: list[str] = []
    child = spawn(
        reactor,
        [sys.executable, "-c", "import hashlib, sys; "
         "print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"],
        cwd=tmp_path,
        env=os.environ,
        stdin=data,
        on_line=lambda stream, text: out.append(text),
    )
    assert (await child.result).succeeded
    assert out == [hashlib.sha256(data).hexdigest()]


@pytest_twisted.ensureDeferred
async def test_the_stdin_pipe_is_the_childs_fd_0_alone(tmp_path: Path) -> None:
    # The pipe the service filled reaches the child as its stdin, and as nothing else.
    script = (
        "import os\n"
        "def link(f):\n"
        "    try:\n"
        "        return os.readlink(f'/proc/self/fd/{f}')\n"
        "    except FileNotFoundError:  # the listing's own descriptor, closed since\n"
        "        return None\n"
        "links = {f: link(f) for f in os.listdir('/proc/self/fd')}\n"
        "print(sorted(f for f, target in links.items() if target == links['0']))\n"
    )
    out: list[str] = []
    child = spawn(reactor, [sys.executable, "-c", script], cwd=tmp_path, env=os.environ,
                  stdin=b"{}", on_line=lambda stream, text: out.append(text))
    assert (await child.result).succeeded
    assert out == ["['0']"]


async def _output(argv: list[str], cwd: str | Path, env: Mapping[str, str] = os.environ,
                  ) -> tuple[list[str], ProcessResult]:
    """The lines a child printed on stdout, and how it ended."""
    out: list[str] = []
    child = spawn(reactor, argv, cwd=cwd, env=env,
                  on_line=lambda stream, text: out.append(text) if stream == "stdout" else None)
    return out, await child.result


@pytest.mark.parametrize("where", ["service directory", "elsewhere"])
@pytest_twisted.ensureDeferred
async def test_child_leads_its_own_session_and_process_group(tmp_path: Path, where: str) -> None:
    # In the service's own directory the child is spawned directly; elsewhere `env -C` goes
    # first, and execs the program in the same process.
    cwd = os.getcwd() if where == "service directory" else tmp_path
    out, _ = await _output(
        [sys.executable, "-c", "import os; print(os.getsid(0), os.getpgid(0), os.getpid(),"
         " os.getcwd())"],
        cwd,
    )
    sid, pgid, pid, directory = out[0].split()
    assert sid == pgid == pid
    assert int(pgid) != os.getpgid(0)
    assert directory == str(cwd)


@pytest_twisted.ensureDeferred
async def test_a_child_inherits_only_its_pipes_and_no_ignored_signal() -> None:
    # Python ignores SIGPIPE; a shell pipeline in a job must not.
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    with open(__file__, "rb") as held:
        out, result = await _output(
            ["sh", "-c", f"grep SigIgn /proc/self/status; ls /proc/self/fd/{held.fileno()}"],
            os.getcwd(),
        )
    assert not result.succeeded  # ls found no such descriptor
    [ignored] = out
    assert not int(ignored.split()[1], 16) & (1 << (signal.SIGPIPE - 1))


@pytest_twisted.ensureDeferred
async def test_a_program_is_found_on_the_childs_path_and_a_script_needs_no_hash_bang(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "greet"
    script.write_text("echo hello from $0\n")
    script.chmod(0o755)
    out, result = await _output(
        ["greet"], os.getcwd(), {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    )
    assert result.succeeded
    assert out == [f"hello from {script}"]


@pytest_twisted.ensureDeferred
async def test_timeout_kills_the_whole_group_including_grandchildren(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    child = spawn(
        reactor,
        ["sh", "-c", f"sleep 300 & echo $! > {pidfile}; wait"],
        cwd=tmp_path,
        env=os.environ,
        timeout_s=0.5,
        grace_s=1.0,
    )
    result = await child.result
    assert result.timed_out
    assert result.describe() == "timed out"
    assert await _wait_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_terminate_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path: Path) -> None:
    started = tmp_path / "started"
    child = spawn(
        reactor,
        ["sh", "-c", f"trap '' TERM; touch {started}; while true; do sleep 0.05; done"],
        cwd=tmp_path,
        env=os.environ,
        grace_s=0.3,
    )
    end = time.monotonic() + 10
    while not started.exists() and time.monotonic() < end:
        d: Deferred[None] = Deferred()
        reactor.callLater(0.02, d.callback, None)
        await d
    result = await child.terminate()
    assert result.cancelled
    assert result.signal == 9


@pytest_twisted.ensureDeferred
async def test_leftover_grandchild_is_killed_when_the_leader_exits(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    child = spawn(
        reactor,
        ["sh", "-c", f"sleep 300 > /dev/null 2>&1 & echo $! > {pidfile}"],
        cwd=tmp_path,
        env=os.environ,
    )
    assert (await child.result).succeeded
    assert await _wait_gone(int(pidfile.read_text()))


@pytest.mark.parametrize("where", ["service directory", "elsewhere"])
def test_a_program_that_cannot_be_started_raises(tmp_path: Path, where: str) -> None:
    cwd = os.getcwd() if where == "service directory" else tmp_path
    with pytest.raises(FileNotFoundError, match="no-such-program-xyz"):
        spawn(reactor, ["no-such-program-xyz"], cwd=cwd, env=os.environ)
    with pytest.raises(FileNotFoundError, match="bin/nothing"):
        spawn(reactor, ["bin/nothing"], cwd=cwd, env=os.environ)


def test_a_file_without_execute_permission_cannot_be_started(tmp_path: Path) -> None:
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("echo hi\n")
    with pytest.raises(PermissionError):
        spawn(reactor, [str(not_executable)], cwd=os.getcwd(), env=os.environ)


def test_start_time_distinguishes_processes() -> None:
    assert start_ticks(os.getpid()) is not None
    assert start_ticks(2**22 + 12345) is None


@pytest_twisted.ensureDeferred
async def test_a_child_knows_its_start_time_as_proc_gives_it(tmp_path: Path) -> None:
    children = [spawn(reactor, ["sleep", "30"], cwd=tmp_path, env=os.environ) for _ in range(40)]
    try:
        assert [c.start_time for c in children] == [start_ticks(c.pid) for c in children]
    finally:
        await gatherResults([c.terminate() for c in children])


DOUBLE_FORK = """
import os, sys, time
pidfile, keep_env = sys.argv[1], sys.argv[2] == "keep"
if os.fork() == 0:
    if keep_env:
        os.setsid()                  # a session, and so a group, of its own
    else:
        os.setpgid(0, 0)             # a group of its own in the leader's session
        for name in list(os.environ):
            del os.environ[name]     # no marker left to find it by
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.execvpe("sh", ["sh", "-c", f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}"
                                      "; exec sleep 300"], dict(os.environ, PATH="/bin:/usr/bin"))
    os._exit(0)                      # the middle process: its child is an orphan now
os.wait()
while not os.path.exists(pidfile):
    time.sleep(0.01)
"""


@pytest.mark.parametrize("how", ["keep", "clear"])
@pytest_twisted.ensureDeferred
async def test_a_double_forked_daemon_is_killed_at_the_run_end_and_reaped(
    tmp_path: Path, how: str
) -> None:
    # "keep": setsid, the marker in its environment; "clear": the leader's session, no marker.
    pidfile = tmp_path / "daemon.pid"
    child = spawn(
        reactor, [sys.executable, "-c", DOUBLE_FORK, str(pidfile), how], cwd=tmp_path,
        env=os.environ, grace_s=0.5,
    )
    assert (await child.result).succeeded
    daemon = int(pidfile.read_text())
    assert await _wait_gone(daemon)
    # It was reparented to us (the spawner is a child subreaper), and its zombie is reaped.
    await poll_until_async(lambda: daemon not in children(os.getpid()), "the zombie reaped")


@pytest_twisted.ensureDeferred
async def test_a_daemon_meant_to_outlive_its_starter_is_left_running(tmp_path: Path) -> None:
    # Bazel's server: its own session, and no marker to find it by (``daemons=True``).
    pidfile = tmp_path / "daemon.pid"
    child = spawn(
        reactor, [sys.executable, "-c", DOUBLE_FORK, str(pidfile), "keep"], cwd=tmp_path,
        env=os.environ, grace_s=0.5, daemons=True,
    )
    assert (await child.result).succeeded
    daemon = int(pidfile.read_text())
    try:
        # The leader's end was swept before its result fired: a signal would be on its way.
        assert alive(daemon)
        environ = Path(f"/proc/{daemon}/environ").read_bytes().split(b"\0")
        assert not any(entry.startswith(f"{MARKER_ENV}=".encode()) for entry in environ)
    finally:
        os.kill(daemon, signal.SIGKILL)
        assert await _wait_gone(daemon)
        os.waitpid(daemon, 0)  # our child (we are a subreaper): nobody else reaps it


def _holding_pipes(pidfile: Path, then: str) -> list[str]:
    """A leader whose ``setsid`` background process (a new session) keeps stdout and stderr."""
    return ["sh", "-c", f"setsid sleep 300 & echo $! > {pidfile}; {then}"]


@pytest_twisted.ensureDeferred
async def test_the_leader_exiting_ends_the_child_though_a_setsid_process_holds_the_pipes(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "daemon.pid"
    lines: list[str] = []
    child = spawn(
        reactor,
        _holding_pipes(pidfile, "echo started"),
        cwd=tmp_path,
        env=os.environ,
        on_line=lambda stream, text: lines.append(text),
    )
    result = await child.result
    daemon = int(pidfile.read_text())
    assert result.succeeded
    assert lines == ["started"]
    # The result came while the daemon could still have slept for minutes; it goes too.
    assert await _wait_gone(daemon)


@pytest_twisted.ensureDeferred
async def test_cancel_and_timeout_take_effect_whatever_a_setsid_process_does(
    tmp_path: Path,
) -> None:
    cancelled_pid, timed_out_pid = tmp_path / "cancelled.pid", tmp_path / "timed_out.pid"
    cancelled = spawn(
        reactor, _holding_pipes(cancelled_pid, "sleep 300"), cwd=tmp_path, env=os.environ,
        grace_s=0.5,
    )
    timed_out = spawn(
        reactor, _holding_pipes(timed_out_pid, "trap '' TERM; while true; do sleep 0.1; done"),
        cwd=tmp_path, env=os.environ, timeout_s=0.5, grace_s=0.5,
    )
    await poll_until_async(lambda: cancelled_pid.exists() and cancelled_pid.read_text().strip(),
                           "the daemon to start")
    assert (await cancelled.terminate()).cancelled
    result = await timed_out.result
    assert result.timed_out
    assert result.signal == 9
    assert await _wait_gone(int(cancelled_pid.read_text()))
    assert await _wait_gone(int(timed_out_pid.read_text()))


@pytest_twisted.ensureDeferred
async def test_a_daemon_that_left_the_session_and_closed_its_descriptors_is_ended(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "daemon.pid"
    child = spawn(
        reactor,
        ["sh", "-c", f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' "
         f"< /dev/null > /dev/null 2>&1 & while [ ! -s {pidfile} ]; do sleep 0.01; done"],
        cwd=tmp_path,
        env=os.environ,
    )
    assert (await child.result).succeeded
    assert await _wait_gone(int(pidfile.read_text()))


@pytest_twisted.ensureDeferred
async def test_the_daemons_of_leaders_ending_together_are_all_ended(tmp_path: Path) -> None:
    # Their sweeps share passes over /proc; the daemons that ignore SIGTERM need the
    # second sweep, with SIGKILL.
    def leader(n: int) -> ChildProcess:
        pidfile = tmp_path / f"daemon-{n}.pid"
        ignore = "trap '' TERM; " if n % 2 else ""
        return spawn(
            reactor,
            ["sh", "-c", f"setsid sh -c \"{ignore}echo \\$\\$ > {pidfile}; exec sleep 300\" "
             f"< /dev/null > /dev/null 2>&1 & while [ ! -s {pidfile} ]; do sleep 0.01; done"],
            cwd=tmp_path,
            env=os.environ,
            grace_s=0.2,
        )

    results = await gatherResults([leader(n).result for n in range(6)])
    assert all(result.succeeded for result in results)
    for n in range(6):
        assert await _wait_gone(int((tmp_path / f"daemon-{n}.pid").read_text())), n


@pytest_twisted.ensureDeferred
async def test_a_50_mb_line_without_newline_arrives_in_capped_pieces(tmp_path: Path) -> None:
    cap = 1024 * 1024
    pieces: list[tuple[str, bool]] = []
    child = spawn(
        reactor,
        [sys.executable, "-c",
         "import sys\nfor _ in range(50): sys.stdout.write('é' * (512 * 1024))"],
        cwd=tmp_path,
        env=os.environ,
        max_line_bytes=cap,
        on_line=lambda stream, text, continued=False: pieces.append((text, continued)),
    )
    assert (await child.result).succeeded
    assert "".join(text for text, _ in pieces) == "é" * (50 * 512 * 1024)
    assert all(len(text.encode()) <= cap for text, _ in pieces)
    assert [continued for _, continued in pieces] == [True] * (len(pieces) - 1) + [False]


def test_each_child_gets_its_own_marker() -> None:
    children = [ChildProcess(reactor=reactor, on_line=None, grace_s=1.0) for _ in range(1_000)]
    markers = {child.marker for child in children}
    assert len(markers) == 1_000
    assert all(m.startswith(f"{MARKER_ENV}=") and len(m) == len(MARKER_ENV) + 33 for m in markers)
