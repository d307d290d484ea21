"""Where an event log lives (SPEC §4.3): the URI, the connection, and the SQL dialect.

A ``Database`` wraps one DB-API connection. Code above it writes SQL with ``?`` placeholders
and standard SQL that both SQLite and PostgreSQL understand; the few differences (how a write
transaction starts, glob matching, duplicate keys) live here.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

from attrs import frozen

from databuild.errors import DataBuildError
from databuild.jsontext import compact
from databuild.startup import EventLogSettingError, describe_location, event_log_location

_GLOB_SPECIAL = "*?["
# Any constant will do: it only serialises schema changes of services sharing one database.
_PG_SCHEMA_LOCK = 0x0DA7AB1D
CONNECT_TIMEOUT_S = 10
"""A PostgreSQL server that has not answered a new connection by then is unreachable."""
BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for a lock another connection holds."""
IDLE_IN_TRANSACTION_S = 5
"""The server ends a session that sits this long in a transaction without a statement: a
frozen service cannot hold the log's write lock past it (docs/service.md)."""
INSERT_PIECE = 1000
"""Rows per statement of ``insert_many`` on PostgreSQL."""
FETCH_ROWS = 1000
"""Rows turned into Python at a time by ``all`` (see there)."""


def session_name(service_id: str) -> str:
    """The ``application_name`` of a service's PostgreSQL sessions."""
    return f"databuild:{service_id}"


class EventLogError(DataBuildError):
    """The event log cannot be opened or used (bad URI, unreachable, newer schema, closed)."""

    code = "event_log"


class StoreUnavailable(EventLogError):
    """The database could not store events (unreachable, disk full); nothing was stored.

    Unlike a refused event, the same append may succeed once the store answers again.
    """

    code = "event_log_unavailable"


class LogFileGone(StoreUnavailable):
    """The SQLite file the log was opened on is no longer at its path (deleted, or replaced
    by another file): what the log would store would be lost, so it stores nothing."""

    code = "event_log_gone"


class DuplicateEvent(EventLogError):
    """An event whose ``event_id`` the log holds already, at ``idx``; nothing was written.

    After a ``StoreUnavailable`` the transaction may have committed all the same (the answer
    was lost): appending the event again then tells where it is.
    """

    code = "duplicate_event"

    def __init__(self, message: str, idx: int) -> None:
        super().__init__(message)
        self.idx = idx


@frozen
class Location:
    """A parsed event-log URI: ``dialect`` is ``"sqlite"`` or ``"postgresql"``."""

    dialect: str
    target: str
    """The SQLite file's absolute path, or the PostgreSQL connection URI."""

    def describe(self) -> str:
        """The location without any password, for messages and logs."""
        return describe_location(self.dialect, self.target)


def parse_uri(uri: str, workspace_root: Path) -> Location:
    """Parse an event-log URI; a relative plain path is taken from ``workspace_root`` (the
    rule is ``databuild.startup``'s, which the CLI shares)."""
    try:
        return Location(*event_log_location(uri, workspace_root))
    except EventLogSettingError as e:
        raise EventLogError(str(e)) from None


def _glob_parts(pattern: str) -> Iterator[tuple[str, str]]:
    """Split a glob into ``("*", "*")``, ``("?", "?")``, ``("[", body)`` and ``("", char)``.

    A ``[`` without a closing ``]`` (the first character of a class may be ``]``) is literal.
    """
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch in "*?":
            yield ch, ch
        elif ch == "[" and (end := pattern.find("]", i + 1)) != -1:
            yield "[", pattern[i:end]
            i = end + 1
        else:
            yield "", ch


def glob_to_regex(pattern: str) -> str:
    """A POSIX regular expression matching what the glob ``pattern`` matches, whole."""
    out = ["^"]
    for kind, text in _glob_parts(pattern):
        if kind == "*":
            out.append(".*")
        elif kind == "?":
            out.append(".")
        elif kind == "[":
            body = "^" + text[1:] if text.startswith("!") else text
            out.append("[" + body.replace("\\", "\\\\") + "]")
        else:
            out.append(re.escape(text))
    out.append("$")
    return "".join(out)


def glob_to_like(pattern: str) -> str:
    """A LIKE pattern (escape character ``\\``) matching everything ``pattern`` matches.

    A character class becomes ``_``, so the LIKE may match more than the glob: it finds
    candidates for the exact test of ``glob_condition``.
    """
    like = {"*": "%", "?": "_", "[": "_"}
    return "".join(
        like[kind] if kind else re.sub(r"([\\%_])", r"\\\1", text)
        for kind, text in _glob_parts(pattern)
    )


def longest_literal(pattern: str) -> int:
    """The length of the longest run of literal characters in a glob."""
    longest = run = 0
    for kind, _ in _glob_parts(pattern):
        run = 0 if kind else run + 1
        longest = max(longest, run)
    return longest


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard."""
    cut = min((i for i in (pattern.find(c) for c in _GLOB_SPECIAL) if i != -1), default=None)
    return pattern if cut is None else pattern[:cut]


def literal_suffix(pattern: str) -> str:
    """The part of a glob after its last wildcard or character class."""
    cut = max(pattern.rfind(c) for c in _GLOB_SPECIAL + "]")
    return pattern[cut + 1 :]


def _starting_with(column: str, text: str) -> tuple[str, list[Any]] | None:
    """SQL selecting values of ``column`` that start with ``text``, as an index range."""
    if not text or ord(text[-1]) == 0x10FFFF:
        return None
    return f"{column} >= ? AND {column} < ?", [text, text[:-1] + chr(ord(text[-1]) + 1)]


_SQLITE_ROWS, _SQLITE_FEWEST_ROWS = 128, 16
"""An SQLite ``INSERT`` of many rows takes them 128, 64, 32 or 16 at a time: it steps once
for them all, so the log's thread gives up the GIL and waits to win it back once, not once a
row, and the reactor decides the next batch meanwhile. Powers of two, so that few
statements are compiled (four a table, about 50 KiB each); the last rows, fewer than 16,
go one at a time (docs/performance.md)."""


class Database:
    """One connection to an event log, used from one thread at a time."""

    dialect: str
    ref_trigrams: bool
    """Whether the catalog's refs have a trigram index (``has_ref_trigrams``, set on open)."""
    service_id: str | None
    """The service whose lease fences every write (``services.register``), if any."""
    host: str | None
    """That service's host."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.dialect = location.dialect
        self.ref_trigrams = False
        self.service_id = None
        self.host = None
        self._conn: Any = None
        self._sql_cache: dict[str, str] = {}
        self._file: tuple[int, int] | None = None
        """SQLite: the device and inode of the file opened."""

    def connect(self) -> None:
        """Open the connection (blocking: call it off the reactor thread)."""
        try:
            if self.dialect == "sqlite":
                self._conn = _connect_sqlite(Path(self.location.target))
                opened = os.stat(self.location.target)
                self._file = (opened.st_dev, opened.st_ino)
            else:
                import psycopg

                self._conn = psycopg.connect(
                    self.location.target, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
                )
                # A frozen client's open transaction (its locks) goes after this long.
                self._conn.execute(
                    f"SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_S}s'"
                )
                if self.service_id is not None:
                    self.name_session()
        except Exception as e:
            raise EventLogError(
                f"cannot open the event log at {self.location.describe()}: {e}"
            ) from e

    def back_up(self, path: Path) -> None:
        """Copy a SQLite log, consistently (its WAL included), to ``path``."""
        assert self.dialect == "sqlite"
        copy = sqlite3.connect(path)
        try:
            self._conn.backup(copy)
        finally:
            copy.close()

    def file_gone(self) -> str | None:
        """SQLite: why the log's path no longer names the file opened (a ``stat``), if so."""
        if self._file is None:
            return None
        path = self.location.target
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return f"the event log file {path} was deleted while the service used it"
        except OSError:
            return None  # not readable just now: the writes will say what is wrong
        if (now.st_dev, now.st_ino) != self._file:
            return (
                f"the event log file {path} was replaced by another file while the service"
                " used it"
            )
        return None

    def name_session(self) -> None:
        """Name this PostgreSQL session after its service, so a sweeper can end it."""
        if self.dialect == "postgresql":
            self.execute("SELECT set_config('application_name', ?, false)",
                         (session_name(self.service_id or ""),))

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def lost(self) -> bool:
        """Whether the server dropped the connection (PostgreSQL restarts, failovers, a cut)."""
        return self.dialect == "postgresql" and bool(self._conn.closed or self._conn.broken)

    def reconnect_if_lost(self) -> None:
        """Connect again if the server dropped the connection."""
        if self.lost:
            self._conn.close()
            self.connect()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _sql(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        cached = self._sql_cache.get(sql)
        if cached is None:
            cached = self._sql_cache[sql] = sql.replace("?", "%s")
        return cached

    def execute(self, sql: str, params: Sequence[Any] = (), *, replan: bool = False) -> Any:
        """Run one statement written with ``?`` placeholders; returns the cursor.

        ``replan``: PostgreSQL plans it afresh, for a lookup whose plan depends on the size of
        tables that grow. psycopg prepares a statement run five times, and the server then
        keeps a generic plan: one made while a new log was small stayed a sequential scan
        (the writer's job-run lookup took 4-8 ms a batch at 5,000 runs).
        """
        if replan and self.dialect == "postgresql":
            return self._conn.execute(self._sql(sql), params, prepare=False)
        return self._conn.execute(self._sql(sql), params)

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per row of parameters, in order (nothing if none)."""
        if not rows:
            return
        if self.dialect == "sqlite":
            self._conn.executemany(sql, rows)
        else:
            self._conn.cursor().executemany(self._sql(sql), rows)

    def insert_many(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], tail: str = ""
    ) -> None:
        """``INSERT INTO table (columns) VALUES ... tail`` of ``rows`` (nothing if none).

        On PostgreSQL it is one statement whatever the number of rows: they travel as one JSON
        parameter that ``json_populate_recordset`` turns into rows of the table's own types,
        so its text never changes and is prepared once. Rows may then not repeat a key that
        ``tail``'s ON CONFLICT updates. On SQLite they go many to a statement
        (``_SQLITE_ROWS``), each applied in turn, as one statement a row would.
        """
        if not rows:
            return
        names = ", ".join(columns)
        if self.dialect == "sqlite":
            head = f"INSERT INTO {table} ({names}) VALUES "
            row_marks = f"({', '.join('?' * len(columns))})"
            done, count = 0, _SQLITE_ROWS
            while count >= _SQLITE_FEWEST_ROWS:
                while len(rows) - done >= count:
                    chunk = rows[done : done + count]
                    done += count
                    self._conn.execute(
                        f"{head}{', '.join([row_marks] * count)} {tail}",
                        list(chain.from_iterable(chunk)),
                    )
                count //= 2
            if done < len(rows):
                self._conn.executemany(f"{head}{row_marks} {tail}", rows[done:])
            return
        sql = (
            f"INSERT INTO {table} ({names}) SELECT {names}"
            f" FROM json_populate_recordset(NULL::{table}, %s) {tail}"
        )
        # In pieces: encoding holds the GIL throughout, and the plan rows of a graph of
        # 100,000 runs in one document held the reactor for 0.4 s (with ``json.dumps``).
        for start in range(0, len(rows), INSERT_PIECE):
            piece = rows[start : start + INSERT_PIECE]
            self._conn.execute(
                sql, (compact([dict(zip(columns, row, strict=True)) for row in piece]),)
            )

    def in_condition(self, column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
        """SQL and parameters selecting rows whose ``column`` is one of ``values``.

        The values go as one JSON array, so the statement's text stays the same whatever their
        number. On SQLite, ``IN (?, ?, ...)`` made a statement per length, and the connection
        kept each one compiled in its statement cache (2.2 MiB of SQLite's memory during a
        build of 5,000 runs, docs/performance.md); on PostgreSQL, psycopg dumps a list as an
        array in Python, element by element (50 ids cost 95 µs of client CPU, their JSON 1 µs).
        """
        if self.dialect == "sqlite":
            return f"{column} IN (SELECT value FROM json_each(?))", [compact(list(values))]
        return (
            f"{column} = ANY(ARRAY(SELECT json_array_elements_text(?::json)))",
            [compact(list(values))],
        )

    def in_pairs(
        self, columns: tuple[str, str], pairs: Sequence[tuple[str, str]]
    ) -> tuple[str, list[Any]]:
        """SQL and parameters selecting rows whose two ``columns`` hold one of ``pairs``, by
        the index on both: on PostgreSQL, ``a IN (...) AND b IN (...)`` looked up the first
        column alone and tested the second on every row of it (all of a build's refs, per
        batch of its events)."""
        first, second = columns
        if self.dialect == "sqlite":
            # SQLite steps through the index for each pair of the two lists.
            a, more_a = self.in_condition(first, list(dict.fromkeys(p[0] for p in pairs)))
            b, more_b = self.in_condition(second, list(dict.fromkeys(p[1] for p in pairs)))
            return f"{a} AND {b}", more_a + more_b
        return (
            f"({first}, {second}) IN (SELECT * FROM json_to_recordset(?::json)"
            " AS k(a text, b text))",
            [compact([{"a": a, "b": b} for a, b in pairs])],
        )

    def execute_script(self, script: str) -> None:
        """Run several statements within the current transaction."""
        if self.dialect == "postgresql":
            self._conn.execute(script)
            return
        # sqlite3's executescript would commit the open transaction first.
        statement = ""
        for line in script.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                self._conn.execute(statement)
                statement = ""

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of ``sql``, turned into Python ``FETCH_ROWS`` at a time: psycopg holds
        the GIL while it converts the rows it fetches, and the 200,000 rows of a build of
        100,000 runs held the reactor 0.4 s in one ``fetchall`` (docs/performance.md)."""
        cursor = self.execute(sql, params)
        rows: list[tuple[Any, ...]] = []
        while chunk := cursor.fetchmany(FETCH_ROWS):
            rows += chunk
        return rows

    def sever(self) -> None:
        """Cut the connection's socket, from any thread: a call blocked on it fails at once.

        For a service fencing itself: a call stuck on a frozen network gives up its thread.
        """
        conn = self._conn
        if self.dialect != "postgresql" or conn is None or conn.closed:
            return
        with contextlib.suppress(OSError):
            sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
            with sock:
                sock.shutdown(socket.SHUT_RDWR)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A plain transaction (on SQLite, holding the write lock)."""
        self.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
        with self._ending_transaction():
            yield

    @contextmanager
    def write_transaction(self, *, schema_change: bool = False) -> Iterator[None]:
        """A transaction that holds the log's write lock until it commits or rolls back.

        On PostgreSQL the lock also orders writers of other services sharing the log, so
        ``idx`` order is commit order and readers paging with ``since`` miss nothing. A
        ``schema_change`` takes an advisory lock instead, as the tables may not exist yet.
        """
        if self.dialect == "sqlite":
            self.execute("BEGIN IMMEDIATE")
            with self._ending_transaction():
                yield
            return
        if schema_change:
            self.execute("BEGIN")
            self.execute("SELECT pg_advisory_xact_lock(?)", (_PG_SCHEMA_LOCK,))
            with self._ending_transaction():
                yield
            return
        # Pipeline mode: statements whose results are not read do not wait for the server.
        with self._conn.pipeline():
            self.execute("BEGIN")
            self.execute("LOCK TABLE events IN EXCLUSIVE MODE")
            with self._ending_transaction():
                yield

    @contextmanager
    def _ending_transaction(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def glob_condition(self, column: str, pattern: str) -> tuple[str, list[Any]]:
        """SQL and parameters selecting rows whose ``column`` matches the glob ``pattern``."""
        if self.dialect == "sqlite":
            # The unary + keeps SQLite from turning a literal prefix into an index range by
            # itself: whether a range pays is decided by the caller (see glob_range).
            return f"+{column} GLOB ?", [_sqlite_glob(pattern)]
        return f"{column} ~ ?", [glob_to_regex(pattern)]

    def glob_trigrams(self, pattern: str) -> tuple[str, str, list[Any]] | None:
        """Where the catalog's trigram index finds every ref matching ``pattern``.

        ``(table, condition, params)``: the refs in ``table`` that meet ``condition`` are a
        superset of the matches. None if the index is missing, or if ``pattern`` has no run
        of three literal characters longer than its literal prefix and suffix: refs holding
        a prefix or suffix anywhere are never fewer than those in its range (glob_range).
        """
        longest = longest_literal(pattern)
        ends = max(len(literal_prefix(pattern)), len(literal_suffix(pattern)))
        if not self.ref_trigrams or longest < 3 or longest <= ends:
            return None
        if self.dialect == "sqlite":
            return "partition_ref_trigrams", "partition_ref GLOB ?", [_sqlite_glob(pattern)]
        return "partitions", "partition_ref LIKE ?", [glob_to_like(pattern)]

    @staticmethod
    def glob_range(
        column: str, reversed_column: str, pattern: str
    ) -> tuple[str, list[Any]] | None:
        """An index range holding every match of ``pattern``, if it has literal text at an end.

        The longer of the literal prefix and the literal suffix gives a range on ``column``
        or on ``reversed_column`` (the same text spelled backwards).
        """
        prefix, suffix = literal_prefix(pattern), literal_suffix(pattern)
        if len(suffix) > len(prefix):
            return _starting_with(reversed_column, suffix[::-1])
        return _starting_with(column, prefix)


def _sqlite_glob(pattern: str) -> str:
    return pattern.replace("[!", "[^")


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are begun and ended explicitly, never implicitly.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL: a commit is in the WAL file (the OS's page cache) before it returns, so it
    # survives the death of this process; only a power loss or OS crash can take back the
    # last commits, and never leaves a half-written one. FULL would add an fsync per commit,
    # up to 7 ms each on the reference machine (docs/event-log.md, "Durability").
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
