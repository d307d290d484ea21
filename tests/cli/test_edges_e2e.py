"""What reaches a terminal, what reaches a job, and the CLI at the edges of its world: a closed
stdout, a URL that is no DataBuild service, a copied workspace, a quick double Ctrl-C (issue 25,
items 6, 8 and 9). All through the installed ``databuild``, with real services and jobs."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.polling import poll_until

from databuild.proc.info import alive

from .conftest import DATABUILD, Output, Run, release, server_info, slow_pid, stop_processes

Spawn = Callable[..., subprocess.Popen[str]]

ESCAPES = (
    "\rover "  # carriage return: overwrite what the line said
    "\x1b]52;c;cHduZWQ=\x07"  # OSC 52: write the clipboard
    " \x1b[2J"  # CSI 2J: clear the screen
    " \x1b]0;pwned\x07"  # OSC 0: the window's title
    " \x1b]8;;http://evil.example/\x1b\\click here\x1b]8;;\x1b\\"  # OSC 8: a disguised link
    " \x9b2J \x9d0;c1 title\x9c"  # C1: CSI and OSC in one character each
)
CONTROLS = ("\x1b", "\x07", "\x9b", "\x9d", "\x9c", "\r")

EDGE_JOB = f'''\
"""Records the environment it runs in; a run for an "escapes" ref prints terminal escapes on
both streams and fails."""
import json, os, sys

os.makedirs("env_seen", exist_ok=True)
name = "config" if sys.argv[1] == "config" else sys.argv[2].replace("/", "_")
with open(f"env_seen/{{name}}.json", "w") as f:
    json.dump(dict(os.environ), f)
if sys.argv[1] == "config":
    print(json.dumps({{"configs": [{{"outputs": [r], "args": [r]}} for r in sys.argv[2:]]}}))
    sys.exit(0)
if "escapes" in sys.argv[2]:
    print({ESCAPES!r}, flush=True)
    print({ESCAPES!r}, file=sys.stderr)
    sys.exit(1)
'''

EDGE_TOML = """
[[jobs]]
label = "edge"
outputs = ['edge/[a-z]+']
command = ["python3", "edge_job.py"]
"""


@pytest.fixture
def edges(workspace: Path) -> Path:
    (workspace / "edge_job.py").write_text(EDGE_JOB)
    with (workspace / "databuild.toml").open("a") as f:
        f.write(EDGE_TOML)
    return workspace


def assert_no_controls(text: str) -> None:
    found = sorted({repr(c) for c in CONTROLS if c in text})
    assert not found, f"raw control characters {found} in {text!r}"


# -- item 6: job output reaches the terminal escaped ---------------------------------------------


def test_a_jobs_escape_sequences_reach_the_terminal_escaped(
    edges: Path, databuild: Run, cli_env: dict[str, str]
) -> None:
    built = databuild("build", "edge/escapes")
    assert built.returncode == 1, built.stderr
    build_id = built.stdout.split()[1].rstrip(":")
    task_id = json.loads(
        databuild("--format", "json", "tasks", "list", "--build", build_id).stdout
    )["tasks"][0]["job_run_id"]
    shown = {
        "build": built.stdout + built.stderr,
        "tail": databuild("tail", build_id).stdout,
        "builds show": databuild("builds", "show", build_id).stdout,
        "tasks show": databuild("tasks", "show", task_id).stdout,
        "tasks logs": databuild("tasks", "logs", task_id).stdout,
    }
    for command, text in shown.items():
        assert_no_controls(text)
        if command != "builds show":  # its table of runs has no message column
            assert "\\x1b" in text, f"{command} does not show the escape: {text!r}"
    logs = shown["tasks logs"]
    for visible in ("\\x1b]52;c;cHduZWQ=\\x07", "\\x1b[2J", "\\x1b]0;pwned\\x07",
                    "\\x1b]8;;http://evil.example/\\x1b\\click here", "\\x9b2J",
                    "\\x9d0;c1 title\\x9c", "\\x0dover"):
        assert visible in logs
    # As it was printed, on request; and the JSON documents as the API gave them.
    raw = subprocess.run([DATABUILD, "tasks", "logs", "--raw", task_id], cwd=edges,
                         env=cli_env, capture_output=True, check=True).stdout
    assert raw.count((ESCAPES + "\n").encode()) == 2
    records = databuild("--format", "json", "tasks", "logs", task_id).stdout.splitlines()
    assert [json.loads(r)["text"] for r in records] == [ESCAPES, ESCAPES]
    message = json.loads(databuild("--format", "json", "tasks", "show", task_id).stdout)["message"]
    assert ESCAPES.partition("\r")[2] in message


# -- item 8: a job gets no DataBuild secret ------------------------------------------------------


def test_a_job_sees_no_databuild_secret_of_whoever_started_the_service(
    edges: Path, databuild: Run
) -> None:
    secrets = {
        "DATABUILD_SERVICE_TOKEN": "the-team-token-0123456789abcdef",
        "DATABUILD_BUILD_EVENT_LOG": str(edges / ".databuild" / "bel.sqlite"),
    }
    built = databuild("build", "edge/env", env=secrets)
    assert built.returncode == 0, built.stderr
    for seen in ("config", "edge_env"):
        env = json.loads((edges / "env_seen" / f"{seen}.json").read_text())
        assert not set(secrets) & set(env), seen
        assert not any(secrets["DATABUILD_SERVICE_TOKEN"] in v for v in env.values())
    assert "DATABUILD_JOB_RUN_ID" in json.loads((edges / "env_seen" / "edge_env.json").read_text())


# -- item 9: the CLI at the edges ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_a_build_whose_reader_goes_away_ends_quietly(
    workspace: Path, cli_env: dict[str, str], fmt: str
) -> None:
    """``databuild build ... | head -1``: once stdout is closed, the next line ends the CLI
    (141, as a death by SIGPIPE), in both formats; no reconnecting, no traceback."""
    proc = subprocess.Popen(
        [DATABUILD, "--format", fmt, "build", f"slow/{fmt}"], cwd=workspace, env=cli_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline()
        proc.stdout.close()  # what ``head -1`` does after its line
        slow_pid(workspace, f"slow/{fmt}")
        release(workspace, f"slow/{fmt}")
        assert proc.wait(timeout=60) == 141
        stderr = proc.stderr.read()
        assert "Traceback" not in stderr and "Broken pipe" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class NotDataBuild(BaseHTTPRequestHandler):
    """Any other web server: a 404 for every path but ``/``, which is a page."""

    def do_GET(self) -> None:
        found = self.path == "/api/v1/health" and self.server.pages  # type: ignore[attr-defined]
        body = b"<html>hello</html>" if found else b"no such page"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[False, True], ids=["404", "a page"])
def other_server(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotDataBuild)
    server.pages = request.param  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_service_url_that_is_no_databuild_service_says_so_and_exits_3(
    databuild: Run, other_server: str
) -> None:
    env = {"DATABUILD_SERVICE_URL": other_server, "DATABUILD_SERVICE_TOKEN": "x" * 32}
    for command in (("builds", "list"), ("build", "slow/a"), ("service", "status")):
        done = databuild(*command, env=env)
        assert done.returncode == 3, (command, done.stderr)
        assert f"{other_server}/ is not a DataBuild service" in done.stderr, done.stderr


def test_a_copied_workspace_starts_its_own_service_at_once(
    workspace: Path, databuild: Run
) -> None:
    """The copy holds the original's ``server.json`` and ``twistd.pid``, which name the
    original's live service: stale for the copy, which removes them and starts its own (it
    used to wait for that service to answer for it, and give up after 30 s)."""
    assert databuild("service", "start").returncode == 0
    original = server_info(workspace)
    assert original is not None
    copy = workspace.parent / "copy"
    shutil.copytree(workspace, copy)  # file times kept, as ``cp -a`` does
    try:
        listed = databuild("builds", "list", cwd=copy, timeout=60)
        assert listed.returncode == 0, listed.stderr
        assert "removed stale .databuild/server.json" in listed.stderr
        mine = server_info(copy)
        assert mine is not None and mine["pid"] != original["pid"]
        assert mine["workspace"] == str(copy)
        assert alive(original["pid"])  # the original's service is left alone
        assert databuild("builds", "list").returncode == 0
    finally:
        info = server_info(copy)
        if info is not None and info.get("pid") != original["pid"]:
            stop_processes([info["pid"]])


def test_ctrl_cs_pressed_until_the_cli_is_gone_end_a_build_cancelled_with_exit_8(
    workspace: Path, spawn_databuild: Spawn, databuild: Run
) -> None:
    """The slow job dies at once on SIGTERM, so the build ends cancelled at once. Ctrl-C
    pressed again and again until the CLI is gone lands, some time, after the build's end was
    streamed, while the CLI waits for the cancel request's answer or leaves: it changes
    nothing there (exit 8, not 130, nor a death by SIGINT)."""
    proc = spawn_databuild("build", "slow/twice")
    out, err = Output(proc.stdout.fileno()), Output(proc.stderr.fileno())
    build_id = out.until(r"build (\w+): ").group(1)
    slow_pid(workspace, "slow/twice")
    proc.send_signal(signal.SIGINT)
    err.until("cancelling build")

    def pressed_again() -> bool:
        proc.send_signal(signal.SIGINT)  # nothing once it has exited
        return proc.poll() is not None

    poll_until(pressed_again, "the CLI to end")
    out.rest()
    stderr = err.rest()
    assert proc.wait(timeout=60) == 8, stderr
    poll_until(
        lambda: json.loads(databuild("--format", "json", "builds", "show", build_id).stdout)[
            "status"
        ] == "BUILD_REQUEST_CANCELLED",
        "the build to end cancelled",
    )
