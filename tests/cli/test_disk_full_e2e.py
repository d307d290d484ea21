"""A disk that fills up under a running service and is freed again, through the installed CLI:
a build the log cannot take is refused at once saying why, none is left open, and once space
returns the very next build is taken, without a restart."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import fill
from tests.polling import poll_until

from .conftest import Run

FINAL = {"BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}


def released(workspace: Path, *refs: str) -> list[str]:
    """``refs`` of the slow job, each allowed to end at once."""
    release = workspace / "slow_release"
    release.mkdir(exist_ok=True)
    for ref in refs:
        (release / ref.replace("/", "_")).touch()
    return list(refs)


def test_a_full_disk_refuses_builds_saying_why_and_a_freed_one_takes_them_again(
    workspace: Path, databuild: Run, small_disk: Path
) -> None:
    env = {"DATABUILD_BUILD_EVENT_LOG": str(small_disk / "bel.sqlite")}
    first = databuild("build", *released(workspace, "slow/first"), env=env)
    assert first.returncode == 0, first.stderr

    filler = fill(small_disk)
    refused = None
    for n in range(60):  # the log fills the room its files had left, then fails
        refs = released(workspace, *(f"slow/full{n}x{k}" for k in range(10)))
        done = databuild("build", "--background", *refs, env=env)
        if done.returncode != 0:
            refused = done
            break
    assert refused is not None, "the log never filled the disk"
    assert refused.returncode == 3, refused.stderr
    assert "disk is full" in refused.stderr, refused.stderr
    again = databuild("build", "--background", *released(workspace, "slow/still"), env=env)
    assert (again.returncode, "disk is full" in again.stderr) == (3, True), again.stderr

    filler.unlink()
    after = databuild("build", *released(workspace, "slow/after"), env=env)
    assert after.returncode == 0, after.stderr

    def all_final() -> list[dict[str, object]] | None:
        listed = databuild("builds", "list", "--limit", "1000", "--format", "json", env=env)
        builds = json.loads(listed.stdout)["builds"]
        return builds if all(b["status"] in FINAL for b in builds) else None

    builds = poll_until(all_final, "every build to end")
    for build in builds:
        assert build["status"] == "BUILD_REQUEST_COMPLETED" or "disk is full" in str(
            build["message"]
        ), build
