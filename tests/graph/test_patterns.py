"""The index of output patterns: every matching job found, without trying every pattern."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.slicing import one_step_per_slice, slices_until
from twisted.internet import reactor
from twisted.internet.task import Clock

from databuild.errors import LookupFailed
from databuild.graph import lookup, match_job
from databuild.graph.patterns import PatternIndex, literal_prefix
from databuild.graph.workspace import Workspace, parse_workspace
from databuild.slices import STEP


@pytest.mark.parametrize(
    ("pattern", "prefix"),
    [
        (r"sales/daily/\d{4}", "sales/daily/"),
        (r"a\.b/c", "a.b/c"),
        (r"ab?c", "a"),
        (r"ab*", "a"),
        (r"ab{2}", "a"),
        (r"ab+", "ab"),
        (r"abc|xyz", ""),
        (r"colour/(red|blue)/\d+", "colour/"),
        (r"x/[]|]y", "x/"),
        (r"(?i)abc", ""),
        (r"a\d", "a"),
        (r"^abc", ""),
        (r"a.c", "a"),
        ("", ""),
    ],
)
def test_the_literal_prefix_is_what_every_match_starts_with(pattern: str, prefix: str) -> None:
    assert literal_prefix(re.compile(pattern)) == prefix


TRICKY = [
    r"sales/daily/\d{4}-\d{2}",
    r"sales/.*",
    r"sales/daily/2026-0[1-3]",
    r"colour/(red|blue)/\d+",
    r"colour/red/(\d)\1",
    r"(?i)COLOUR/green/\d+",
    r"a|sales/weekly/\d+",
    r"ab?c/\w+",
    r"[xy]/\d+",
    r"x/1",
    r".*/2026-01-01",
]
REFS = [
    "sales/daily/2026-01", "sales/daily/2026-04", "sales/weekly/3", "sales/", "colour/red/7",
    "colour/red/11", "colour/green/4", "COLOUR/GREEN/4", "a", "ac/x", "abc/y", "x/1", "y/22",
    "z/2026-01-01", "sales/daily/2026-01-01", "nothing", "",
]  # fmt: skip


@pytest.mark.parametrize("ref", REFS)
def test_the_index_finds_exactly_the_jobs_whose_patterns_match(ref: str) -> None:
    patterns = [re.compile(p) for p in TRICKY]
    index = PatternIndex([[p] for p in patterns])
    assert index.matching(ref) == [i for i, p in enumerate(patterns) if p.fullmatch(ref)]


def test_many_patterns_sharing_no_prefix_still_agree_with_trying_them_all() -> None:
    patterns = [re.compile(rf"\w+/{i}/[a-z]+") for i in range(300)] + [re.compile(r"\w+/7/x")]
    index = PatternIndex([[p] for p in patterns])
    for ref in ["q/7/x", "q/250/abc", "q/300/abc", "q/12/ABC"]:
        assert index.matching(ref) == [i for i, p in enumerate(patterns) if p.fullmatch(ref)]


def big_workspace(tmp_path: Path, jobs: int, extra: str = "") -> Workspace:
    tables = ['[graph]\nlabel = "big"']
    for i in range(jobs):
        tables.append(
            f'[[jobs]]\nlabel = "job{i}"\ncommand = ["true"]\n'
            f'outputs = ["dataset{i}/\\\\d{{4}}-\\\\d{{2}}-\\\\d{{2}}"]\n'
        )
    tables.append('[[jobs]]\nlabel = "any"\noutputs = ["[a-z]+\\\\d+/any"]\ncommand = ["true"]\n')
    return parse_workspace(tmp_path, ("\n".join(tables) + extra).encode())


def test_lookup_in_a_graph_of_thousands_of_jobs_never_tries_every_pattern(
    tmp_path: Path,
) -> None:
    ws = big_workspace(tmp_path, 3000)
    refs = [f"dataset{i}/2026-01-{d:02d}" for i in range(0, 3000, 7) for d in (1, 2)]
    before = ws.patterns.tried
    for ref in refs:
        assert match_job(ws, ref).label == f"job{ref.split('/')[0][7:]}"
    tried = ws.patterns.tried - before
    # Each ref meets its own job's pattern and the one with no prefix: not 3,001 patterns.
    assert tried <= 2 * len(refs)


def test_errors_stay_exact_in_a_big_graph(tmp_path: Path) -> None:
    dup = '[[jobs]]\nlabel = "dup"\noutputs = ["dataset7/.*"]\ncommand = ["true"]\n'
    ws = big_workspace(tmp_path, 2000, dup)
    with pytest.raises(LookupFailed) as caught:
        match_job(ws, "dataset5/2026")
    assert str(caught.value) == "no job of graph 'big' produces 'dataset5/2026'"
    with pytest.raises(LookupFailed) as caught:
        match_job(ws, "dataset7/2026-01-01")
    assert str(caught.value) == "more than one job produces 'dataset7/2026-01-01': 'job7', 'dup'"
    assert match_job(ws, "dataset7/whatever").label == "dup"
    assert match_job(ws, "dataset12/any").label == "any"


def test_a_long_lookup_gives_the_reactor_back_between_slices(tmp_path: Path) -> None:
    """With a cooperator whose slices hold one step each, driven by a Clock: the lookup is
    not done at once, and every slice ends by handing control back to the clock."""
    ws = big_workspace(tmp_path, 500)
    refs = [f"dataset{i % 500}/2026-02-{1 + i // 500:02d}" for i in range(20 * STEP)]
    clock = Clock()
    assigned = lookup(reactor, ws, refs, cooperator=one_step_per_slice(clock))
    assert slices_until(clock, assigned, "the lookup") >= 20
    assignment = assigned.result
    assert sum(len(found) for found in assignment.values()) == len(refs)
    assert assignment["job3"] == tuple(r for r in refs if r.startswith("dataset3/"))
