"""The job of the worker tests: every exec appends one line to ``$TEAM_DATA/execs.jsonl``
naming its ref, run, pid and ``DATABUILD_WORKER``.

Refs: ``leaf/K`` has no inputs; ``top/K`` needs ``leaf/K`` and ``leaf/K+1``. ``slow/NAME``
writes ``$TEAM_DATA/started-NAME-PID`` (``pid worker``), prints a line every 50 ms and waits for
``release-NAME``. ``TEAM_SLEEP`` (seconds) paces the others.
"""

import json
import os
import sys
import time
from pathlib import Path

DATA = Path(os.environ["TEAM_DATA"])


def inputs(ref: str) -> list[str]:
    kind, name = ref.split("/", 1)
    if kind == "top":
        return [f"leaf/{int(name)}", f"leaf/{int(name) + 1}"]
    return []


if sys.argv[1] == "config":
    configs = [
        {
            "outputs": [ref],
            "inputs": [{"dep_type_code": 1, "partition_ref": {"str": i}} for i in inputs(ref)],
            "args": [ref],
        }
        for ref in sys.argv[2:]
    ]
    print(json.dumps({"configs": configs}))
    sys.exit(0)

ref = sys.argv[2]
worker = os.environ.get("DATABUILD_WORKER")
line = {"ref": ref, "job_run_id": os.environ["DATABUILD_JOB_RUN_ID"], "pid": os.getpid(),
        "worker": worker, "phase": "start"}
with open(DATA / "execs.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")
kind, name = ref.split("/", 1)
if kind == "slow":
    started = DATA / f"started-{name}-{os.getpid()}"
    partial = started.with_suffix(".partial")  # renamed whole: a reader never sees it empty
    partial.write_text(f"{os.getpid()} {worker}")
    partial.rename(started)
    n = 0
    while not (DATA / f"release-{name}").exists():
        print(f"{name} line {n}", flush=True)
        n += 1
        time.sleep(0.05)
else:
    time.sleep(float(os.environ.get("TEAM_SLEEP", "0")))
    print(f"made {ref}", flush=True)
with open(DATA / "execs.jsonl", "a") as f:
    f.write(json.dumps({**line, "phase": "end"}) + "\n")
