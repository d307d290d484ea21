"""Running Bazel in a workspace: ``bazel build``, ``bazel info``, where a target's executable is.

Each call here is one Bazel client process started with :func:`databuild.proc.process.spawn`
in the workspace root. Bazel's output goes to the service log line by line; a failed command
raises :class:`~databuild.errors.AnalysisError` carrying Bazel's own error lines. Callers make
sure that only one Bazel command runs at a time (see
:class:`databuild.executor.commands.JobCommands`).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from attrs import define, field, frozen
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger

from databuild.errors import AnalysisError
from databuild.proc.process import ChildProcess, ProcessResult, spawn

# The client's progress output as plain lines, whether or not it writes to a terminal.
PLAIN_OUTPUT = ("--color=no", "--curses=no")
ERROR_LINES = 25
"""How many of Bazel's error lines an AnalysisError carries."""

_LABEL = re.compile(r"(?:@(?P<repo>[\w.-]*))?//(?P<package>[^:\s]*)(?::(?P<name>\S+))?")


def executable_path(target: str) -> PurePosixPath:
    """Where, under ``bazel-bin``, ``bazel build`` puts the executable of the rule ``target``.

    An executable rule's (``py_binary``, ``sh_binary``, ...) output is named after the rule, in
    its package's directory: ``//jobs:ingest`` → ``jobs/ingest``, ``@repo//p:n`` →
    ``external/repo/p/n``. Raises ValueError for anything but one absolute label.
    """
    match = _LABEL.fullmatch(target)
    if match is None:
        raise ValueError(f"{target!r} is not an absolute Bazel label like '//package:name'")
    package = match["package"].strip("/")
    name = match["name"] or PurePosixPath(package).name
    if not name or name in ("all", "*", "all-targets") or package.endswith("..."):
        raise ValueError(f"{target!r} names a set of targets, not one executable target")
    repo = ("external", match["repo"]) if match["repo"] else ()
    return PurePosixPath(*repo, package, name)


@define
class _Output:
    """Bazel's output lines, logged as they come; its error lines are kept for the message."""

    log: Logger
    fields: Mapping[str, object]
    stdout: list[str] = field(factory=list)
    _errors: collections.deque[str] = field(factory=lambda: collections.deque(maxlen=ERROR_LINES))
    _tail: collections.deque[str] = field(factory=lambda: collections.deque(maxlen=ERROR_LINES))
    _in_error: bool = False

    def __call__(self, stream: str, text: str, continued: bool = False) -> None:  # uncapped
        self.log.info("bazel: {line}", line=text, stream=stream, **self.fields)
        if stream == "stdout":
            self.stdout.append(text)
        self._tail.append(text)
        # An error's continuation lines (a Starlark traceback, say) are indented.
        self._in_error = text.startswith("ERROR:") or (self._in_error and text[:1] in " \t")
        if self._in_error:
            self._errors.append(text)

    def errors(self) -> str:
        """Bazel's last ``ERROR:`` lines with their continuations, else its last lines."""
        return "\n".join(self._errors or self._tail)


@frozen
class Bazel:
    """The Bazel client of one workspace: ``command`` with its startup options, then flags."""

    reactor: IReactorProcess
    root: Path
    command: tuple[str, ...]
    build_flags: tuple[str, ...]
    env: Mapping[str, str]

    log = Logger()

    async def build(self, targets: Sequence[str]) -> None:
        """``bazel build`` every target in one invocation; AnalysisError if it fails."""
        fields = {"workspace": str(self.root), "targets": tuple(targets)}
        self.log.info("bazel build started: {targets}", **fields)
        output = _Output(self.log, fields)
        outcome = "did not start"
        try:
            result = await self._run("build", *self.build_flags, "--", *targets, output=output)
            outcome = result.describe()
        except CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.log.info("bazel build finished: {targets} {outcome}", outcome=outcome, **fields)
        if not result.succeeded:
            raise AnalysisError(
                f"bazel build of {' '.join(targets)} failed ({result.describe()}):\n"
                f"{output.errors()}"
            )

    async def info(self, key: str) -> str:
        """``bazel info KEY`` under the same flags as builds (they decide paths like bazel-bin)."""
        fields = {"workspace": str(self.root), "targets": ()}
        output = _Output(self.log, fields)
        result = await self._run("info", *self.build_flags, key, output=output)
        if not result.succeeded:
            why = result.describe()
            raise AnalysisError(f"bazel info {key} failed ({why}):\n{output.errors()}")
        if not output.stdout:
            raise AnalysisError(f"bazel info {key} printed no answer:\n{output.errors()}")
        return output.stdout[-1].strip()

    async def _run(self, verb: str, *args: str, output: _Output) -> ProcessResult:
        argv = (*self.command, verb, *PLAIN_OUTPUT, *args)
        try:
            # Bazel's server outlives each command (docs/bazel.md): only the client is ours.
            child = spawn(
                self.reactor, argv, cwd=self.root, env=self.env, on_line=output, daemons=True
            )
        except FileNotFoundError as e:
            raise AnalysisError(
                f"{argv[0]!r} was not found; is Bazel installed, "
                f"or does [bazel] command in databuild.toml name it?"
            ) from e
        except OSError as e:
            raise AnalysisError(f"cannot start {argv[0]}: {e}") from e
        return await _until_ended(child)


async def _until_ended(child: ChildProcess) -> ProcessResult:
    """Wait for ``child``; if the wait is cancelled, stop it and wait until it has ended.

    Waiting out the end keeps "one Bazel command at a time" true even for cancelled builds.
    """
    waiting: Deferred[ProcessResult] = Deferred(child.canceller)

    def ended(result: ProcessResult) -> ProcessResult:
        if not waiting.called:
            waiting.callback(result)
        return result

    child.result.addCallback(ended)
    try:
        return await waiting
    except CancelledError:
        await child.result
        raise
