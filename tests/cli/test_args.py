"""The command line: every command of SPEC §6 parses; bad usage exits 2 naming the problem."""

from __future__ import annotations

import pytest

from databuild.cli.args import parse_args


@pytest.mark.parametrize(
    "argv",
    [
        ["build", "a/1", "b/2", "--background", "--force"],
        ["tail", "b1"],
        ["analyze", "a/1"],
        ["build", "day/{01..31}", "--refs-file", "refs.txt"],
        ["analyze", "--refs-file", "-"],
        ["builds", "retry", "b1", "--background"],
        ["builds", "list", "--status", "failed", "--limit", "5", "--offset", "10"],
        ["builds", "show", "b1"],
        ["builds", "cancel", "b1"],
        ["partitions", "list", "--status", "available", "--pattern", "daily_*", "--limit", "1"],
        ["partitions", "show", "daily_votes/2026-01-01"],
        ["jobs", "list", "--limit", "3"],
        ["jobs", "show", "//jobs:x"],
        ["tasks", "list", "--build", "b1", "--job", "j", "--status", "running", "--limit", "2"],
        ["tasks", "show", "t1"],
        ["tasks", "cancel", "t1"],
        ["tasks", "logs", "t1"],
        ["service", "status"],
        ["service", "start"],
        ["service", "stop", "--force"],
    ],
)
def test_every_command_of_the_spec_parses(argv: list[str]) -> None:
    args = parse_args(argv)
    assert args.command == argv[0]
    assert args.format == "table"


def test_global_options_go_before_or_after_the_command() -> None:
    before = parse_args(["--workspace", "/w", "--format", "json", "builds", "list"])
    after = parse_args(["builds", "list", "--workspace", "/w", "--format", "json"])
    assert (before.workspace, before.format) == (after.workspace, after.format) == ("/w", "json")


def test_short_and_full_status_names_mean_the_same_status() -> None:
    short = parse_args(["builds", "list", "--status", "completed"]).status
    full = parse_args(["builds", "list", "--status", "BUILD_REQUEST_COMPLETED"]).status
    assert short == full == "BUILD_REQUEST_COMPLETED"
    assert parse_args(["tasks", "list", "--status", "skipped"]).status == "JOB_SKIPPED"
    assert (
        parse_args(["partitions", "list", "--status", "Available"]).status
        == "PARTITION_AVAILABLE"
    )


def test_list_paging_defaults_to_the_apis_defaults() -> None:
    args = parse_args(["partitions", "list"])
    assert (args.limit, args.offset, args.status, args.pattern) == (100, 0, None, None)


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["build"], "give at least one REF, or --refs-file FILE"),
        (["analyze"], "give at least one REF, or --refs-file FILE"),
        (["builds", "retry"], "ID"),
        (["builds", "list", "--status", "available"], "unknown build status 'available'"),
        (["tasks", "list", "--limit", "0"], "out of range 1..1000"),
        (["tasks", "list", "--limit", "1001"], "out of range 1..1000"),
        (["jobs", "list", "--offset", "-1"], "negative"),
        (["jobs", "list", "--limit", "ten"], "not a whole number"),
        (["--format", "yaml", "builds", "list"], "invalid choice"),
        (["service", "reload"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_and_say_why(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert complaint in capsys.readouterr().err


def test_a_workspace_named_like_a_command_is_not_taken_for_one() -> None:
    args = parse_args(["--workspace", "builds", "build", "a/1"])
    assert (args.workspace, args.command, args.refs) == ("builds", "build", ["a/1"])


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        parse_args(["--help"])
    assert exit.value.code == 0
    listed = capsys.readouterr().out
    for command in ("build", "tail", "analyze", "builds", "partitions", "jobs", "tasks",
                    "service"):
        assert f"    {command} " in listed
