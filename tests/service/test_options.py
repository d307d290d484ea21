"""``twistd databuild`` options: checks, precedence and the non-loopback refusal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from twisted.python.usage import UsageError

from databuild.service.settings import ENV_IDLE_TIMEOUT
from databuild.service.tap import Options, SettingError
from databuild.startup import ENV_EVENT_LOG


def parsed(workspace: Path, *args: str, env: dict[str, str] | None = None,
           monkeypatch: pytest.MonkeyPatch) -> Options:
    for name in (ENV_IDLE_TIMEOUT, ENV_EVENT_LOG):
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    options = Options()
    options.parseOptions(["--workspace", str(workspace), *args])
    return options


def with_service_table(workspace: Path, table: str) -> Path:
    graph = workspace / "databuild.toml"
    text = graph.read_text()
    head, _, jobs = text.partition("[[jobs]]")
    graph.write_text(f"{head}\n[service]\n{table}\n\n[[jobs]]{jobs}")
    return workspace


def test_defaults_without_flags_env_or_file(color_votes: Path, monkeypatch) -> None:
    config = parsed(color_votes, monkeypatch=monkeypatch).config
    assert (config.port, config.port_range, config.interface) == (8080, 20, "127.0.0.1")
    assert config.idle_timeout_s == 300
    assert config.event_log == ".databuild/bel.sqlite"
    assert config.max_parallel_jobs >= 1
    assert len(config.token) >= 32
    assert (config.heartbeat_s, config.lease_timeout_s) == (5, 30)


def test_lease_flags(color_votes: Path, monkeypatch) -> None:
    config = parsed(
        color_votes, "--heartbeat", "0.5", "--lease-timeout", "3", monkeypatch=monkeypatch
    ).config
    assert (config.heartbeat_s, config.lease_timeout_s) == (0.5, 3)


def test_each_start_gets_a_fresh_token(color_votes: Path, monkeypatch) -> None:
    first = parsed(color_votes, monkeypatch=monkeypatch).config.token
    assert parsed(color_votes, monkeypatch=monkeypatch).config.token != first


def test_graph_file_overrides_defaults(color_votes: Path, monkeypatch) -> None:
    with_service_table(
        color_votes,
        'event_log = "file.sqlite"\nport = 9100\nidle_timeout = 7\nmax_parallel_jobs = 3',
    )
    config = parsed(color_votes, monkeypatch=monkeypatch).config
    assert (config.event_log, config.port, config.idle_timeout_s, config.max_parallel_jobs) == (
        "file.sqlite", 9100, 7, 3)


def test_environment_overrides_graph_file(color_votes: Path, monkeypatch) -> None:
    with_service_table(color_votes, 'event_log = "file.sqlite"\nidle_timeout = 7')
    config = parsed(
        color_votes,
        env={ENV_IDLE_TIMEOUT: "11", ENV_EVENT_LOG: "env.sqlite"},
        monkeypatch=monkeypatch,
    ).config
    assert (config.event_log, config.idle_timeout_s) == ("env.sqlite", 11)


def test_flags_override_environment_and_graph_file(color_votes: Path, monkeypatch) -> None:
    with_service_table(color_votes, "port = 9100\nidle_timeout = 7\nmax_parallel_jobs = 3")
    config = parsed(
        color_votes,
        "--port", "0", "--idle-timeout", "0", "--event-log", "flag.sqlite",
        "--max-parallel-jobs", "5",
        env={ENV_IDLE_TIMEOUT: "11", ENV_EVENT_LOG: "env.sqlite"},
        monkeypatch=monkeypatch,
    ).config
    assert (config.port, config.idle_timeout_s, config.event_log, config.max_parallel_jobs) == (
        0, 0, "flag.sqlite", 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "http"], "--port must be a whole number, not 'http'"),
        (["--port", "70000"], "--port must be between 0 and 65535, not 70000"),
        (["--port-range", "-1"], "--port-range must be at least 0, not -1"),
        (["--idle-timeout", "soon"], "--idle-timeout must be a number of seconds"),
        (["--idle-timeout", "-5"], "at least 0"),
        (["--max-parallel-jobs", "0"], "--max-parallel-jobs must be at least 1, not 0"),
        (["--interface", "example.org"], "--interface must be an IP address"),
        (["--keepalive", "0"], "--keepalive must be more than 0 seconds"),
        (["--heartbeat", "0"], "--heartbeat must be more than 0 seconds"),
        (["--heartbeat", "often"], "--heartbeat must be a number of seconds"),
        (["--heartbeat", "5", "--lease-timeout", "8"],
         "--lease-timeout (8 s) must be at least twice --heartbeat (5 s)"),
    ],
)
def test_bad_flag_is_refused_with_a_sentence(
    color_votes: Path, monkeypatch, args: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        parsed(color_votes, *args, monkeypatch=monkeypatch)


def test_bad_environment_value_names_the_variable(color_votes: Path, monkeypatch) -> None:
    with pytest.raises(SettingError, match=ENV_IDLE_TIMEOUT):
        parsed(color_votes, env={ENV_IDLE_TIMEOUT: "later"}, monkeypatch=monkeypatch)


def test_non_loopback_interface_needs_a_token_file(color_votes: Path, monkeypatch) -> None:
    with pytest.raises(SettingError, match=r"non-loopback address 0\.0\.0\.0 without --token-file"):
        parsed(color_votes, "--interface", "0.0.0.0", monkeypatch=monkeypatch)


def test_token_file_supplies_the_token(color_votes: Path, tmp_path: Path, monkeypatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-of-24-chars\n")
    config = parsed(
        color_votes, "--interface", "0.0.0.0", "--token-file", str(token_file),
        monkeypatch=monkeypatch,
    ).config
    assert (config.interface, config.token) == ("0.0.0.0", "s3cret-token-of-24-chars")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("  \n", "is empty"),
        ("x\n", "holds a token of 1 characters; it must have at least 16"),
        ("fifteen-chars-x", "holds a token of 15 characters"),
    ],
)
def test_unusable_token_file_is_refused(
    color_votes: Path, tmp_path: Path, monkeypatch, content: str | None, message: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(SettingError, match=message):
        parsed(color_votes, "--token-file", str(token_file), monkeypatch=monkeypatch)


def test_a_bad_graph_file_is_refused_naming_its_file_and_line(
    color_votes: Path, monkeypatch
) -> None:
    with (color_votes / "databuild.toml").open("a") as f:
        f.write("\n[service]\nport = = 1\n")
    with pytest.raises(SettingError, match=r"^twistd databuild: .*databuild\.toml: invalid TOML: "
                       r".*\(at line \d+, column \d+\)$"):
        parsed(color_votes, monkeypatch=monkeypatch)


def test_a_bad_service_table_value_names_the_file(color_votes: Path, monkeypatch) -> None:
    with_service_table(color_votes, "max_parallel_jobs = 0")
    with pytest.raises(SettingError, match=r"databuild\.toml: \[service\]: 'max_parallel_jobs'"):
        parsed(color_votes, monkeypatch=monkeypatch)


def test_directory_without_graph_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(SettingError, match=r"databuild\.toml"):
        parsed(tmp_path, monkeypatch=monkeypatch)


def test_missing_workspace_directory_is_refused(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        parsed(tmp_path / "nowhere", monkeypatch=monkeypatch)
