"""The job of the team-host tests: every exec appends one line to ``$TEAM_DATA/execs.jsonl``.

Refs: ``leaf/K`` has no inputs; ``mid/K`` needs ``leaf/K`` and ``leaf/K+1``; ``top/K`` needs
``mid/K`` and ``mid/K+1``; so overlapping requests of tops share mids and leaves.
``slow/NAME`` writes ``$TEAM_DATA/started-NAME`` (its pid) and waits for ``release-NAME``;
``after/NAME`` needs ``slow/NAME``. ``TEAM_SLEEP`` (seconds) paces every other exec. With
``TEAM_MARK_TERM`` set, a ``slow/NAME`` terminated by SIGTERM writes its end line too.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

DATA = Path(os.environ["TEAM_DATA"])


def inputs(ref: str) -> list[str]:
    kind, name = ref.split("/", 1)
    if kind == "after":
        return [f"slow/{name}"]
    if kind in ("mid", "top"):
        below = "leaf" if kind == "mid" else "mid"
        return [f"{below}/{int(name)}", f"{below}/{int(name) + 1}"]
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
line = {"ref": ref, "job_run_id": os.environ["DATABUILD_JOB_RUN_ID"], "pid": os.getpid(),
        "workspace": os.environ["DATABUILD_WORKSPACE"], "phase": "start"}
with open(DATA / "execs.jsonl", "a") as f:
    f.write(json.dumps(line) + "\n")
kind, name = ref.split("/", 1)
if kind == "slow":

    def terminated(signum: int, frame: object) -> None:
        with open(DATA / "execs.jsonl", "a") as f:
            f.write(json.dumps({**line, "phase": "end", "terminated": True}) + "\n")
        sys.exit(128 + signum)

    if os.environ.get("TEAM_MARK_TERM"):
        signal.signal(signal.SIGTERM, terminated)
    (DATA / f"started-{name}").write_text(str(os.getpid()))
    while not (DATA / f"release-{name}").exists():
        time.sleep(0.02)
else:
    time.sleep(float(os.environ.get("TEAM_SLEEP", "0")))
with open(DATA / "execs.jsonl", "a") as f:
    f.write(json.dumps({**line, "phase": "end"}) + "\n")
