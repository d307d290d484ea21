"""Tables for people: aligned columns, short status names, local times, seconds.

Every function here is pure: it turns an API document (SPEC §5.5) into text. What the
service says (messages, refs, labels, a job's log lines) passes through ``printable`` before it
is printed for people, so that no control sequence a job printed reaches the terminal.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

_STATUS_PREFIXES = ("BUILD_REQUEST_", "JOB_", "PARTITION_")
MISSING = "-"
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 controls but tab and newline, DEL, and C1 controls: what a terminal may act upon (ESC
starts CSI, OSC and the rest; U+009B and U+009D are CSI and OSC in one character)."""


def visible(text: str) -> str:
    """``text`` with each control character shown as an escape (ESC as ``\\x1b``), so that it
    cannot clear the screen, set the title, write the clipboard or disguise a link; tabs and
    newlines stay as they are."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


_JSON_CONTROLS = re.compile(r"\\[ubfr]|[\x7f-\x9f]")
"""What a JSON text holding a control character ``visible`` escapes must contain: JSON writes
C0 controls as ``\\u00XX`` (or ``\\b``, ``\\f``, ``\\r``), DEL and C1 as they are or
as ``\\u00XX``."""


def printable_json(text: str, doc: Any) -> Any:
    """``printable(doc)`` of the document ``text`` holds, without walking it when the text
    cannot hold a control character (a big build's stream has tens of thousands of events)."""
    if "\\" not in text and "\x7f" not in text and text.isascii():
        return doc  # what _JSON_CONTROLS looks for, ruled out by three quick passes
    return printable(doc) if _JSON_CONTROLS.search(text) else doc


def printable(doc: Any) -> Any:
    """An API document with ``visible`` applied to every string in it, keys too."""
    if isinstance(doc, str):
        return visible(doc)
    if isinstance(doc, Mapping):
        return {visible(str(k)): printable(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [printable(v) for v in doc]
    return doc


def short_status(status: object) -> str:
    """``BUILD_REQUEST_COMPLETED`` -> ``completed``; anything else is shown as it is."""
    if not isinstance(status, str):
        return MISSING
    for prefix in _STATUS_PREFIXES:
        if status.startswith(prefix):
            return status[len(prefix) :].lower()
    return status.lower()


def local_time(ns: object) -> str:
    """Unix nanoseconds as local time, to the second."""
    if not isinstance(ns, int | float) or isinstance(ns, bool):
        return MISSING
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def seconds(value: object) -> str:
    """A duration in seconds, as ``1.2s``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value:.1f}s" if value < 100 else f"{value:.0f}s"


def refs(value: object, most: int = 3) -> str:
    """A list of refs, cut short after ``most`` of them."""
    if not isinstance(value, list):
        return cell("", value)
    shown = ", ".join(str(v) for v in value[:most])
    return f"{shown} (+{len(value) - most} more)" if len(value) > most else shown


def counts(value: object) -> str:
    """A ``{status: count}`` object as ``completed 3, failed 1`` (zero counts left out)."""
    if not isinstance(value, Mapping):
        return cell("", value)
    return ", ".join(f"{short_status(k)} {n}" for k, n in value.items() if n) or "none"


def cell(key: str, value: object) -> str:
    """One value, formatted by what its field name says it is."""
    if value is None:
        return MISSING
    if key == "status" or key.endswith("_status"):
        return short_status(value)
    if key.endswith("_at") or key in ("timestamp", "time"):
        return local_time(value)
    if key.endswith("_s"):
        return seconds(value)
    if key == "job_runs" and isinstance(value, Mapping):
        return counts(value)
    if isinstance(value, list):
        return refs(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(k, v)}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("\n", " ")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    return "\n".join([line(headers), *(line(r) for r in rows)])


Column = tuple[str, str]
"""A table column: its heading and the field it shows."""


def records(items: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """A table of API objects, one per row."""
    rows = [[cell(key, item.get(key)) for _, key in columns] for item in items]
    return table([heading for heading, _ in columns], rows)


def details(obj: Mapping[str, Any]) -> str:
    """A show document: its scalar fields as ``key: value`` lines, then one table per list
    of objects in it."""
    scalars = [(k, v) for k, v in obj.items() if not _is_table(v)]
    width = max((len(k) for k, _ in scalars), default=0)
    parts = ["\n".join(f"{k + ':':<{width + 1}} {cell(k, v)}".rstrip() for k, v in scalars)]
    for key, value in obj.items():
        if not _is_table(value):
            continue
        columns = SUBTABLES.get(key) or _columns_of(value)
        parts.append(f"{key}:\n" + _indent(records(value, columns)))
    return "\n\n".join(p for p in parts if p)


def _is_table(value: object) -> bool:
    """Whether ``value`` is a non-empty list of objects, shown as a table of its own."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], Mapping)


def _columns_of(items: Sequence[Mapping[str, Any]]) -> list[Column]:
    keys = dict.fromkeys(
        k for item in items for k, v in item.items() if not isinstance(v, Mapping | list)
    )
    return [(k.upper().replace("_", " "), k) for k in keys]


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


BUILD_COLUMNS: list[Column] = [
    ("BUILD", "build_request_id"),
    ("STATUS", "status"),
    ("CREATED", "created_at"),
    ("UPDATED", "updated_at"),
    ("JOB RUNS", "job_runs"),
    ("PARTITIONS", "requested_partitions"),
]
PARTITION_COLUMNS: list[Column] = [
    ("PARTITION", "partition_ref"),
    ("STATUS", "status"),
    ("UPDATED", "updated_at"),
    ("JOB", "job_label"),
    ("BUILD", "build_request_id"),
]
JOB_COLUMNS: list[Column] = [
    ("JOB", "job_label"),
    ("RUNS", "runs"),
    ("SKIPPED", "skipped"),
    ("SUCCEEDED", "succeeded"),
    ("FAILED", "failed"),
    ("MEAN", "mean_duration_s"),
    ("LAST RUN", "last_run_at"),
]
TASK_COLUMNS: list[Column] = [
    ("TASK", "job_run_id"),
    ("JOB", "job_label"),
    ("STATUS", "status"),
    ("STARTED", "started_at"),
    ("DURATION", "duration_s"),
    ("EXIT", "exit_code"),
    ("OUTPUTS", "outputs"),
]
WORKER_COLUMNS: list[Column] = [
    ("WORKER", "name"),
    ("HOST", "host"),
    ("QUEUES", "queues"),
    ("SLOTS", "concurrency"),
    ("RUNNING", "running"),
    ("LIVE", "live"),
    ("HEARTBEAT", "last_heartbeat"),
]
SUBTABLES: dict[str, list[Column]] = {
    "tasks": TASK_COLUMNS,
    "job_runs": TASK_COLUMNS,
    "builds": BUILD_COLUMNS,
    "partitions": [("PARTITION", "partition_ref"), ("STATUS", "status")],
    "history": [
        ("TIME", "timestamp"),
        ("STATUS", "status"),
        ("BUILD", "build_request_id"),
        ("JOB RUN", "job_run_id"),
        ("MESSAGE", "message"),
    ],
}

LISTS: dict[str, list[Column]] = {
    "builds": BUILD_COLUMNS,
    "partitions": PARTITION_COLUMNS,
    "jobs": JOB_COLUMNS,
    "tasks": TASK_COLUMNS,
    "workers": WORKER_COLUMNS,
}


def listing(doc: Mapping[str, Any], key: str, offset: int = 0) -> str:
    """A list document (``{"builds": [...]}`` and the like) as a table, with a footer saying
    so when the list is cut (SPEC §6)."""
    items = doc.get(key) or []
    footer = cut(len(items), offset, doc.get("total"), bool(doc.get("has_more")))
    if not items:
        return f"no {key}" + (f"\n{footer}" if footer else "")
    return records(items, LISTS[key]) + (f"\n{footer}" if footer else "")


def cut(shown: int, offset: int, total: object, has_more: bool) -> str:
    """``(showing 100 of 131; --limit/--offset for more)`` for a page that is not the whole
    list; empty for one that is."""
    if not has_more and offset == 0:
        return ""
    if offset == 0:
        rows = f"{shown}"
    elif shown:
        rows = f"rows {offset + 1}-{offset + shown}"
    else:
        rows = f"nothing after row {offset}"
    of = f"{total}" if isinstance(total, int) else f"more than {offset + shown}"
    return f"(showing {rows} of {of}; --limit/--offset for more)"


def service_status(doc: Mapping[str, Any], url: str) -> str:
    """A service's health (SPEC §5.4) for people: where it is, what it serves, how busy it is."""
    found = doc.get("graph")
    graph: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    uptime = doc.get("uptime_s")
    rows = [
        ("url", url),
        ("pid", cell("", doc.get("pid"))),
        ("version", cell("", doc.get("version"))),
        ("workspace", cell("", doc.get("workspace"))),
        ("graph", f"{cell('', graph.get('label'))} (fingerprint "
                  f"{cell('', graph.get('fingerprint'))}, loaded "
                  f"{local_time(graph.get('loaded_at'))})"),
        ("event log", cell("", doc.get("event_log"))),
        ("uptime", seconds(uptime)),
        ("active builds", cell("", doc.get("active_builds"))),
        ("idle timeout", seconds(doc.get("idle_timeout"))),
    ]  # fmt: skip
    if doc.get("problem"):
        rows.append(("problem", cell("", doc.get("problem"))))
    return "\n".join(f"{name + ':':<14} {value}" for name, value in rows)


def job_graph(doc: Mapping[str, Any]) -> str:
    """The job graph an analysis returned, one job run per row."""
    graph = doc.get("job_graph") or {}
    runs = graph.get("job_runs") or []
    rows = [
        [
            str(run.get("job_label")),
            refs(run.get("outputs"), most=2),
            refs([_input_ref(i) for i in run.get("inputs") or [] if _materialized(i)], most=2)
            or MISSING,
        ]
        for run in runs
    ]
    head = f"{len(runs)} job run{'s' if len(runs) != 1 else ''} for {refs(graph.get('outputs'))}"
    return head + "\n" + table(["JOB", "OUTPUTS", "INPUTS"], rows) if rows else head


def _materialized(item: Mapping[str, Any]) -> bool:
    return item.get("dep_type_code", 1) == 1


def _input_ref(item: Mapping[str, Any]) -> str:
    ref = item.get("partition_ref")
    return str(ref.get("str") if isinstance(ref, Mapping) else ref)


def log_line(line: Mapping[str, Any]) -> str:
    """One line of a job run's log: time, stream and text (``…`` if it goes on in the next)."""
    text = line.get("text")
    if text is None and "data" in line:
        text = json.dumps(line["data"])
    more = " …" if line.get("continued") else ""
    return f"{local_time(line.get('time'))}  {line.get('stream', ''):<6}  {text}{more}"


def raw_text(line: Mapping[str, Any]) -> str:
    """One line of a job run's log as the job printed it: its text and line end (none where
    it goes on in the next record), control characters and all (``tasks logs --raw``)."""
    text = line.get("text")
    if text is None and "data" in line:
        text = json.dumps(line["data"])
    return f"{text}" + ("" if line.get("continued") else "\n")
