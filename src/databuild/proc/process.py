"""Child processes, each in its own process group, with line callbacks, timeout and group kill.

This is the one place DataBuild starts programs: jobs' ``config`` and ``exec`` entrypoints,
custom lookups and Bazel. Every child runs under ``setsid`` so that it leads a new process
group; terminating a child signals the whole group, so no grandchild outlives it.
"""

from __future__ import annotations

import collections
import os
import signal
from collections.abc import Callable, Mapping, Sequence

from attrs import define, field, frozen
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

SETSID = "/usr/bin/setsid"
ENV = "/usr/bin/env"
DEFAULT_GRACE_S = 5.0
STDERR_TAIL_LINES = 20

LineCallback = Callable[[str, str], None]
"""Called with ``(stream, text)`` for each line, ``stream`` being ``"stdout"`` or ``"stderr"``."""


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
    def __init__(self, stream: str, sink: Callable[[str, str], None]) -> None:
        self._stream = stream
        self._sink = sink
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._emit(line)

    def close(self) -> None:
        if self._buffer:
            self._emit(self._buffer)
            self._buffer = b""

    def _emit(self, line: bytes) -> None:
        self._sink(self._stream, line.rstrip(b"\r").decode("utf-8", errors="replace"))


class _GroupProtocol(ProcessProtocol):
    def __init__(self, child: ChildProcess, stdin: bytes | None) -> None:
        self._child = child
        self._stdin = stdin
        self._splitters = {
            1: _LineSplitter("stdout", child.line),
            2: _LineSplitter("stderr", child.line),
        }

    def connectionMade(self) -> None:
        # A child that exits at once is reaped inside spawnProcess, before it returns: the
        # pid must be known by then, or the group kill in processExited has no target.
        self._child.pid = self.transport.pid
        if self._stdin:
            self.transport.write(self._stdin)
        self.transport.closeStdin()

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        splitter = self._splitters.get(childFD)
        if splitter is not None:
            splitter.feed(data)

    def processExited(self, reason: Failure) -> None:
        # The leader is gone; anything it left in its group goes too, so that the pipes close.
        self._child.leader_exited()

    def processEnded(self, reason: Failure) -> None:
        for splitter in self._splitters.values():
            splitter.close()
        self._child.ended(reason)


@define(eq=False)
class ChildProcess:
    """A running child process group. ``result`` fires with a ProcessResult, never errbacks."""

    reactor: IReactorTime
    on_line: LineCallback | None
    grace_s: float
    pid: int = 0
    result: Deferred[ProcessResult] = field(factory=Deferred)
    _stderr: collections.deque[str] = field(
        factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )
    _timed_out: bool = False
    _cancelled: bool = False
    _timeout_call: IDelayedCall | None = None
    _kill_call: IDelayedCall | None = None
    _done: bool = False

    @property
    def pgid(self) -> int:
        """The child's process group: the child leads its own (setsid)."""
        return self.pid

    def line(self, stream: str, text: str) -> None:
        """One line the child printed on ``stream``: kept for the stderr tail, passed on."""
        if stream == "stderr":
            self._stderr.append(text)
        if self.on_line is not None:
            self.on_line(stream, text)

    def terminate(self, *, timed_out: bool = False) -> Deferred[ProcessResult]:
        """SIGTERM the group, then SIGKILL it after the grace period; returns ``result``."""
        if not self._done and not (self._cancelled or self._timed_out):
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

    def leader_exited(self) -> None:
        """The group leader exited: SIGKILL what it left behind in its group."""
        kill_group(self.pgid, signal.SIGKILL)

    def ended(self, reason: Failure) -> None:
        """The child and its pipes are done: fire ``result`` from ``reason``."""
        self._done = True
        for call in (self._timeout_call, self._kill_call):
            if call is not None and call.active():
                call.cancel()
        exit_code: int | None = None
        sig: int | None = None
        if reason.check(error.ProcessTerminated):
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
) -> ChildProcess:
    """Start ``argv`` in a new process group. Raises OSError if it cannot be started."""
    child = ChildProcess(reactor=reactor, on_line=on_line, grace_s=grace_s)  # type: ignore[arg-type]
    transport = reactor.spawnProcess(
        _GroupProtocol(child, stdin),
        SETSID,
        [SETSID, *_in_directory(os.path.abspath(cwd)), *argv],
        env=dict(env),
        path=None,
        childFDs={0: "w", 1: "r", 2: "r"},
    )
    child.pid = transport.pid
    if timeout_s is not None:
        child.set_timeout(timeout_s)
    return child


def _in_directory(directory: str) -> list[str]:
    """The argv prefix that runs a program in ``directory``.

    Twisted starts children with ``posix_spawn`` only when they keep the parent's working
    directory; otherwise it forks, which costs milliseconds of the reactor's time for a large
    parent. So the child changes directory itself, with ``env -C``, unless it need not.
    """
    try:
        if directory == os.getcwd():
            return []
    except OSError:
        pass
    return [ENV, "-C", directory, "--"]
