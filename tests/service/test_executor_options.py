"""``[executor]``, ``--executor``, ``--broker`` and ``DATABUILD_BROKER_URL`` (SPEC §10)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.service.test_options import parsed
from twisted.python.usage import UsageError

from databuild.errors import GraphFileError
from databuild.graph.workspace import parse_workspace
from databuild.service.settings import DEFAULT_BROKER, ENV_BROKER
from databuild.service.tap import SettingError

PG = "postgresql://postgres@127.0.0.1:5432/test"


def with_executor_table(workspace: Path, table: str) -> Path:
    graph = workspace / "databuild.toml"
    head, _, jobs = graph.read_text().partition("[[jobs]]")
    graph.write_text(f"{head}\n[executor]\n{table}\n\n[[jobs]]{jobs}")
    return workspace


def test_the_local_executor_is_the_default(color_votes: Path, monkeypatch) -> None:
    monkeypatch.delenv(ENV_BROKER, raising=False)
    config = parsed(color_votes, monkeypatch=monkeypatch).config
    assert (config.executor, config.broker, config.queue) == ("local", DEFAULT_BROKER, "databuild")


def test_flag_then_environment_then_file(color_votes: Path, monkeypatch) -> None:
    with_executor_table(
        color_votes, 'kind = "celery"\nbroker = "amqp://file//"\nqueue = "big"'
    )
    config = parsed(color_votes, "--event-log", PG, env={ENV_BROKER: "amqp://env//"},
                    monkeypatch=monkeypatch).config
    assert (config.executor, config.broker, config.queue) == ("celery", "amqp://env//", "big")
    config = parsed(color_votes, "--event-log", PG, "--broker", "amqp://flag//",
                    "--executor", "local", monkeypatch=monkeypatch).config
    assert (config.executor, config.broker) == ("local", "amqp://flag//")


def test_celery_with_a_sqlite_log_is_refused(color_votes: Path, monkeypatch) -> None:
    with pytest.raises(SettingError, match=r"^twistd databuild: the celery executor needs a "
                       r"PostgreSQL event log"):
        parsed(color_votes, "--executor", "celery", monkeypatch=monkeypatch)


def test_an_unknown_executor_is_refused(color_votes: Path, monkeypatch) -> None:
    with pytest.raises(UsageError, match="--executor must be one of local, celery"):
        parsed(color_votes, "--executor", "k8s", monkeypatch=monkeypatch)
    with_executor_table(color_votes, 'kind = "slurm"')
    with pytest.raises(SettingError, match=r"\[executor\]: 'kind' is 'slurm'"):
        parsed(color_votes, monkeypatch=monkeypatch)


def test_a_job_may_name_its_queue(tmp_path: Path) -> None:
    toml = b"""
[graph]
label = "g"

[executor]
queue = "small"

[[jobs]]
label = "big"
outputs = ["big/.*"]
command = ["true"]
queue = "big"

[[jobs]]
label = "any"
outputs = ["any/.*"]
command = ["true"]
"""
    workspace = parse_workspace(tmp_path, toml)
    assert workspace.executor.queue == "small"
    assert (workspace.job("big").queue, workspace.job("any").queue) == ("big", None)
    with pytest.raises(GraphFileError, match=r"job 'big': queue 'a b' must not contain"):
        parse_workspace(tmp_path, toml.replace(b'queue = "big"', b'queue = "a b"'))
