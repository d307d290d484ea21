"""Helpers for the graph tests: tiny workspaces whose jobs are real Python scripts."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from twisted.internet.defer import Deferred, succeed

from databuild.graph import load_workspace
from databuild.graph.workspace import Workspace

WriteWorkspace = Callable[..., Workspace]


def python_command(script: str) -> str:
    """A TOML array running ``script`` with the test's own interpreter."""
    return json.dumps([sys.executable, script])


def nothing_available(refs: Sequence[str]) -> Deferred[set[str]]:
    return succeed(set())


@pytest.fixture
def write_workspace(tmp_path: Path) -> WriteWorkspace:
    """Write ``databuild.toml`` and scripts into a fresh directory and load it.

    Each ``jobs`` entry maps a label to ``(output pattern, script source)``; the script is saved
    as ``<label>.py`` and run with ``sys.executable``.
    """

    def write(
        jobs: Mapping[str, tuple[str, str]],
        *,
        extra: str = "",
        files: Mapping[str, str] | None = None,
    ) -> Workspace:
        root = tmp_path / "ws"
        root.mkdir(exist_ok=True)
        tables = [f'[graph]\nlabel = "test"\n{extra}']
        for label, (pattern, source) in jobs.items():
            (root / f"{label}.py").write_text(textwrap.dedent(source))
            tables.append(
                f"[[jobs]]\nlabel = {json.dumps(label)}\noutputs = [{json.dumps(pattern)}]\n"
                f"command = {python_command(f'{label}.py')}\n"
            )
        for name, text in (files or {}).items():
            (root / name).write_text(textwrap.dedent(text))
        (root / "databuild.toml").write_text("\n".join(tables))
        return load_workspace(root)

    return write
