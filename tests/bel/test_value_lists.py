"""Lists of values in SQL on SQLite: one statement text whatever their length, so the
connection compiles and keeps one statement per query, not one per length."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.bel.conftest import connected

from databuild.bel import BuildRequestEvent, Event, PartitionEvent
from databuild.bel.backend import FETCH_ROWS, Database
from databuild.bel.writer import append_batch


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    with connected(str(tmp_path / "bel.sqlite"), tmp_path) as db:
        yield db


def test_a_list_of_any_length_selects_exactly_its_rows_with_one_statement(
    database: Database,
) -> None:
    database.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    database.insert_many("t", ("k",), [(f"k{n}",) for n in range(50_000)])
    texts = set()
    # 40,000 values: more than the 32,766 variables one SQLite statement may have.
    for size in (0, 1, 7, 1_000, 40_000):
        wanted = [f"k{n}" for n in range(0, 2 * size, 2)]
        condition, params = database.in_condition("k", [*wanted, "k-none", "ü/ß \"q\""])
        texts.add(condition)
        got = {k for (k,) in database.all(f"SELECT k FROM t WHERE {condition}", params)}
        assert got == {k for k in wanted if int(k[1:]) < 50_000}
    assert len(texts) == 1


def test_batches_of_every_size_run_the_same_statements(database: Database) -> None:
    statements: set[str] = set()
    execute = database.execute

    def spy(sql: str, params: Any = (), **kwargs: Any) -> Any:
        statements.add(sql)
        return execute(sql, params, **kwargs)

    database.execute = spy  # type: ignore[method-assign]
    refs = [f"out/{n}" for n in range(800)]
    append_batch(database, [Event("b1", BuildRequestEvent("received", tuple(refs)))])

    def store(sizes: range, first: int) -> int:
        for size in sizes:
            batch = [Event("b1", PartitionEvent(ref, "requested"))
                     for ref in refs[first:first + size]]
            assert all(isinstance(r, Event) for r in append_batch(database, batch))
            first += size
        return first

    after = store(range(1, 13), 0)
    seen = set(statements)
    store(range(13, 40), after)
    assert statements == seen


def test_rows_go_many_to_a_statement_and_apply_in_order(database: Database) -> None:
    """SQLite takes up to 128 rows a statement, in a few sizes; a later row of the same key
    updates what an earlier one left, as one statement a row would have."""
    database.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, n INTEGER)")
    conn = database._conn
    texts: set[str] = set()
    calls = 0

    class Counting:
        def execute(self, sql: str, params: Any = ()) -> Any:
            nonlocal calls
            texts.add(sql)
            calls += 1
            return conn.execute(sql, params)

        def executemany(self, sql: str, rows: Any) -> Any:
            nonlocal calls
            texts.add(sql)
            calls += 1
            return conn.executemany(sql, rows)

    database._conn = Counting()
    expected: dict[int, tuple[str, int]] = {}
    for size in (1, 15, 16, 17, 200, 255, 1_000):
        rows = [(n % 97, f"v{size}.{n}", 1) for n in range(size)]
        for k, v, one in rows:
            old = expected.get(k)
            expected[k] = (v, one if old is None else old[1] + one)
        database.insert_many(
            "t", ("k", "v", "n"), rows,
            "ON CONFLICT (k) DO UPDATE SET v = excluded.v, n = t.n + excluded.n",
        )  # fmt: skip
    database._conn = conn
    got = {k: (v, n) for k, v, n in database.all("SELECT k, v, n FROM t")}
    assert got == expected
    assert len(texts) <= 5  # 128, 64, 32 and 16 rows, and one row
    # Not a statement a row: 1000 rows are 7 x 128 + 64 + 32, then 8 one at a time.
    assert calls == 1 + 1 + 1 + 2 + 3 + 5 + 10


def test_all_rows_come_back_whole_and_in_order_past_one_chunk(log_uri: str, tmp_path: Path) -> None:
    """``Database.all`` turns rows into Python ``FETCH_ROWS`` at a time (so that psycopg
    gives the GIL back between chunks): every row comes back, in the query's order."""
    count = 2 * FETCH_ROWS + 7
    with connected(log_uri, tmp_path) as db, db.write_transaction():
        db.execute("CREATE TABLE chunked (k INTEGER PRIMARY KEY, v TEXT)")
        db.insert_many("chunked", ("k", "v"), [(n, f"v{n}") for n in range(count)])
        rows = db.all("SELECT k, v FROM chunked ORDER BY k DESC")
        assert [tuple(row) for row in rows] == [(n, f"v{n}") for n in reversed(range(count))]
        assert db.all("SELECT k FROM chunked WHERE k < 0") == []
