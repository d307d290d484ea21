"""Lookup: the built-in pattern match and a custom lookup executable."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from databuild.errors import LookupFailed
from databuild.graph import Workspace, lookup, match_job

from .conftest import WriteWorkspace

JOB = 'print("unused")'


def two_jobs(write_workspace: WriteWorkspace, **kwargs: Any) -> Workspace:
    return write_workspace({"daily": (r"daily/\d+", JOB), "weekly": (r"weekly/\d+", JOB)}, **kwargs)


def with_lookup(write_workspace: WriteWorkspace, source: str) -> Workspace:
    return two_jobs(
        write_workspace,
        extra=f"lookup = {json.dumps([sys.executable, 'lookup.py'])}\n",
        files={"lookup.py": source},
    )


@pytest_twisted.ensureDeferred
async def test_builtin_lookup_groups_refs_by_job_in_request_order(
    write_workspace: WriteWorkspace,
) -> None:
    ws = two_jobs(write_workspace)
    assignment = await lookup(reactor, ws, ["weekly/2", "daily/1", "weekly/1"])
    assert assignment == {"weekly": ("weekly/2", "weekly/1"), "daily": ("daily/1",)}


def test_ref_no_job_matches_whole_is_named(write_workspace: WriteWorkspace) -> None:
    ws = two_jobs(write_workspace)
    with pytest.raises(LookupFailed, match=r"no job of graph 'test' produces 'daily/1x'"):
        match_job(ws, "daily/1x")


def test_ref_several_jobs_match_names_them_all(write_workspace: WriteWorkspace) -> None:
    ws = write_workspace({"one": (r"x/\d+", JOB), "two": (r"x/.*", JOB), "three": ("y", JOB)})
    with pytest.raises(LookupFailed) as caught:
        match_job(ws, "x/1")
    assert str(caught.value) == "more than one job produces 'x/1': 'one', 'two'"


@pytest_twisted.ensureDeferred
async def test_custom_lookup_runs_from_workspace_root_with_the_refs(
    write_workspace: WriteWorkspace,
) -> None:
    ws = with_lookup(
        write_workspace,
        """
        import json, os, sys
        open("lookup-calls", "a").write(os.getcwd() + " " + " ".join(sys.argv[1:]) + "\\n")
        print(json.dumps({"weekly": [r for r in sys.argv[1:] if r.startswith("w")],
                          "daily": [r for r in sys.argv[1:] if r.startswith("d")]}))
        """,
    )
    assignment = await lookup(reactor, ws, ["daily/1", "weekly/1", "daily/2"])
    assert assignment == {"daily": ("daily/1", "daily/2"), "weekly": ("weekly/1",)}
    calls = (ws.root / "lookup-calls").read_text().splitlines()
    assert calls == [f"{ws.root} daily/1 weekly/1 daily/2"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'import sys; print("lookup broke", file=sys.stderr); sys.exit(3)',
            "exited with code 3; stderr:\nlookup broke",
        ),
        ('print("{not json")', "printed invalid JSON"),
        ('print("[1, 2]")', "printed something other than a JSON object"),
        (
            'import json; print(json.dumps({"monthly": ["daily/1"]}))',
            "named 'monthly', which is not a job of graph 'test'",
        ),
        (
            'import json; print(json.dumps({"daily": ["daily/1", "daily/9"]}))',
            "gave job 'daily' the ref 'daily/9', which was not asked for",
        ),
        ('import json; print(json.dumps({"daily": []}))', "gave no job for daily/1"),
        ('import json; print(json.dumps({"daily": "daily/1"}))', "expected a list of refs"),
        (
            'import json; print(json.dumps({"daily": ["daily/1"], "weekly": ["daily/1"]}))',
            "gave 'daily/1' to two jobs: 'daily' and 'weekly'",
        ),
        ('import json; print(json.dumps({"daily": [""]}))', "gave job 'daily' a bad ref"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_custom_lookup_misbehaving_is_named(
    write_workspace: WriteWorkspace, source: str, expected: str
) -> None:
    ws = with_lookup(write_workspace, source)
    with pytest.raises(LookupFailed) as caught:
        await lookup(reactor, ws, ["daily/1"])
    message = str(caught.value)
    assert message.startswith(f"lookup {sys.executable!r} for daily/1 ")
    assert expected in message


@pytest_twisted.ensureDeferred
async def test_custom_lookup_that_hangs_is_killed(write_workspace: WriteWorkspace) -> None:
    ws = with_lookup(write_workspace, "import time; time.sleep(60)")
    with pytest.raises(LookupFailed, match=r"timed out after 0\.3 s and was killed"):
        await lookup(reactor, ws, ["daily/1"], timeout_s=0.3)
