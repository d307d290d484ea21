"""Fixtures shared by every room's tests: installed commands, example workspaces, PostgreSQL,
a small disk to fill up; and the rule that marks each test ``unit`` or ``e2e``."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import types
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"

# -- unit or e2e (docs/development.md) ---------------------------------------------------------

E2E_FOLDERS = frozenset({"bazel", "multi"})
"""Folders whose every test runs Bazel or several services on PostgreSQL."""
STARTERS = frozenset({
    "start_service", "service_factory", "installed", "chromium", "psycopg", "PG_ADMIN_DSN",
    "pg_schema", "PrivateCluster", "spawn_databuild",
})
"""Names of what starts a real outside part: ``twistd``, an installed command, Chromium,
PostgreSQL. A test that names one, in its module or in a fixture it uses, is end-to-end."""


def _names(code: types.CodeType) -> Iterator[str]:
    """The global names ``code`` and the functions defined inside it refer to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _names_a_starter(functions: Iterable[object]) -> bool:
    return any(
        not STARTERS.isdisjoint(_names(code))
        for f in functions
        if isinstance(code := getattr(f, "__code__", None), types.CodeType)
    )


def is_e2e(item: pytest.Item) -> bool:
    """Whether ``item`` starts a real service, browser, Bazel or PostgreSQL."""
    path = Path(str(item.path))
    if path.name.endswith("_e2e.py") or not E2E_FOLDERS.isdisjoint(path.parts):
        return True
    module = getattr(item, "module", None)
    if module is not None and not STARTERS.isdisjoint(vars(module)):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "postgresql" in callspec.params.values():
        return True
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is None:
        return False
    return not STARTERS.isdisjoint(fixtures.names_closure) or _names_a_starter(
        definition.func for definitions in fixtures.name2fixturedefs.values()
        for definition in definitions
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test ``unit`` or ``e2e``, so that new tests are classified without edits."""
    for item in items:
        item.add_marker(pytest.mark.e2e if is_e2e(item) else pytest.mark.unit)


def installed(command: str) -> str:
    """Path of a command installed in the test interpreter's environment."""
    path = BIN / command
    assert path.exists(), f"{command} is not installed next to {sys.executable}"
    return str(path)


@pytest.fixture
def color_votes(tmp_path: Path) -> Path:
    """A fresh copy of examples/color_votes as a workspace."""
    dest = tmp_path / "color_votes"
    shutil.copytree(
        EXAMPLES / "color_votes", dest, ignore=shutil.ignore_patterns(".databuild", "data")
    )
    return dest


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A PostgreSQL event-log URI whose tables live in a fresh schema, dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN_DSN}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs, to fill up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` up with one file; returns it (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    return filler
