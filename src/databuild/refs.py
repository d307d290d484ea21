"""Many refs at once (SPEC §6, §9): shell-brace expansion of ref patterns and the limit on how
many refs one request may carry.

One implementation for the CLI (``build``, ``analyze``, ``--refs-file``), the dashboard's
Build form and the service's limit. Standard library only, so the thin CLI can import it.

- ``{a,b,c}``: a list; alternatives may hold braces themselves (``{a,b{1..2}}``) and may be
  empty (``x{,_v2}``);
- ``{01..31}``: whole numbers from one end to the other, both included, up or down; when
  either end is written with a leading zero every number is padded to the wider end;
- ``{2026-01-01..2026-03-31}``: ISO dates, one day a step, up or down;
- several braces in one text combine in order (``{a,b}/{1..2}`` is ``a/1 a/2 b/1 b/2``).

Anything else between braces, an unclosed ``{`` or a stray ``}`` is refused. Counting comes
before expanding, so a pattern over the limit costs nothing.
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Iterable, Iterator

from databuild.errors import DataBuildError

MAX_REFS = 100_000
"""The most refs one build or analyze request may carry (CLI, dashboard and API alike)."""

_INTEGER = re.compile(r"-?[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SHOWN = 80
"""How much of an offending text a message quotes."""
MAX_DEPTH = 16
"""How deep braces may nest (the parser recurses once a level)."""


class RefPatternError(DataBuildError, ValueError):
    """A ref pattern that cannot be expanded: a malformed brace, or too many refs."""

    code = "invalid_ref_pattern"


class TooManyRefs(RefPatternError):
    """More refs than one request may carry (the API answers it with 413)."""

    code = "too_many_refs"


def _quoted(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "...")


class _Literal:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def count(self) -> int:
        return 1

    def values(self) -> Iterator[str]:
        yield self.text


class _Range:
    """``{start..end}`` of whole numbers (``date`` false) or of dates (day ordinals)."""

    __slots__ = ("date", "end", "start", "width")

    def __init__(self, start: int, end: int, width: int, *, date: bool) -> None:
        self.start, self.end, self.width, self.date = start, end, width, date

    def count(self) -> int:
        return abs(self.end - self.start) + 1

    def values(self) -> Iterator[str]:
        step = 1 if self.end >= self.start else -1
        for n in range(self.start, self.end + step, step):
            if self.date:
                yield datetime.date.fromordinal(n).isoformat()
            else:
                yield f"{n:0{self.width}d}"


class _Sequence:
    """Parts one after the other: their values combine (cartesian product, in order)."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[_Part]) -> None:
        self.parts = parts

    def count(self) -> int:
        total = 1
        for part in self.parts:
            total *= part.count()
        return total

    def values(self) -> Iterator[str]:
        for combination in itertools.product(*(part.values() for part in self.parts)):
            yield "".join(combination)


class _Choice:
    """``{a,b,...}``: each alternative's values, one alternative after the other."""

    __slots__ = ("options",)

    def __init__(self, options: list[_Sequence]) -> None:
        self.options = options

    def count(self) -> int:
        return sum(option.count() for option in self.options)

    def values(self) -> Iterator[str]:
        for option in self.options:
            yield from option.values()


_Part = _Literal | _Range | _Sequence | _Choice


class _Parser:
    """Recursive descent over one text; every error quotes the whole text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.depth = 0

    def fail(self, problem: str) -> RefPatternError:
        return RefPatternError(f"malformed brace in ref pattern {_quoted(self.text)}: {problem}")

    def sequence(self, nested: bool) -> _Sequence:
        """Parts up to the end of the text or, ``nested``, to a ``,`` or ``}`` of this level."""
        parts: list[_Part] = []
        literal: list[str] = []
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char in ",}" and nested:
                break
            if char == "}":
                raise self.fail(f"'}}' at character {self.at + 1} closes no '{{'")
            if char == "{":
                if literal:
                    parts.append(_Literal("".join(literal)))
                    literal = []
                parts.append(self.brace())
                continue
            literal.append(char)
            self.at += 1
        if literal:
            parts.append(_Literal("".join(literal)))
        return _Sequence(parts)

    def brace(self) -> _Part:
        opened = self.at
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"braces nest more than {MAX_DEPTH} deep")
        self.at += 1
        options = [self.sequence(nested=True)]
        while self.at < len(self.text) and self.text[self.at] == ",":
            self.at += 1
            options.append(self.sequence(nested=True))
        if self.at >= len(self.text):
            raise self.fail(f"the '{{' at character {opened + 1} is never closed")
        self.at += 1  # the closing brace
        self.depth -= 1
        if len(options) > 1:
            return _Choice(options)
        inside = self.text[opened + 1 : self.at - 1]
        return self.range(inside)

    def range(self, inside: str) -> _Range:
        start, dots, end = inside.partition("..")
        if not dots:
            raise self.fail(
                f"{{{inside}}} is neither a list ({{a,b}}) nor a range ({{01..31}}, "
                "{2026-01-01..2026-01-31})"
            )
        if _INTEGER.fullmatch(start) and _INTEGER.fullmatch(end):
            padded = any(len(n.lstrip("-")) > 1 and n.lstrip("-")[0] == "0" for n in (start, end))
            width = max(len(start), len(end)) if padded else 0
            return _Range(int(start), int(end), width, date=False)
        if _DATE.fullmatch(start) and _DATE.fullmatch(end):
            return _Range(self.day(start), self.day(end), 0, date=True)
        raise self.fail(
            f"{{{inside}}} is not a range of whole numbers ({{01..31}}) nor of ISO dates "
            "({2026-01-01..2026-01-31})"
        )

    def day(self, text: str) -> int:
        try:
            return datetime.date.fromisoformat(text).toordinal()
        except ValueError:
            raise self.fail(f"{text} is not a date") from None


def _parse(text: str) -> _Sequence:
    if "{" not in text and "}" not in text:
        return _Sequence([_Literal(text)])
    return _Parser(text).sequence(nested=False)


def expand(texts: Iterable[str], limit: int = MAX_REFS) -> list[str]:
    """The refs that ``texts`` expand to, in order (repeats kept: the request drops them).

    Raises RefPatternError for a malformed brace and TooManyRefs when there would be more than
    ``limit`` refs, before any is made.
    """
    patterns: list[_Sequence] = []
    total = 0
    for text in texts:
        pattern = _parse(text)
        count = pattern.count()
        total += count
        if total > limit:
            if count == total:
                raise too_many(f"ref pattern {_quoted(text)} expands to {count:,} refs", limit)
            raise too_many(f"the refs given come to {total:,} refs with {_quoted(text)}", limit)
        patterns.append(pattern)
    refs: list[str] = []
    for pattern in patterns:
        refs.extend(pattern.values())
    return refs


def ref_lines(lines: Iterable[str], limit: int = MAX_REFS, where: str = "the list") -> list[str]:
    """One ref per line, as written (no expansion); blank lines and lines starting with ``#``
    (after spaces) are skipped. TooManyRefs past ``limit``, read no further."""
    refs: list[str] = []
    for line in lines:
        ref = line.strip()
        if ref and not ref.startswith("#"):
            if len(refs) == limit:
                raise too_many(f"{where} holds more than {limit:,} refs", limit)
            refs.append(ref)
    return refs


def too_many(what: str, limit: int = MAX_REFS) -> TooManyRefs:
    """The error for too many refs: ``what`` says how many, from where."""
    return TooManyRefs(f"{what}; at most {limit:,} may go in one request (split it into several)")
