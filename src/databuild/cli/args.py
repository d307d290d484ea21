"""The command line of ``databuild`` (SPEC §6), parsed with argparse; usage errors exit 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from databuild.cli.render import short_status

STATUSES = {
    "build": (
        "BUILD_REQUEST_RECEIVED",
        "BUILD_REQUEST_PLANNING",
        "BUILD_REQUEST_ANALYSIS_COMPLETED",
        "BUILD_REQUEST_EXECUTING",
        "BUILD_REQUEST_COMPLETED",
        "BUILD_REQUEST_FAILED",
        "BUILD_REQUEST_CANCELLED",
    ),
    "job": (
        "JOB_SCHEDULED",
        "JOB_RUNNING",
        "JOB_COMPLETED",
        "JOB_FAILED",
        "JOB_CANCELLED",
        "JOB_SKIPPED",
    ),
    "partition": (
        "PARTITION_REQUESTED",
        "PARTITION_SCHEDULED",
        "PARTITION_BUILDING",
        "PARTITION_AVAILABLE",
        "PARTITION_FAILED",
        "PARTITION_DELEGATED",
    ),
}
MAX_LIMIT = 1000


def status_type(kind: str) -> Callable[[str], str]:
    """An argparse type taking a status of ``kind`` in full or short lower-case form."""
    by_name = {name: full for full in STATUSES[kind] for name in (full.lower(), short_status(full))}

    def parse(text: str) -> str:
        full = by_name.get(text.strip().lower())
        if full is None:
            names = ", ".join(short_status(s) for s in STATUSES[kind])
            raise argparse.ArgumentTypeError(f"unknown {kind} status {text!r}; one of: {names}")
        return full

    parse.__name__ = f"{kind} status"
    return parse


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def limit_type(text: str) -> int:
    """``--limit``: a whole number in 1..MAX_LIMIT."""
    value = _whole_number(text)
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is out of range 1..{MAX_LIMIT}")
    return value


def offset_type(text: str) -> int:
    """``--offset``: a whole number, 0 or more."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _globals(defaults: bool) -> argparse.ArgumentParser:
    """``--workspace`` and ``--format``: before the command, or after it on any subcommand."""
    parser = argparse.ArgumentParser(add_help=False)
    keep: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--workspace", metavar="DIR", help="the workspace (default: $DATABUILD_WORKSPACE, "
        "else the nearest directory above holding databuild.toml)", **keep
    )
    parser.add_argument(
        "--format", choices=("table", "json"), help="output for people or programs",
        **({"default": "table"} if defaults else keep),
    )
    return parser


def _pages(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=limit_type, default=100, metavar="N",
        help=f"at most N rows, 1..{MAX_LIMIT} (default: 100)",
    )  # fmt: skip
    parser.add_argument(
        "--offset", type=offset_type, default=0, metavar="N",
        help="skip the first N rows (default: 0)",
    )  # fmt: skip


def _status(parser: argparse.ArgumentParser, kind: str, rows: str) -> None:
    names = ", ".join(short_status(s) for s in STATUSES[kind])
    parser.add_argument(
        "--status", type=status_type(kind), metavar="S",
        help=f"only {rows} in status S: one of {names} (or the full name, such as "
        f"{STATUSES[kind][-2]}); default: every status",
    )  # fmt: skip


Parser = argparse.ArgumentParser
Adder = Callable[[Any, str, str], Parser]
"""Adds one subcommand to a subparsers action: ``(subparsers, name, help) -> its parser``."""


def _refs(parser: Parser, what: str) -> None:
    """REF arguments (brace patterns) and ``--refs-file``; one of them is needed."""
    parser.add_argument(
        "refs", nargs="*", metavar="REF",
        help=f"partition refs {what}; braces expand like a shell's: {{a,b}}, {{01..31}}, "
        "{2026-01-01..2026-03-31}",
    )  # fmt: skip
    parser.add_argument(
        "--refs-file", metavar="FILE",
        help="also the refs in FILE, one a line, as written ('-': standard input; blank lines "
        "and lines starting with # are skipped)",
    )  # fmt: skip


def _build(add: Adder, sub: Any) -> None:
    build = add(sub, "build", "request a build and stream its progress until it ends")
    _refs(build, "to build")
    build.add_argument("--background", action="store_true", help="print the build id and return")
    build.add_argument("--force", action="store_true", help="rebuild even if available")


def _tail(add: Adder, sub: Any) -> None:
    add(sub, "tail", "attach to a build's progress stream").add_argument(
        "build_id", metavar="BUILD_ID"
    )


def _analyze(add: Adder, sub: Any) -> None:
    _refs(add(sub, "analyze", "show the job graph a build would run"), "to analyse")


def _builds(add: Adder, sub: Any) -> None:
    listing = add(sub, "list", "builds, newest first")
    _status(listing, "build", "builds")
    _pages(listing)
    add(sub, "show", "one build").add_argument("id", metavar="ID")
    add(sub, "cancel", "cancel a running build").add_argument("id", metavar="ID")
    retry = add(sub, "retry", "build again what a build requested and did not make available")
    retry.add_argument("id", metavar="ID")
    retry.add_argument("--background", action="store_true", help="print the build id and return")


def _partitions(add: Adder, sub: Any) -> None:
    listing = add(sub, "list", "partitions, newest first")
    _status(listing, "partition", "partitions")
    listing.add_argument("--pattern", metavar="GLOB", help="only refs matching GLOB")
    _pages(listing)
    add(sub, "show", "one partition and its history").add_argument("ref", metavar="REF")


def _jobs(add: Adder, sub: Any) -> None:
    _pages(add(sub, "list", "every job with its run statistics"))
    add(sub, "show", "one job").add_argument("label", metavar="LABEL")


def _tasks(add: Adder, sub: Any) -> None:
    listing = add(sub, "list", "job runs, newest first")
    listing.add_argument("--build", metavar="ID", help="only runs of this build")
    listing.add_argument("--job", metavar="LABEL", help="only runs of this job")
    _status(listing, "job", "job runs")
    _pages(listing)
    add(sub, "show", "one job run").add_argument("id", metavar="ID")
    add(sub, "cancel", "cancel a job run").add_argument("id", metavar="ID")
    logs = add(sub, "logs", "a job run's log lines")
    logs.add_argument("id", metavar="ID")
    logs.add_argument("--follow", action="store_true",
                      help="keep printing lines as the run writes them, until it ends")
    logs.add_argument("--tail", type=offset_type, metavar="N", help="only the last N lines")
    logs.add_argument("--raw", action="store_true",
                      help="the text as the job printed it, control characters and all")


def _workers(add: Adder, sub: Any) -> None:
    add(sub, "list", "the Celery workers that run this log's jobs, with their heartbeats")


def _worker(add: Adder, sub: Any) -> None:
    worker = add(sub, "worker", "run a Celery worker for the workspace's job runs (SPEC §10)")
    worker.add_argument("--broker", metavar="URL",
                        help="the broker ($DATABUILD_BROKER_URL, [executor] broker, "
                        "else RabbitMQ on 127.0.0.1)")
    worker.add_argument("--event-log", metavar="URI",
                        help="the PostgreSQL event log ($DATABUILD_EVENT_LOG, "
                        "[service] event_log)")
    worker.add_argument("--queue", action="append", metavar="Q", dest="queues",
                        help="a queue to take runs from; repeatable (default: "
                        "[executor] queue, else databuild)")
    worker.add_argument("--concurrency", type=_positive, default=None, metavar="N",
                        help="runs at once (default: CPUs)")
    worker.add_argument("--name", metavar="NAME",
                        help="this worker's name in the log and DATABUILD_WORKER "
                        "(default: the host name)")
    worker.add_argument("--lease-timeout", type=_positive, default=30, metavar="S",
                        help="stop the runs after this many seconds without the event log "
                        "(default: 30, the services' lease timeout)")


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _dashboard(add: Adder, sub: Any) -> None:
    add(sub, "dashboard", "print (and open) a one-time login link to the web dashboard")


def _service(add: Adder, sub: Any) -> None:
    add(sub, "status", "show the service (never starts one)")
    add(sub, "start", "start the service unless it runs")
    stop = add(sub, "stop", "stop the service and wait until it is gone")
    stop.add_argument("--force", action="store_true", help="stop even while builds run")
    restart = add(sub, "restart", "stop the service once its builds end, then start a new one")
    restart.add_argument(
        "--force", action="store_true", help="cancel running builds instead of waiting for them"
    )


COMMANDS: dict[str, tuple[str, Callable[[Adder, Any], None]]] = {
    "build": ("", _build),
    "tail": ("", _tail),
    "analyze": ("", _analyze),
    "builds": ("list, show, cancel or retry builds", _builds),
    "partitions": ("the partition catalog", _partitions),
    "jobs": ("job statistics", _jobs),
    "tasks": ("job runs", _tasks),
    "service": ("the workspace's service", _service),
    "dashboard": ("", _dashboard),
    "workers": ("the Celery workers", _workers),
    "worker": ("", _worker),
}
"""Each command: the help of a command group (empty for a single command), and what adds it."""


def build_parser(only: str | None = None) -> Parser:
    """The parser of ``databuild``; with ``only``, every other command is a bare name (enough
    for ``--help``), which keeps start-up cheap (SPEC §7)."""
    common = _globals(defaults=False)
    parser = argparse.ArgumentParser(
        prog="databuild",
        description="Build data partitions with the workspace's DataBuild service.",
        parents=[_globals(defaults=True)],
    )
    parser.add_argument(
        "--version", action="store_true",
        help="print the version of databuild, and of the service when one runs",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(sub: Any, name: str, help: str) -> Parser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    def placeholder(sub: Any, name: str, help: str) -> Parser:
        return sub.add_parser(name, help=help)

    for name, (group_help, fill) in COMMANDS.items():
        wanted = only is None or only == name
        if not group_help:
            fill(add if wanted else placeholder, commands)
        elif wanted:
            actions = add(commands, name, group_help).add_subparsers(
                dest="action", metavar="ACTION", required=True
            )
            fill(add, actions)
        else:
            placeholder(commands, name, group_help)
    return parser


def _command_word(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, skipping the global options and their values."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in ("--workspace", "--format"):
            skip = True
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; on a usage error argparse prints it and exits 2.

    ``databuild [--workspace DIR] [--format F] --version`` is the command ``version``.
    """
    command = _command_word(argv)
    if command is None and "--version" in argv:
        parser = argparse.ArgumentParser(prog="databuild", parents=[_globals(defaults=True)])
        parser.add_argument("--version", action="store_true")
        return parser.parse_args(argv, argparse.Namespace(command="version", action=None))
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if command in ("build", "analyze") and not args.refs and args.refs_file is None:
        parser.error(f"{command}: give at least one REF, or --refs-file FILE")
    return args


def gather_refs(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    """The refs of ``build`` / ``analyze``: the REF patterns expanded, then ``--refs-file``'s
    lines (SPEC §6); CliError (exit 2) for a malformed pattern, an unreadable file or more
    refs than one request may carry."""
    from databuild.cli.exits import USAGE, CliError
    from databuild.refs import MAX_REFS, RefPatternError, expand, ref_lines, too_many

    try:
        refs = expand(args.refs)
        if args.refs_file is None:
            return refs
        where = "standard input" if args.refs_file == "-" else args.refs_file
        try:
            if args.refs_file == "-":
                listed = ref_lines(stdin, MAX_REFS, where)
            else:
                with open(args.refs_file, encoding="utf-8") as lines:
                    listed = ref_lines(lines, MAX_REFS, where)
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise CliError(f"cannot read --refs-file {where}: {reason}", USAGE) from None
        total = len(refs) + len(listed)
        if total > MAX_REFS:
            raise too_many(
                f"the REF arguments ({len(refs):,}) and {where} ({len(listed):,}) make {total:,} "
                "refs"
            )
        if not total:
            raise CliError(f"{where} holds no ref (only blank lines and # comments)", USAGE)
        return refs + listed
    except RefPatternError as e:
        raise CliError(str(e), USAGE) from None
