"""The rules a service and its clients share (``databuild.startup``), as pure logic."""

from __future__ import annotations

from pathlib import Path

import pytest

from databuild.bel.backend import EventLogError, parse_uri
from databuild.startup import (
    DEFAULT_EVENT_LOG,
    ENV_EVENT_LOG,
    describe_event_log,
    event_log_setting,
)


def test_the_flag_wins_then_the_environment_then_the_graph_file_then_the_default() -> None:
    env = {ENV_EVENT_LOG: "env.sqlite"}
    assert event_log_setting("flag.sqlite", env, "file.sqlite") == "flag.sqlite"
    assert event_log_setting(None, env, "file.sqlite") == "env.sqlite"
    assert event_log_setting(None, {ENV_EVENT_LOG: ""}, "file.sqlite") == "file.sqlite"
    assert event_log_setting(None, {}, None) == DEFAULT_EVENT_LOG


@pytest.mark.parametrize(
    ("setting", "described"),
    [
        ("bel.sqlite", "/ws/bel.sqlite"),
        ("/abs/bel.sqlite", "/abs/bel.sqlite"),
        ("sqlite:///abs/bel.sqlite", "/abs/bel.sqlite"),
        ("postgresql://me:secret@db:5433/logs", "postgresql://me@db:5433/logs"),
        ("postgres://db/logs", "postgresql://@db/logs"),
    ],
)
def test_the_cli_describes_a_setting_as_the_event_log_does(setting: str, described: str) -> None:
    assert describe_event_log(setting, Path("/ws")) == described
    assert parse_uri(setting, Path("/ws")).describe() == described


@pytest.mark.parametrize("setting", ["", "sqlite://host/x", "sqlite:///", "mysql://db/x"])
def test_a_setting_naming_no_log_is_shown_as_given_and_refused_by_the_log(setting: str) -> None:
    assert describe_event_log(setting, Path("/ws")) == setting
    with pytest.raises(EventLogError):
        parse_uri(setting, Path("/ws"))
