"""A job that daemonizes a grandchild (setsid and a double fork), run by the real service:
the daemon is ended with its run, though it left the run's session and process group."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from tests.polling import poll_until
from tests.service.conftest import Service
from tests.service.test_edge import request

from databuild.proc.info import alive

DAEMONIZING_JOB = '''\
"""Job ``daemon``: the run for ``daemon/NAME`` leaves a daemon behind, its pid in pids/NAME."""
import json, os, sys, time
if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r]} for r in sys.argv[2:]]}))
    sys.exit(0)
pidfile = os.path.join(os.environ["DATABUILD_WORKSPACE"], "pids", sys.argv[2].split("/")[1])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        with open(pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(pidfile + ".tmp", pidfile)
        time.sleep(300)
    os._exit(0)
os.wait()
while not os.path.exists(pidfile):
    time.sleep(0.01)
print("left a daemon behind", flush=True)
'''


def test_a_daemonized_grandchild_is_ended_with_its_run(
    color_votes: Path, service_factory: Callable[..., Service]
) -> None:
    (color_votes / "jobs" / "daemon.py").write_text(DAEMONIZING_JOB)
    (color_votes / "pids").mkdir()
    with (color_votes / "databuild.toml").open("a") as f:
        f.write('\n[[jobs]]\nlabel = "daemon"\noutputs = [\'daemon/[a-z]+\']\n'
                'command = ["python3", "jobs/daemon.py"]\n')
    service = service_factory(color_votes, "--idle-timeout", "0")
    status, _, body = request(service, "POST", "/api/v1/builds",
                              json.dumps({"partitions": ["daemon/one"]}).encode())
    assert status == 202
    build_id = json.loads(body)["build_request_id"]

    def finished() -> str | None:
        found = json.loads(request(service, "GET", f"/api/v1/builds/{build_id}")[2])
        return found["status"] if found["status"].endswith(("COMPLETED", "FAILED")) else None

    assert poll_until(finished, "the build to finish") == "BUILD_REQUEST_COMPLETED"
    daemon = int((color_votes / "pids" / "one").read_text())
    poll_until(lambda: not alive(daemon), "the daemon to be ended with its run")
    assert request(service, "GET", "/api/v1/health")[0] == 200
