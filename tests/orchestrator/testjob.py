"""A job for orchestrator tests, driven by ``plan.json`` in the workspace.

``plan.json`` maps a ref to its behaviour: ``inputs`` (materialize refs), ``sleep`` seconds,
``exit`` code, ``fail_attempts`` (fail this many attempts first), ``block`` (sleep until
killed), ``until`` (wait until that file exists), ``ignore_term`` (ignore SIGTERM),
``config_until`` (the config call that includes this ref writes ``config-started`` and waits
until that file exists),
``grandchild`` (start a ``sleep`` in the job's process group). Every exec appends a line to
``runs.jsonl``: ref, job run id, pid, start and end times.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

plan = json.loads(Path("plan.json").read_text())
if sys.argv[1] == "config":
    for ref in sys.argv[2:]:
        if until := plan.get(ref, {}).get("config_until"):
            Path("config-started").touch()
            while not Path(until).exists():
                time.sleep(0.02)
    configs = []
    for ref in sys.argv[2:]:
        spec = plan.get(ref, {})
        configs.append(
            {
                "outputs": [ref],
                "inputs": [
                    {"dep_type_code": 1, "partition_ref": {"str": i}}
                    for i in spec.get("inputs", [])
                ],
                "args": [ref],
            }
        )
    print(json.dumps({"configs": configs}))
    sys.exit(0)

ref = sys.argv[2]
spec = plan.get(ref, {})
run_id = os.environ["DATABUILD_JOB_RUN_ID"]
config = json.load(sys.stdin)
start = time.time()
record = {"ref": ref, "job_run_id": run_id, "pid": os.getpid(), "start": start}
with open("runs.jsonl", "a") as f:
    f.write(json.dumps({**record, "phase": "start"}) + "\n")
print(json.dumps({"ref": ref, "outputs": config["outputs"]}), flush=True)
if spec.get("ignore_term"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if spec.get("grandchild"):
    child = subprocess.Popen(["sleep", "300"])
    with open(f"grandchild-{run_id}.pid", "w") as f:
        f.write(str(child.pid))
if spec.get("block"):
    time.sleep(300)
while spec.get("until") and not Path(spec["until"]).exists():
    time.sleep(0.02)
time.sleep(spec.get("sleep", 0))
attempts = sum(
    1
    for line in Path("runs.jsonl").read_text().splitlines()
    if json.loads(line)["job_run_id"] == run_id and json.loads(line)["phase"] == "start"
)
code = 1 if attempts <= spec.get("fail_attempts", 0) else spec.get("exit", 0)
with open("runs.jsonl", "a") as f:
    f.write(json.dumps({**record, "phase": "end", "end": time.time(), "exit": code}) + "\n")
print(f"{ref} done with {code}", file=sys.stderr)
sys.exit(code)
