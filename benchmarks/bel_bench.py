"""Build Event Log benchmark: append throughput, and query times with 1,000,000 events.

    .venv/bin/python benchmarks/bel_bench.py [--events N] [--appends N] [--keep DIR]
                                             [--appends-only]

1. Appends/s on SQLite and PostgreSQL through ``EventLog.append``: many builds recording at
   once (group commit; with the process's CPU time per append) and one append at a time,
   against baselines measured in the same run
   on the same database, without the transition check or the summary tables: a bare
   ``INSERT`` of the very ``events`` rows the log stored, as many per transaction as the log
   committed together, into a table without indexes; and one bare ``INSERT`` per committed
   transaction. The table ends with the size of the SQLite WAL file before the log closed
   (``--appends-only`` stops after this table).
2. A log of ``--events`` events (default 1,000,000) is generated in a child process through
   the same schema and writer (``writer.append_batch``, 10,000 events per transaction; SQLite
   with ``synchronous=OFF`` while generating only), then copied table by table into a fresh
   PostgreSQL schema with ``COPY``. Each list and status query is then timed through the
   ``EventLog`` API (median and worst of several runs) beside the 50 ms target of SPEC §7.
3. Peak memory (``ru_maxrss``) of this process, which only opens logs and queries them; the
   generator's peak is shown apart.

PostgreSQL: ``postgresql://postgres@127.0.0.1:5432/test`` (or ``--pg URI``); each run works in
fresh schemas that it drops at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from twisted.internet import task
from twisted.internet.defer import ensureDeferred, gatherResults

from databuild.bel import (
    BuildRequestEvent,
    Event,
    EventLog,
    JobEvent,
    PartitionEvent,
    open_event_log,
)
from databuild.bel.backend import Database, Location, parse_uri
from databuild.bel.schema import create_or_upgrade
from databuild.bel.writer import append_batch

TARGET_MS = 50.0
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = (
    "events", "builds", "build_job_counts", "partitions", "build_partitions", "job_runs",
    "job_run_outputs", "job_stats",
)
JOBS = [f"//jobs:job_{i:02d}" for i in range(20)]
COLORS = ["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "grey", "teal"]
DATES = [f"{y}-{m:02d}-{d:02d}" for y in range(1996, 2027) for m in range(1, 13)
         for d in range(1, 29)]
"""With COLORS, ~100,000 distinct refs: a catalog of that size, most refs built once or twice."""
RUNS_PER_BUILD = 10


# --- generating a big log ---------------------------------------------------------------


def simulated_builds(rng: random.Random) -> Iterator[tuple[str, Any]]:
    """(build_request_id, payload) of plausible builds, forever: 77 events per build."""
    while True:
        build_id = uuid.uuid4().hex
        date = rng.choice(DATES)
        refs = [f"color_votes/{date}/{c}" for c in rng.sample(COLORS, RUNS_PER_BUILD)]
        yield build_id, BuildRequestEvent("received", refs[:2])
        for status in ("planning", "analysis_completed", "executing"):
            yield build_id, BuildRequestEvent(status)
        failing = rng.random() < 0.1
        for n, ref in enumerate(refs):
            run_id, label = uuid.uuid4().hex, rng.choice(JOBS)
            if n < 2:
                yield build_id, PartitionEvent(ref, "requested")
            yield build_id, JobEvent(run_id, label, "scheduled", (ref,))
            yield build_id, PartitionEvent(ref, "scheduled", "", run_id)
            yield build_id, JobEvent(run_id, label, "running", (ref,))
            yield build_id, PartitionEvent(ref, "building", "", run_id)
            ok = not (failing and n == RUNS_PER_BUILD - 1)
            yield build_id, JobEvent(run_id, label, "completed" if ok else "failed", (ref,),
                                     "" if ok else "exit 1", 0 if ok else 1)
            yield build_id, PartitionEvent(ref, "available" if ok else "failed", "", run_id)
        yield build_id, BuildRequestEvent("failed" if failing else "completed")


def generate(path: Path, count: int) -> None:
    """Write ``count`` events to a new SQLite log at ``path`` through the real writer."""
    db = Database(Location("sqlite", str(path)))
    db.connect()
    create_or_upgrade(db)
    db.execute("PRAGMA synchronous = OFF")
    rng = random.Random(19)
    clock = 1_795_000_000 * 10**9
    events = simulated_builds(rng)
    written = 0
    while written < count:
        batch = []
        for _ in range(min(10_000, count - written)):
            build_id, payload = next(events)
            clock += 1_000_000
            batch.append(Event(build_id, payload, timestamp=clock))
        stored = append_batch(db, batch)
        assert all(isinstance(e, Event) for e in stored), "the simulation broke a transition"
        written += len(batch)
    db.execute("ANALYZE")
    db.close()


def copy_to_postgresql(sqlite_path: Path, pg_uri: str) -> None:
    """Copy every table of a SQLite log into an empty PostgreSQL log of the same schema."""
    src = sqlite3.connect(sqlite_path)
    db = Database(Location("postgresql", pg_uri))
    db.connect()
    create_or_upgrade(db)
    db.close()
    with psycopg.connect(pg_uri) as conn:
        for table in TABLES:
            columns = [row[1] for row in src.execute(f"PRAGMA table_info({table})")]
            names = ", ".join(columns)
            with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in src.execute(f"SELECT {names} FROM {table}"):
                    copy.write_row(row)
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('events', 'idx'), (SELECT max(idx) FROM events))"
        )
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    src.close()


# --- timing -----------------------------------------------------------------------------


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def time_query(call: Callable[[], Awaitable[Any]], runs: int = 15) -> tuple[float, float]:
    """(median, worst) wall time in ms of ``call()``, after one warm-up run."""
    await call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


async def append_rates(reactor: Any, uri: str, root: Path, total: int) -> dict[str, float]:
    """Appends/s: concurrent builds (group commit), one at a time, and the bare baseline."""
    log = open_event_log(uri, root, reactor)
    await log.open()
    builds = 50
    per_build = total // builds

    async def one_build(i: int) -> None:
        build_id = f"w{i}-{uuid.uuid4().hex}"
        await log.append(Event(build_id, BuildRequestEvent("received", ("out/1",))))
        for n in range(per_build - 1):
            run_id = f"{build_id}-{n // 2}"
            status = "scheduled" if n % 2 == 0 else "skipped"
            await log.append(Event(build_id, JobEvent(run_id, "job", status, ("out/1",))))

    start, cpu = time.perf_counter(), time.process_time()
    commits = log.commits
    await gatherResults([ensureDeferred(one_build(i)) for i in range(builds)])
    concurrent = builds * per_build / (time.perf_counter() - start)
    cpu_us = (time.process_time() - cpu) / (builds * per_build) * 1e6
    per_commit = builds * per_build / (log.commits - commits)

    serial_n = max(total // 10, 200)
    start = time.perf_counter()
    await one_build_serial(log, serial_n)
    serial = serial_n / (time.perf_counter() - start)
    wal = Path(f"{log.location.target}-wal")
    wal_mib = wal.stat().st_size / 2**20 if log.location.dialect == "sqlite" else 0.0
    await log.close()
    return {
        "concurrent": concurrent,
        "cpu_us": cpu_us,
        "events_per_commit": per_commit,
        "serial": serial,
        "same_rows": same_rows_rate(uri, root, round(per_commit)),
        "baseline": bare_insert_rate(uri, root, serial_n),
        "fsync_floor": bare_insert_rate(uri, root, min(serial_n, 500), fsync=True),
        "wal_mib": wal_mib,
    }


def same_rows_rate(uri: str, root: Path, per_commit: int) -> float:
    """Rows/s of a bare INSERT of the very ``events`` rows the log stored, ``per_commit``
    rows per transaction, into a table of the same columns without any index."""
    db = Database(parse_uri(uri, root))
    db.connect()
    rows = db.all("SELECT * FROM events ORDER BY idx")
    db.execute("CREATE TABLE bare_events AS SELECT * FROM events WHERE 1 = 0")
    marks = ", ".join("?" * len(rows[0]))
    start = time.perf_counter()
    for first in range(0, len(rows), per_commit):
        db.execute("BEGIN")
        db.execute_many(f"INSERT INTO bare_events VALUES ({marks})", rows[first:first + per_commit])
        db.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - start)
    db.execute("DROP TABLE bare_events")
    db.close()
    return rate


async def one_build_serial(log: EventLog, n: int) -> None:
    build_id = uuid.uuid4().hex
    await log.append(Event(build_id, BuildRequestEvent("received", ("out/1",))))
    for i in range(n - 1):
        status = "scheduled" if i % 2 == 0 else "skipped"
        await log.append(Event(build_id, JobEvent(f"{build_id}-{i // 2}", "j", status, ("o/1",))))


def bare_insert_rate(uri: str, root: Path, n: int, *, fsync: bool = False) -> float:
    """Rows/s of one bare INSERT per committed transaction, on the log's database settings.

    With ``fsync`` SQLite uses ``synchronous = FULL`` (an fsync per commit), as PostgreSQL
    does by default anyway.
    """
    db = Database(parse_uri(uri, root))
    db.connect()
    if fsync and db.dialect == "sqlite":
        db.execute("PRAGMA synchronous = FULL")
    key = "INTEGER" if db.dialect == "sqlite" else "BIGINT GENERATED ALWAYS AS IDENTITY"
    db.execute(f"CREATE TABLE bare (idx {key} PRIMARY KEY, body TEXT)")
    body = json.dumps(Event("b", JobEvent("r", "j", "scheduled", ("o/1",))).to_json())
    start = time.perf_counter()
    for _ in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO bare (body) VALUES (?)", (body,))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    db.execute("DROP TABLE bare")
    db.close()
    return rate


async def query_times(
    reactor: Any, uri: str, root: Path, count: int
) -> list[tuple[str, float, float]]:
    log = open_event_log(uri, root, reactor)
    await log.open()
    try:
        newest = (await log.list_builds(limit=1))["builds"][0]["build_request_id"]
        middle = (await log.list_builds(limit=1, offset=count // 150))["builds"][0][
            "build_request_id"
        ]
        task_id = (await log.list_tasks(limit=1, offset=count // 14))["tasks"][0]["job_run_id"]
        refs = [p["partition_ref"] for p in (await log.list_partitions(limit=100))["partitions"]]
        last = (await log.events(limit=1, build_request_id=newest))["events"][0]["idx"]
        cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("builds list", lambda: log.list_builds()),
            ("builds list --status failed", lambda: log.list_builds("failed")),
            ("builds list --offset 900", lambda: log.list_builds(offset=900)),
            ("builds show (newest)", lambda: log.get_build(newest)),
            ("builds show (older)", lambda: log.get_build(middle)),
            ("unfinished builds", lambda: log.unfinished_builds()),
            ("partitions list", lambda: log.list_partitions()),
            ("partitions list --status failed", lambda: log.list_partitions("failed")),
            ("partitions list --pattern 'color_votes/2026-03-*'",
             lambda: log.list_partitions(pattern="color_votes/2026-03-*")),
            ("partitions list --pattern '*/teal'",
             lambda: log.list_partitions(pattern="*/teal")),
            ("partitions list --pattern '*-01-01/teal' (rare, suffix)",
             lambda: log.list_partitions(pattern="*-01-01/teal")),
            ("partitions list --pattern '*1999-01-01*' (rare, no literal end)",
             lambda: log.list_partitions(pattern="*1999-01-01*")),
            ("partitions show", lambda: log.get_partition(refs[-1])),
            ("partition statuses (100 refs)", lambda: log.partition_statuses(refs)),
            ("jobs list", lambda: log.list_jobs()),
            ("jobs show", lambda: log.get_job(JOBS[3])),
            ("tasks list", lambda: log.list_tasks()),
            ("tasks list --build", lambda: log.list_tasks(build_request_id=middle)),
            ("tasks list --job --status failed",
             lambda: log.list_tasks(job_label=JOBS[3], status="failed")),
            ("tasks show", lambda: log.get_task(task_id)),
            ("events since 0", lambda: log.events(since=0)),
            ("events of a build (progress replay)",
             lambda: log.events(build_request_id=newest)),
            ("events of a build after its last", lambda: log.events(last, None, newest)),
            ("events --job_label since half-way",
             lambda: log.events(since=count // 2, job_label=JOBS[5])),
        ]
        return [(name, *(await time_query(call))) for name, call in cases]
    finally:
        await log.close()


# --- the run ----------------------------------------------------------------------------


@contextmanager
def pg_schema(dsn: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{dsn}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def table(title: str, header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [header, *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [title, ""]
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


async def main(reactor: Any, options: argparse.Namespace) -> None:
    work = Path(options.keep or tempfile.mkdtemp(prefix="bel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# Build Event Log benchmark ({options.events:,} events; files in {work})\n")
    try:
        await measure(reactor, options, work)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


async def measure(reactor: Any, options: argparse.Namespace, work: Path) -> None:
    big = work / f"big-{options.events}.sqlite"

    rows = []
    for backend in ("sqlite", "postgresql"):
        with pg_schema(options.pg) as pg_uri:
            uri = str(work / f"appends-{uuid.uuid4().hex[:6]}.sqlite") if backend == "sqlite" \
                else pg_uri
            rates = await append_rates(reactor, uri, work, options.appends)
        rows.append((
            backend,
            f"{rates['concurrent']:,.0f}",
            f"{rates['cpu_us']:.0f}",
            f"{rates['events_per_commit']:.1f}",
            f"{rates['serial']:,.0f}",
            f"{rates['same_rows']:,.0f}",
            f"{rates['concurrent'] / rates['same_rows']:.2f}",
            f"{rates['baseline']:,.0f}",
            f"{rates['concurrent'] / rates['baseline']:.2f}",
            f"{rates['fsync_floor']:,.0f}",
            f"{rates['concurrent'] / rates['fsync_floor']:.1f}",
            f"{rates['wal_mib']:.1f}" if backend == "sqlite" else "-",
        ))
    print(table(
        f"Appends/s: {options.appends:,} appends from 50 builds at once (group commit), then one "
        "at a time; baselines: a bare INSERT of the same events rows in batches as large, "
        "into a table without indexes; a bare INSERT of an event row, one commit each, on the "
        "log's settings and with an fsync per commit; CPU: this process's, all threads (the "
        "50 builds' own code included), per concurrent append: the machine's load moves it "
        "less than the rates; WAL: the SQLite WAL file's size before the log closed",
        ("backend", "concurrent appends/s", "CPU µs/append", "events/commit", "serial appends/s",
         "same rows, bare INSERT/s", "concurrent/same rows", "bare INSERT rows/s",
         "concurrent/bare", "bare+fsync rows/s", "concurrent/bare+fsync", "WAL MiB"),
        rows,
    ))
    if options.appends_only:
        return

    if not big.exists():
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, __file__, "--generate", str(big), "--events", str(options.events)],
            check=True,
        )
        print(f"\ngenerated {options.events:,} events in {time.perf_counter() - start:.0f} s "
              f"(peak RSS of the generator "
              f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB)")
    size_mib = big.stat().st_size / 2**20
    rss_before = rss_mib()
    results: dict[str, list[tuple[str, float, float]]] = {}
    results["sqlite"] = await query_times(reactor, str(big), work, options.events)
    with pg_schema(options.pg) as pg_uri:
        start = time.perf_counter()
        copy_to_postgresql(big, pg_uri)
        print(f"copied to PostgreSQL in {time.perf_counter() - start:.0f} s")
        results["postgresql"] = await query_times(reactor, pg_uri, work, options.events)

    rows = []
    for (name, s_med, s_max), (_, p_med, p_max) in zip(
        results["sqlite"], results["postgresql"], strict=True
    ):
        worst = max(s_med, p_med)
        rows.append((name, f"{s_med:.2f} / {s_max:.2f}", f"{p_med:.2f} / {p_max:.2f}",
                     f"{TARGET_MS:.0f}", f"{worst / TARGET_MS:.2f}",
                     "ok" if worst <= TARGET_MS else "OVER"))
    print()
    print(table(
        f"Query time with {options.events:,} events, ms (median / worst of 15, through "
        f"EventLog; SQLite file {size_mib:.0f} MiB)",
        ("query", "SQLite", "PostgreSQL", "target", "median/target", ""),
        rows,
    ))
    print(f"\npeak RSS of this process: {rss_mib():.0f} MiB "
          f"(before opening the big log: {rss_before:.0f} MiB)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--pg", default=PG_DSN, help="PostgreSQL database to work in")
    parser.add_argument("--keep", help="directory to keep (and reuse) the generated log in")
    parser.add_argument("--appends-only", action="store_true",
                        help="measure append rates only, not queries on a big log")
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    opts = parse_args()
    if opts.generate:
        generate(Path(opts.generate), opts.events)
    else:
        task.react(lambda reactor: ensureDeferred(main(reactor, opts)))
