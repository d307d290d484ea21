"""The SQLite event log deleted, or replaced by ``mv`` of a copy, under a running service: the
service notices the file is no longer the one it opened and takes no more work, saying why,
instead of acknowledging builds into a file nobody will read again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import Run, server_info


def released(workspace: Path, ref: str) -> str:
    """A ref of the slow job, allowed to end at once."""
    release = workspace / "slow_release"
    release.mkdir(exist_ok=True)
    (release / ref.replace("/", "_")).touch()
    return ref


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_vanished_log_file_stops_the_service_taking_work(
    workspace: Path, databuild: Run, how: str
) -> None:
    log_file = workspace / ".databuild" / "bel.sqlite"
    first = databuild("build", released(workspace, "slow/first"))
    assert first.returncode == 0, first.stderr
    pid = (server_info(workspace) or {})["pid"]

    if how == "deleted":
        log_file.unlink()
    else:
        backup = workspace / "bel.sqlite.backup"
        shutil.copy(log_file, backup)
        backup.replace(log_file)

    refused = databuild("build", released(workspace, "slow/second"))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert f"the event log file {log_file} was {how}" in refused.stderr, refused.stderr

    status = databuild("--format", "json", "service", "status")
    health = json.loads(status.stdout)
    assert health["pid"] == pid  # the same service: it said so rather than die
    assert health["status"] == "unavailable"
    assert f"was {how}" in health["problem"]
    service_log = (workspace / ".databuild" / "service.log").read_text()
    assert f"the event log file {log_file} was {how}" in service_log
