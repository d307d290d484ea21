"""What the color_votes jobs share: the colours, where partitions live, the job protocol."""

from __future__ import annotations

import datetime
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

COLORS = ("red", "green", "blue")
"""The colours voted on; every total sums over exactly these."""

DATE = r"(?P<date>\d{4}-\d{2}-\d{2})"
COLOR = r"(?P<color>[a-z]+)"

Config = dict[str, Any]


def fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(1)


def parse_ref(pattern: str, ref: str) -> tuple[datetime.date, str | None]:
    """The date (and colour, if the pattern has one) of ``ref``; exits on a bad ref."""
    match = re.fullmatch(pattern, ref)
    if match is None:
        fail(f"{ref!r} does not match {pattern!r}")
    try:
        date = datetime.date.fromisoformat(match["date"])
    except ValueError as e:
        fail(f"{ref!r}: bad date: {e}")
    color = match.groupdict().get("color")
    if color is not None and color not in COLORS:
        fail(f"{ref!r}: unknown colour {color!r} (known: {', '.join(COLORS)})")
    return date, color


def days_ending(date: datetime.date, count: int) -> list[datetime.date]:
    """The ``count`` days up to and including ``date``, oldest first."""
    return [date - datetime.timedelta(days=back) for back in range(count - 1, -1, -1)]


def materialize(ref: str) -> dict[str, Any]:
    return {"dep_type_code": 1, "dep_type_name": "materialize", "partition_ref": {"str": ref}}


def config(outputs: Iterable[str], inputs: Iterable[str], args: Iterable[str]) -> Config:
    return {
        "outputs": [{"str": r} for r in outputs],
        "inputs": [materialize(r) for r in inputs],
        "args": list(args),
    }


def _data_file(ref: str) -> Path:
    workspace = Path(os.environ.get("DATABUILD_WORKSPACE", "."))
    return workspace / "data" / f"{ref}.json"


def read_partition(ref: str) -> dict[str, Any]:
    try:
        return json.loads(_data_file(ref).read_text())
    except FileNotFoundError:
        fail(f"input {ref} is missing; build it first")


def write_partition(ref: str, value: dict[str, Any]) -> None:
    """Write ``ref``'s data atomically, so a partition is either whole or absent."""
    path = _data_file(ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(value, sort_keys=True) + "\n")
    os.replace(temporary, path)
    print(json.dumps({"event": "partition_written", "partition": ref, **value}), flush=True)


def main(
    configure: Callable[[list[str]], list[Config]],
    execute: Callable[[Config, list[str]], None],
) -> None:
    """The job protocol (SPEC §3): ``config REF...`` prints configs, ``exec`` builds them."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("config", "exec"):
        fail(f"usage: {sys.argv[0]} config REF... | exec ARGS...")
    if sys.argv[1] == "config":
        refs = sys.argv[2:]
        if not refs:
            fail("config needs at least one partition ref")
        print(json.dumps({"configs": configure(refs)}))
        return
    try:
        job_config = json.load(sys.stdin)
    except json.JSONDecodeError as e:
        fail(f"exec expects its config as JSON on stdin: {e}")
    outputs = json.loads(os.environ.get("DATABUILD_OUTPUTS", "null")) or [
        o["str"] if isinstance(o, dict) else o for o in job_config.get("outputs", [])
    ]
    print(f"{Path(sys.argv[0]).stem}: building {len(outputs)} partition(s)", flush=True)
    execute(job_config, outputs)
