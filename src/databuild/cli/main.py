"""``databuild``: the thin client of the DataBuild service (SPEC §6).

Start-up cost matters (SPEC §7): this module imports only argparse at load time; Twisted,
treq and the commands load once the arguments are known to be good.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from databuild.cli.args import gather_refs, parse_args

if TYPE_CHECKING:
    from databuild.cli.servicefiles import Launch

NEVER_START = {
    ("service", "status"), ("service", "stop"), ("service", "restart"), ("version", None)
}
"""Commands that are not to start a service before they run (``restart`` stops one first)."""

INTERRUPTED = 130
"""Ctrl-C outside a build's progress: the shell's convention."""
OUTPUT_CLOSED = 141
"""Stdout closed by its reader: what a shell reports for a death by SIGPIPE."""


def command() -> int:
    """The ``databuild`` console script: ``main`` in a process that ends with it.

    What a command loads lives as long as the process, so the garbage collector stays off it:
    off while it loads, frozen once loaded (:func:`settled`), and frozen again on the way out,
    where the interpreter's final collections would otherwise walk it all (a warm ``builds
    list`` took 0.43 s instead of 0.33, docs/performance.md, "CLI").
    """
    gc.disable()
    try:
        return main()
    finally:
        gc.freeze()


def settled() -> None:
    """Once the command's modules are loaded: if the console script kept the collector off
    while they loaded, it skips them from now on and collects the rest as usual (a build may
    stream its progress for hours)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``databuild`` command; returns its exit code."""
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.command == "worker":  # a long-running process, not a client of the service
            from databuild.cli.worker import worker

            settled()
            return worker(args, os.environ, Path.cwd(), sys.stderr)
        return run(args, os.environ, Path.cwd(), sys.stdout, sys.stderr)
    except KeyboardInterrupt:  # before the reactor took over SIGINT
        return INTERRUPTED
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OUTPUT_CLOSED


def prestart(
    args: argparse.Namespace, environ: Mapping[str, str], cwd: Path, err: TextIO
) -> tuple[int, Launch] | None:
    """Launch the service before loading Twisted if it plainly does not run, so that it boots
    while this process loads (SPEC §7's cold start); see ``servicefiles.prestart``."""
    from databuild.cli.exits import CliError, say
    from databuild.cli.servicefiles import prestart, resolve_workspace

    command = (args.command, getattr(args, "action", None))
    if environ.get("DATABUILD_SERVICE_URL") or command in NEVER_START:
        return None
    try:
        workspace = resolve_workspace(args.workspace, environ, cwd)
    except CliError:
        return None  # the command reports it
    return prestart(workspace, environ, lambda text: say(err, text))


def run(
    args: argparse.Namespace, environ: Mapping[str, str], cwd: Path, out: TextIO, err: TextIO
) -> int:
    """Run the command ``args`` names on the reactor until it is done; returns the exit code.

    SIGINT goes to the command's ``on_interrupt`` when it has one (``build``, ``tail``);
    otherwise it ends the command at once; once the command has ended, it is ignored.
    """
    import signal

    from databuild.cli.exits import UNAVAILABLE, CliError, say

    try:
        if args.command in ("build", "analyze"):  # before any service is started for them
            args.refs = gather_refs(args, sys.stdin)
        started = prestart(args, environ, cwd, err)
    except CliError as e:
        say(err, e.message)
        return e.exit_code

    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.interfaces import IReactorFromThreads
    from twisted.python.failure import Failure

    from databuild.cli.commands import Context, command_of

    ctx = Context(reactor, args, environ, cwd, out, err, started)
    outcome: list[object] = []

    def finish(result: object) -> None:
        if not outcome:
            outcome.append(result)
            reactor.stop()

    def begin() -> None:
        ensureDeferred(command_of(args)(ctx)).addBoth(finish)  # type: ignore[arg-type]

    def interrupted() -> None:
        if ctx.on_interrupt is not None:
            ctx.on_interrupt()
        else:
            finish(INTERRUPTED)

    threads = cast(IReactorFromThreads, reactor)
    signal.signal(signal.SIGINT, lambda *_: threads.callFromThread(interrupted))
    reactor.callWhenRunning(begin)
    settled()
    try:
        reactor.run()
    finally:
        # The outcome is known: a late Ctrl-C (the second of two quick ones) must neither
        # change it nor kill the process on its way out (Python dies of an uncaught SIGINT).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    result = outcome[0] if outcome else INTERRUPTED
    if isinstance(result, int):
        return result
    assert isinstance(result, Failure)
    if isinstance(result.value, BrokenPipeError):
        raise result.value
    if isinstance(result.value, CliError):
        say(err, result.value.message)
        return result.value.exit_code
    say(err, f"unexpected error: {result.getErrorMessage()}")
    if environ.get("DATABUILD_DEBUG"):
        err.write(result.getTraceback())
    return UNAVAILABLE
