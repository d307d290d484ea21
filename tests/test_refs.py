"""Ref expansion (SPEC §6, §9): shell braces, ranges of numbers and dates, the limit."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from databuild.errors import DataBuildError
from databuild.refs import (
    MAX_DEPTH,
    MAX_REFS,
    RefPatternError,
    TooManyRefs,
    expand,
    ref_lines,
)


@pytest.mark.parametrize(
    ("text", "refs"),
    [
        ("plain/ref", ["plain/ref"]),
        ("votes/{red,green,blue}", ["votes/red", "votes/green", "votes/blue"]),
        ("d/{01..03}", ["d/01", "d/02", "d/03"]),
        ("d/{8..11}", ["d/8", "d/9", "d/10", "d/11"]),
        ("d/{1..010}", [f"d/{n:03d}" for n in range(1, 11)]),
        ("d/{3..1}", ["d/3", "d/2", "d/1"]),
        ("d/{-1..1}", ["d/-1", "d/0", "d/1"]),
        ("d/{2026-02-27..2026-03-02}",
         ["d/2026-02-27", "d/2026-02-28", "d/2026-03-01", "d/2026-03-02"]),
        ("d/{2024-03-01..2024-02-28}", ["d/2024-03-01", "d/2024-02-29", "d/2024-02-28"]),
        ("{a,b}/{1..2}", ["a/1", "a/2", "b/1", "b/2"]),
        ("x{,_v2}", ["x", "x_v2"]),
        ("{a,b{1..2},c}", ["a", "b1", "b2", "c"]),
        ("s3://b/{x,y}/date={2026-01-01..2026-01-02}",
         ["s3://b/x/date=2026-01-01", "s3://b/x/date=2026-01-02",
          "s3://b/y/date=2026-01-01", "s3://b/y/date=2026-01-02"]),
    ],
)  # fmt: skip
def test_braces_expand_like_a_shell(text: str, refs: list[str]) -> None:
    assert expand([text]) == refs


def test_several_texts_expand_in_order() -> None:
    assert expand(["b/{1..2}", "a", "b/1"]) == ["b/1", "b/2", "a", "b/1"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("d/{a,b", "never closed"),
        ("d/a}", "closes no '{'"),
        ("d/{a}", "neither a list"),
        ("d/{}", "neither a list"),
        ("d/{1..x}", "not a range"),
        ("d/{2026-01-01..5}", "not a range"),
        ("d/{2026-02-30..2026-03-01}", "2026-02-30 is not a date"),
        ("d/{a,{b}}", "neither a list"),
        ("{a," * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 1), "nest more than"),
    ],
)
def test_a_malformed_brace_is_refused_quoting_the_text(text: str, problem: str) -> None:
    with pytest.raises(RefPatternError) as caught:
        expand(["fine/{1..2}", text])
    assert problem in str(caught.value)
    assert repr(text[:20]).rstrip("'") in str(caught.value)
    assert not isinstance(caught.value, TooManyRefs)
    assert isinstance(caught.value, DataBuildError)


def test_the_limit_counts_before_expanding() -> None:
    assert len(expand(["{1..100000}"])) == MAX_REFS
    with pytest.raises(TooManyRefs, match="expands to 100,001 refs"):
        expand(["d/{0..100000}"])
    # Counted, never made: 10**60 refs would not fit in any memory.
    with pytest.raises(TooManyRefs, match="d/"):
        expand(["d/" + "{0..999999}" * 10])
    with pytest.raises(TooManyRefs, match=re.escape("come to 60,001 refs with '{1..60000}'")):
        expand(["a", "{1..60000}"], limit=60_000)


def test_ref_lines_skip_blanks_and_comments_and_stop_at_the_limit() -> None:
    text = ["# January\n", "d/2026-01-01\n", "\n", "  d/2026-01-02  \n", "   # done\n", "{x}\n"]
    assert ref_lines(text) == ["d/2026-01-01", "d/2026-01-02", "{x}"]

    def endless() -> object:
        n = 0
        while True:
            n += 1
            yield f"r/{n}\n"

    with pytest.raises(TooManyRefs, match="FILE holds more than 10 refs"):
        ref_lines(endless(), limit=10, where="FILE")  # type: ignore[arg-type]


def test_importing_it_loads_no_heavy_module() -> None:
    script = "import databuild.refs, sys; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True).stdout.split()
    assert not [m for m in loaded if m.split(".")[0] in ("twisted", "attr", "attrs", "treq")]
    assert {m for m in loaded if m.startswith("databuild.")} == {"databuild.errors",
                                                                 "databuild.refs"}


_WORDS = st.text(alphabet="abcxyz/_-=", min_size=0, max_size=4)


@given(st.lists(st.lists(_WORDS, min_size=2, max_size=4), min_size=1, max_size=3), _WORDS)
def test_lists_expand_to_the_cartesian_product_in_order(lists: list[list[str]],
                                                        tail: str) -> None:
    text = "".join("{" + ",".join(words) + "}" for words in lists) + tail
    expected = [""]
    for words in lists:
        expected = [done + word for done in expected for word in words]
    assert expand([text]) == [ref + tail for ref in expected]


@given(st.integers(-50, 500), st.integers(-50, 500), st.booleans())
def test_integer_ranges_cover_both_ends(start: int, end: int, pad: bool) -> None:
    width = 4 if pad and start >= 0 and end >= 0 else 0
    low, high = (f"{start:0{width}d}", f"{end:0{width}d}")
    refs = expand([f"n/{{{low}..{high}}}"])
    step = 1 if end >= start else -1
    assert refs == [f"n/{n:0{width}d}" for n in range(start, end + step, step)]


@given(st.dates(datetime.date(1990, 1, 1), datetime.date(2100, 1, 1)),
       st.integers(0, 800))
def test_date_ranges_step_one_day(start: datetime.date, days: int) -> None:
    end = start + datetime.timedelta(days=days)
    refs = expand([f"{{{start}..{end}}}"])
    assert len(refs) == days + 1
    assert refs[0] == start.isoformat() and refs[-1] == end.isoformat()
    assert refs == sorted(set(refs))


@given(st.text(alphabet="{},.0123abc", max_size=12))
def test_any_text_expands_or_is_refused_with_a_named_error(text: str) -> None:
    try:
        refs = expand([text], limit=1000)
    except RefPatternError as e:
        assert repr(text) in str(e) or "refs" in str(e)
    else:
        assert 1 <= len(refs) <= 1000
