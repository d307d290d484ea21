"""The command line of ``databuild`` (SPEC §6), parsed with argparse; usage errors exit 2."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

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


def limit_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{value} is out of range 1..{MAX_LIMIT}")
    return value


def offset_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _globals(defaults: bool) -> argparse.ArgumentParser:
    """``--workspace`` and ``--format``: before the command, or after it on any subcommand."""
    parser = argparse.ArgumentParser(add_help=False)
    keep = {} if defaults else {"default": argparse.SUPPRESS}
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
    parser.add_argument("--limit", type=limit_type, default=100, help="at most N rows (1..1000)")
    parser.add_argument("--offset", type=offset_type, default=0, help="skip the first N rows")


def build_parser() -> argparse.ArgumentParser:
    common = _globals(defaults=False)
    parser = argparse.ArgumentParser(
        prog="databuild",
        description="Build data partitions with the workspace's DataBuild service.",
        parents=[_globals(defaults=True)],
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(sub: argparse._SubParsersAction, name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common])

    build = command(commands, "build", "request a build and stream its progress until it ends")
    build.add_argument("refs", nargs="+", metavar="REF", help="partition refs to build")
    build.add_argument("--background", action="store_true", help="print the build id and return")
    build.add_argument("--force", action="store_true", help="rebuild even if available")

    tail = command(commands, "tail", "attach to a build's progress stream")
    tail.add_argument("build_id", metavar="BUILD_ID")

    analyze = command(commands, "analyze", "show the job graph a build would run")
    analyze.add_argument("refs", nargs="+", metavar="REF")

    builds = commands.add_parser("builds", help="list, show or cancel builds").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    listing = command(builds, "list", "builds, newest first")
    listing.add_argument("--status", type=status_type("build"))
    _pages(listing)
    command(builds, "show", "one build").add_argument("id", metavar="ID")
    command(builds, "cancel", "cancel a running build").add_argument("id", metavar="ID")

    partitions = commands.add_parser("partitions", help="the partition catalog").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    listing = command(partitions, "list", "partitions, newest first")
    listing.add_argument("--status", type=status_type("partition"))
    listing.add_argument("--pattern", metavar="GLOB", help="only refs matching GLOB")
    _pages(listing)
    command(partitions, "show", "one partition and its history").add_argument("ref", metavar="REF")

    jobs = commands.add_parser("jobs", help="job statistics").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    _pages(command(jobs, "list", "every job with its run statistics"))
    command(jobs, "show", "one job").add_argument("label", metavar="LABEL")

    tasks = commands.add_parser("tasks", help="job runs").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    listing = command(tasks, "list", "job runs, newest first")
    listing.add_argument("--build", metavar="ID", help="only runs of this build")
    listing.add_argument("--job", metavar="LABEL", help="only runs of this job")
    listing.add_argument("--status", type=status_type("job"))
    _pages(listing)
    command(tasks, "show", "one job run").add_argument("id", metavar="ID")
    command(tasks, "cancel", "cancel a job run").add_argument("id", metavar="ID")
    command(tasks, "logs", "a job run's log lines").add_argument("id", metavar="ID")

    service = commands.add_parser("service", help="the workspace's service").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    command(service, "status", "show the service (never starts one)")
    command(service, "start", "start the service unless it runs")
    stop = command(service, "stop", "stop the service and wait until it is gone")
    stop.add_argument("--force", action="store_true", help="stop even while builds run")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv``; on a usage error argparse prints it and exits 2."""
    return build_parser().parse_args(argv)
