"""An index of the jobs' output patterns: which jobs match a ref whole, without trying them all.

Built-in lookup (SPEC §3.3, §9) must cost O(1) to O(log jobs) per ref however many jobs the graph
has. Most output patterns begin with a literal (``sales/daily/\\d{4}-...``): the index groups
patterns by that literal prefix, so a ref is tried only against the groups whose prefix it
starts with (one dict look-up per distinct prefix length). A group of many patterns (say,
thousands whose prefix is empty) is a binary tree of alternations: a node's alternation is
tried only when its parent's matched, so a ref costs O(log n) tries to find its one match,
and every match is still found, so "more than one job" stays exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from attrs import define, field

LEAF_SIZE = 8
"""A tree node of at most this many patterns tries them one by one."""

_DEFAULT_FLAGS = re.compile("").flags
_QUANTIFIERS = frozenset("*?{")
_STOPS = frozenset(".^$+[(")


def literal_prefix(pattern: re.Pattern[str]) -> str:
    """A string every full match of ``pattern`` starts with (maybe empty, never wrong).

    Literal characters are read up to the first construct that is not one; a literal that a
    quantifier makes optional is dropped, and a top-level ``|`` means there is no prefix.
    """
    if pattern.flags != _DEFAULT_FLAGS:
        return ""  # (?i), (?x) and the like change what a literal character matches
    source = pattern.pattern
    prefix: list[str] = []
    literal = True
    depth = 0
    in_class = False
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            escaped = source[i + 1 : i + 2]
            if literal and escaped and not escaped.isalnum() and escaped.isascii():
                prefix.append(escaped)
            else:
                literal = False  # \d, \1, \n ...: a class, a reference or an escape
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class, literal = True, False
            i += 1
            if source[i : i + 1] == "^":
                i += 1
            if source[i : i + 1] == "]":
                i += 1  # a "]" first in a class is a literal
            continue
        elif c == "(":
            depth += 1
            literal = False
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return ""
        elif c in _QUANTIFIERS:
            if literal and prefix:
                prefix.pop()
            literal = False
        elif c in _STOPS:
            literal = False
        elif literal:
            prefix.append(c)
        i += 1
    return "".join(prefix)


@define(eq=False)
class _Node:
    """Patterns of one prefix group, as a tree: ``members`` are (job index, pattern)."""

    members: Sequence[tuple[int, re.Pattern[str]]]
    _alternation: re.Pattern[str] | None = field(default=None, init=False)
    _children: tuple[_Node, _Node] | None = field(default=None, init=False)

    def alternation(self) -> re.Pattern[str]:
        if self._alternation is None:
            self._alternation = re.compile(
                "|".join(f"(?:{p.pattern})" for _, p in self.members)
            )
        return self._alternation

    def children(self) -> tuple[_Node, _Node]:
        if self._children is None:
            half = len(self.members) // 2
            self._children = (_Node(self.members[:half]), _Node(self.members[half:]))
        return self._children


@define(eq=False)
class _Group:
    """The patterns sharing one literal prefix.

    Those with capturing groups are tried alone: inside an alternation their numbered
    references would point at another pattern's groups.
    """

    alone: list[tuple[int, re.Pattern[str]]] = field(factory=list)
    combinable: list[tuple[int, re.Pattern[str]]] = field(factory=list)
    tree: _Node | None = None


class PatternIndex:
    """The jobs (by index in the order given) whose patterns match a ref whole."""

    def __init__(self, jobs: Sequence[Sequence[re.Pattern[str]]]) -> None:
        self._groups: dict[str, _Group] = {}
        for index, patterns in enumerate(jobs):
            for pattern in patterns:
                group = self._groups.setdefault(literal_prefix(pattern), _Group())
                (group.alone if pattern.groups else group.combinable).append((index, pattern))
        for group in self._groups.values():
            if group.combinable:
                group.tree = _Node(group.combinable)
        self._lengths = sorted({len(prefix) for prefix in self._groups}, reverse=True)
        self.tried = 0
        """How many patterns and alternations have been tried so far (tests, benchmarks)."""

    def matching(self, ref: str) -> list[int]:
        """The indexes of the jobs with a pattern that matches all of ``ref``, ascending."""
        found: set[int] = set()
        for length in self._lengths:
            if length > len(ref):
                continue
            group = self._groups.get(ref[:length])
            if group is None:
                continue
            for index, pattern in group.alone:
                self.tried += 1
                if index not in found and pattern.fullmatch(ref):
                    found.add(index)
            if group.tree is not None:
                found.update(self._in_tree(group.tree, ref))
        return sorted(found)

    def _in_tree(self, root: _Node, ref: str) -> Iterator[int]:
        stack = [root]
        while stack:
            node = stack.pop()
            if len(node.members) <= LEAF_SIZE:
                for index, pattern in node.members:
                    self.tried += 1
                    if pattern.fullmatch(ref):
                        yield index
                continue
            self.tried += 1
            if node.alternation().fullmatch(ref):
                stack.extend(node.children())
