"""Fixtures shared by every room's tests: installed commands, example workspaces, PostgreSQL."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BIN = Path(sys.executable).parent
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"


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
