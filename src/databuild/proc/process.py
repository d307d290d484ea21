"""Child processes, each in its own process group, with line callbacks, timeout and group kill.

This is the one place DataBuild starts programs: jobs' ``config`` and ``exec`` entrypoints,
custom lookups and Bazel. Every child is started by ``posix_spawn`` as the leader of a new
session, so it leads a new process group; terminating a child signals the whole group, so no
grandchild outlives it.

A child ends when its leader exits, not when its pipes close: a background process that keeps
stdout open gets ``drain_s`` to let the last lines through, then the pipes are closed. What
the leader leaves behind is terminated (SIGTERM, the grace period, SIGKILL): its group, and
every process that left the group. The spawning process is made a child subreaper
(``PR_SET_CHILD_SUBREAPER``), so a descendant whose parent exits is reparented to it rather
than to init: a ``setsid`` daemon, double fork or not, becomes the spawner's own child, found
by its session or its ``DATABUILD_SPAWN_ID`` among the spawner's few children. Ending a run
reads those children, never all of ``/proc``: it costs the same whatever else the host runs.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
import signal
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from attrs import define, field, frozen
from twisted.internet import error, process
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.ids import new_id
from databuild.proc.info import boot_ticks, children, environment_holds, start_ticks, stat_fields
from databuild.startup import JOB_SECRETS, without

ENV = "/usr/bin/env"
SHELL = "/bin/sh"
DEFAULT_GRACE_S = 5.0
DEFAULT_DRAIN_S = 1.0
STDERR_TAIL_LINES = 20
MARKER_ENV = "DATABUILD_SPAWN_ID"
"""Set to a fresh value in each child's environment, so that its descendants can be found."""
REAP_AGAIN_S = 0.1
"""After the last signal to a leftover, its zombie is reaped this much later."""
UNSURE_AGAIN_S = 0.05
"""An orphan whose run cannot be told yet is looked at again this much later (until the
grace period ends)."""
_PR_SET_CHILD_SUBREAPER = 36

log = Logger()


class LineCallback(Protocol):
    """Called with ``(stream, text)`` for each line, ``stream`` being ``"stdout"`` or
    ``"stderr"``; ``continued`` says that ``text`` is a piece of a line over the length cap,
    which goes on in the next call."""

    def __call__(self, stream: str, text: str, continued: bool = False) -> None: ...


@frozen
class ProcessResult:
    """How a child ended."""

    exit_code: int | None
    signal: int | None
    timed_out: bool = False
    cancelled: bool = False
    stderr_tail: str = ""

    @property
    def succeeded(self) -> bool:
        """Exited with code 0, neither timed out nor cancelled."""
        return self.exit_code == 0 and not (self.timed_out or self.cancelled)

    def describe(self) -> str:
        """A short phrase saying how the process ended."""
        if self.timed_out:
            return "timed out"
        if self.cancelled:
            return "cancelled"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exited with code {self.exit_code}"


def kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to process group ``pgid``; False if the group no longer exists.

    ``pgid`` 0 or 1 (our own group, init) is refused: that is never a child's group.
    """
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


class _LineSplitter:
    """Cuts a stream into lines in time linear in its length; a line over ``max_bytes`` is
    passed on in pieces of at most ``max_bytes`` (cut between UTF-8 characters)."""

    def __init__(self, stream: str, sink: LineCallback, max_bytes: int | None) -> None:
        self._stream = stream
        self._sink = sink
        self._max = max_bytes
        self._pending: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self._pending.append(data[start:end])
            line = b"".join(self._pending)
            self._pending, self._size = [], 0
            self._emit(self._cut(line).rstrip(b"\r"))
            start = end + 1
        if start < len(data):
            self._pending.append(data[start:])
            self._size += len(data) - start
            if self._max is not None and self._size > self._max:
                rest = self._cut(b"".join(self._pending))
                self._pending, self._size = [rest], len(rest)

    def close(self) -> None:
        if self._pending:
            line = b"".join(self._pending)
            self._pending, self._size = [], 0
            self._emit(self._cut(line))

    def _cut(self, line: bytes) -> bytes:
        """Pass on the leading pieces of ``line`` over the cap; the rest (within it)."""
        if self._max is None:
            return line
        start = 0
        while len(line) - start > self._max:
            end = start + self._max
            while end > start + 1 and line[end] & 0xC0 == 0x80:  # inside a UTF-8 character
                end -= 1
            self._emit(line[start:end], continued=True)
            start = end
        return line[start:]

    def _emit(self, line: bytes, *, continued: bool = False) -> None:
        text = line.decode("utf-8", errors="replace")
        if continued:
            self._sink(self._stream, text, continued=True)
        else:
            self._sink(self._stream, text)


class _GroupProtocol(ProcessProtocol):
    def __init__(
        self, child: ChildProcess, stdin: bytes | None, max_line_bytes: int | None
    ) -> None:
        self._child = child
        self._stdin = stdin
        self._splitters = {
            1: _LineSplitter("stdout", child.line, max_line_bytes),
            2: _LineSplitter("stderr", child.line, max_line_bytes),
        }

    def connectionMade(self) -> None:
        # A child that exits at once is reaped, and its transport's pid cleared, before the
        # transport is returned: the pid must be known by then, or the group kill in
        # processExited has no target.
        assert self.transport is not None
        self._child.pid = self.transport.pid
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        splitter = self._splitters.get(childFD)
        if splitter is not None:
            splitter.feed(data)

    def processExited(self, reason: Failure) -> None:
        # The leader is gone: the outcome is known, whoever still holds the pipes.
        assert self.transport is not None
        self._child.leader_exited(self.transport.loseConnection)

    def processEnded(self, reason: Failure) -> None:
        for splitter in self._splitters.values():
            splitter.close()
        self._child.ended(reason)


@define(eq=False)
class ChildProcess:
    """A running child process group. ``result`` fires with a ProcessResult, never errbacks.

    ``result`` fires at most ``drain_s`` after the leader exits, whatever its descendants do.
    """

    reactor: Any
    on_line: LineCallback | None
    grace_s: float
    drain_s: float = DEFAULT_DRAIN_S
    marker: str = field(factory=lambda: f"{MARKER_ENV}={new_id()}")
    """Its entry in the child's environment: a fresh random id, unique on the host."""
    pid: int = 0
    start_time: int | None = None
    """When the leader started, in clock ticks since boot (as ``info.start_ticks`` reads it);
    None if it was gone before that could be read."""
    result: Deferred[ProcessResult] = field(factory=Deferred)
    _stderr: collections.deque[str] = field(
        factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )
    _timed_out: bool = False
    _cancelled: bool = False
    _exited: bool = False
    _timeout_call: IDelayedCall | None = None
    _kill_call: IDelayedCall | None = None
    _drain_call: IDelayedCall | None = None
    _kill_left: IDelayedCall | None = None
    """The SIGKILL of what the leader left, once something was found (``_terminate_left``)."""
    _done: bool = False

    @property
    def pgid(self) -> int:
        """The child's process group: the child leads its own (setsid)."""
        return self.pid

    def line(self, stream: str, text: str, continued: bool = False) -> None:
        """One line the child printed on ``stream``: kept for the stderr tail, passed on."""
        if stream == "stderr":
            self._stderr.append(text)
        if self.on_line is not None:
            if continued:
                self.on_line(stream, text, continued=True)
            else:
                self.on_line(stream, text)

    def canceller(self, _: Deferred[Any]) -> None:
        """For a Deferred waiting on this child: cancelling it terminates the child."""
        self.terminate()

    def terminate(self, *, timed_out: bool = False) -> Deferred[ProcessResult]:
        """SIGTERM the group, then SIGKILL it after the grace period; returns ``result``.

        Once the leader has exited the outcome is known, and this changes nothing.
        """
        if not (self._done or self._exited or self._cancelled or self._timed_out):
            self._timed_out = timed_out
            self._cancelled = not timed_out
            kill_group(self.pgid, signal.SIGTERM)
            self._kill_call = self.reactor.callLater(self.grace_s, self._kill)
        return self.result

    def _kill(self) -> None:
        self._kill_call = None
        kill_group(self.pgid, signal.SIGKILL)

    def set_timeout(self, timeout_s: float) -> None:
        """Terminate the group, as timed out, after ``timeout_s`` seconds."""
        self._timeout_call = self.reactor.callLater(timeout_s, self._expire)

    def _expire(self) -> None:
        self._timeout_call = None
        self.terminate(timed_out=True)

    def leader_exited(self, close_pipes: Callable[[], None]) -> None:
        """The group leader exited: end what it left behind, and close the pipes after
        ``drain_s`` if they are still open then."""
        self._exited = True
        self._drain_call = self.reactor.callLater(self.drain_s, close_pipes)
        self._terminate_left(self.reactor.seconds() + self.grace_s)

    def _terminate_left(self, until: float) -> None:
        """SIGTERM what the leader left, and SIGKILL it after the grace period. An orphan
        whose run cannot be told yet (in the middle of an ``execve`` a process shows no
        environment) is looked at again, until the grace period ends."""
        found, unsure = self._sweep(signal.SIGTERM)
        if found and self._kill_left is None:
            self._kill_left = self.reactor.callLater(self.grace_s, self._last_sweep)
        if unsure and self.reactor.seconds() + UNSURE_AGAIN_S < until:
            self.reactor.callLater(UNSURE_AGAIN_S, self._terminate_left, until)

    def _last_sweep(self) -> None:
        if self._sweep(signal.SIGKILL)[0]:
            self.reactor.callLater(REAP_AGAIN_S, _leftovers.reap)

    def _sweep(self, sig: int) -> tuple[bool, bool]:
        """Send ``sig`` to the group and to what left it; whether there was anything, and
        whether an orphan's run could not be told (``_Leftovers.signal``)."""
        in_group = kill_group(self.pgid, sig)
        try:
            found, unsure = _leftovers.signal(self.pid, self.marker.encode(), sig)
        except OSError:
            log.failure("cannot look for what process {pid} left behind", pid=self.pid)
            return in_group, False
        return found or in_group, unsure

    def ended(self, reason: Failure) -> None:
        """The child and its pipes are done: fire ``result`` from ``reason``."""
        self._done = True
        for call in (self._timeout_call, self._kill_call, self._drain_call):
            if call is not None and call.active():
                call.cancel()
        exit_code: int | None = None
        sig: int | None = None
        if isinstance(reason.value, error.ProcessTerminated):
            exit_code = reason.value.exitCode
            sig = reason.value.signal
        elif reason.check(error.ProcessDone):
            exit_code = 0
        self.result.callback(
            ProcessResult(
                exit_code=exit_code,
                signal=sig,
                timed_out=self._timed_out,
                cancelled=self._cancelled,
                stderr_tail="\n".join(self._stderr),
            )
        )


class _Leftovers:
    """What exited leaders left outside their groups, among this process's own children.

    This process is a child subreaper, so a leader's descendant whose parent exited is
    reparented to it. A child Twisted did not start is such an orphan; it belongs to the run
    whose leader leads its session (a ``setsid`` leader's descendants keep its session) or
    whose marker its environment holds (a daemon that started a session of its own). It is
    signalled with its group, and reaped once it is a zombie (it is this process's child:
    nobody else reaps it). A stray zombie (an orphan that ended on its own, of no run known)
    is reaped only in a process that said it starts children through Twisted alone
    (:func:`reap_strays`, the service): elsewhere it may be a ``subprocess`` child whose
    owner will wait for it.
    """

    def __init__(self) -> None:
        self._pid = 0
        self._signalled: set[int] = set()
        self.strays = False

    def subreaper(self) -> None:
        """Make this process a child subreaper, once (again in a forked child)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            error_number = ctypes.get_errno()
            raise OSError(error_number, f"cannot become a child subreaper: "
                          f"{os.strerror(error_number)}")

    def signal(self, session: int, marker: bytes, sig: int) -> tuple[bool, bool]:
        """Send ``sig`` to the orphans of the run whose leader was ``session`` or whose
        children carry ``marker``, and to their groups; whether there were any, and whether
        an orphan of another session could not be told (its environment unreadable now)."""
        own_group = os.getpgrp()
        found = unsure = False
        for pid, fields in self._orphans():
            if fields[0] == b"Z":
                if self.strays or pid in self._signalled or int(fields[3]) == session:
                    self._reap(pid)
                continue
            if int(fields[3]) != session:
                holds = environment_holds(pid, marker)
                unsure = unsure or holds is None
                if not holds:
                    continue
            try:
                os.kill(pid, sig)
            except OSError:
                continue
            found = True
            self._signalled.add(pid)
            if int(fields[2]) != own_group:
                kill_group(int(fields[2]), sig)
        return found, unsure

    def reap(self) -> None:
        """Reap the zombies of the orphans signalled so far."""
        for pid, fields in self._orphans():
            if fields[0] == b"Z" and pid in self._signalled:
                self._reap(pid)

    def _orphans(self) -> list[tuple[int, list[bytes]]]:
        """The children of this process Twisted did not start, with their ``stat`` fields."""
        known = process.reapProcessHandlers
        found = []
        for pid in children(os.getpid()):
            fields = None if pid in known else stat_fields(pid)
            if fields is not None:
                found.append((pid, fields))
        return found

    def _reap(self, pid: int) -> None:
        self._signalled.discard(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


_leftovers = _Leftovers()
"""This process's orphans: one per process, like the subreaper flag it relies on."""


def reap_strays() -> None:
    """This process starts children through Twisted alone (the service): every zombie child
    Twisted does not know is an orphan to reap, so strays never pile up among its children."""
    _leftovers.strays = True


def spawn(
    reactor: IReactorProcess,
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str],
    stdin: bytes | None = None,
    on_line: LineCallback | None = None,
    timeout_s: float | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    drain_s: float = DEFAULT_DRAIN_S,
    max_line_bytes: int | None = None,
    daemons: bool = False,
) -> ChildProcess:
    """Start ``argv`` in a new process group. Raises OSError if it cannot be started:
    FileNotFoundError if ``argv[0]`` is not found (on ``env``'s ``PATH`` if it has no slash),
    PermissionError if it may not be run.

    Lines longer than ``max_line_bytes`` reach ``on_line`` in pieces (``continued``). The child
    gets ``env`` without DataBuild's secrets (``startup.JOB_SECRETS``): every program the
    service starts (a job's ``config`` or ``exec``, a lookup, Bazel) comes through here.

    With ``daemons``, the child may start a daemon of a session of its own that is meant to
    outlive it (Bazel's server, which exits when idle): its environment gets no marker, so
    only its group and its session are ended with it.
    """
    _leftovers.subreaper()
    child = ChildProcess(reactor=reactor, on_line=on_line, grace_s=grace_s, drain_s=drain_s)
    env = without(env, JOB_SECRETS)
    if not daemons:
        name, _, value = child.marker.partition("=")
        env[name] = value
    directory = os.path.abspath(cwd)
    executable = _executable(argv[0], env, directory)
    argv = list(argv)
    if not _is_working_directory(directory):
        # posix_spawn cannot change directory: the child changes it itself.
        executable, argv = ENV, [ENV, "-C", directory, "--", *argv]

    filled = _filled_pipe(stdin or b"")
    # What does not fit in a pipe goes through the reactor, as the child reads it.
    unwritten = stdin if filled is None else None

    def start(executable: str, argv: list[str]) -> None:
        protocol = _GroupProtocol(child, unwritten, max_line_bytes)
        child_stdin: int | str = "w" if filled is None else filled
        _SessionLeader(
            reactor, executable, argv, env, None, protocol,
            childFDs={0: child_stdin, 1: "r", 2: "r"},
        )

    before = boot_ticks()
    try:
        try:
            start(executable, argv)
        except OSError as e:
            if e.errno != errno.ENOEXEC:
                raise
            # A script without a "#!" line runs under the shell, as execvp would run it.
            start(SHELL, [SHELL, executable, *argv[1:]])
    finally:
        if filled is not None:
            os.close(filled)
    # The kernel stamps a process's start during the spawn call, on the clock of boot_ticks:
    # unless a tick began meanwhile, that is the tick. Reading /proc/<pid>/stat instead
    # waits for the child's exec to finish (docs/performance.md).
    after = boot_ticks()
    child.start_time = before if before == after else start_ticks(child.pid)
    if timeout_s is not None:
        child.set_timeout(timeout_s)
    return child


_DEFAULT_SIGNALS = frozenset(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})
"""Every signal a child may have set back to its default disposition: what this process
ignores (Python ignores SIGPIPE) must not stay ignored in the child."""


class _SessionLeader(process.Process):
    """Twisted's child process, started by ``posix_spawn`` as the leader of a new session.

    Twisted has no way to ask for ``setsid``, and running ``/usr/bin/setsid`` in front of
    every program doubled the execs per job (docs/performance.md). The pipes are all the
    child inherits: every descriptor Python opens is close-on-exec (PEP 446), and so are
    the event log's (SQLite and libpq open theirs so).
    """

    def _fork(
        self,
        path: None,
        uid: None,
        gid: None,
        executable: str,
        args: list[str],
        environment: dict[str, str],
        **kwargs: Any,
    ) -> None:
        fdmap: dict[int, int] = kwargs["fdmap"]
        # A pipe on a descriptor that the child's stdio take (the service's own stdio being
        # closed) would be overwritten before it is moved: it goes over a copy above them.
        sources = {
            child: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(fdmap) + 1) if fd in fdmap else fd
            for child, fd in fdmap.items()
        }
        try:
            self.pid = os.posix_spawn(
                executable,
                args,
                environment,
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, child) for child, fd in sources.items()],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
        finally:
            for child, fd in sources.items():
                if fd != fdmap[child]:
                    os.close(fd)
        self.status = -1


def _filled_pipe(data: bytes) -> int | None:
    """The read end of a new pipe holding all of ``data``, its write end closed; None if
    ``data`` does not fit in the pipe.

    A child's stdin given so costs the reactor no writer to register and remove, and no turn
    to write in (docs/performance.md)."""
    read_end, write_end = os.pipe()
    try:
        # A write into an empty pipe that fits its capacity completes without blocking.
        fits = len(data) <= fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        if fits and data:
            fits = os.write(write_end, data) == len(data)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    if not fits:
        os.close(read_end)
        return None
    return read_end


def _executable(program: str, env: Mapping[str, str], directory: str) -> str:
    """The file ``program`` names, in ``directory`` or on the child's ``PATH`` (as
    ``execvp`` would look); raises FileNotFoundError if there is none."""
    if os.sep in program:
        path = os.path.join(directory, program)
        found = path if os.path.exists(path) else None
    else:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return found


def _is_working_directory(directory: str) -> bool:
    """Whether ``directory`` is the service's own working directory (the workspace root,
    where the service is started)."""
    try:
        return directory == os.getcwd()
    except OSError:
        return False
