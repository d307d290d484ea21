"""Backfills through the installed CLI (SPEC §6, §9): ref ranges, --refs-file, retry of what
failed, and a 500-run build on a real terminal (tmux)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.polling import poll_until

from .conftest import DATABUILD, Run

JOB = r"""
# A trivial job: one run per ref. It fails for the refs listed in ./fail and, for those in
# ./hold, waits until the test removes them (at most 60 s).
if [ "$1" = config ]; then
    shift; sep=""; printf '{"configs": ['
    for r in "$@"; do printf '%s{"outputs": ["%s"], "args": ["%s"]}' "$sep" "$r" "$r"; sep=,; done
    printf ']}\n'; exit 0
fi
n=0
while [ -f hold ] && grep -qxF "$2" hold && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done
if [ -f fail ] && grep -qxF "$2" fail; then echo "failing $2 as told"; exit 1; fi
echo "made $2"
"""

JOB_TOML = """
[[jobs]]
label = "daily"
outputs = ['day/[0-9]{4}-[0-9]{2}-[0-9]{2}']
command = ["sh", "job.sh"]

[[jobs]]
label = "bulk"
outputs = ['big/[0-9]+']
command = ["sh", "job.sh"]
"""


@pytest.fixture
def backfill(workspace: Path) -> Path:
    """The CLI tests' workspace with the trivial job for ``day/<date>`` and ``big/<n>``."""
    (workspace / "job.sh").write_text(JOB)
    with (workspace / "databuild.toml").open("a") as f:
        f.write(JOB_TOML)
    return workspace


def json_of(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def task_outputs(databuild: Run, build_id: str) -> dict[str, str]:
    tasks = json_of(databuild("tasks", "list", "--build", build_id, "--format", "json"))
    return {t["outputs"][0]: t["status"] for t in tasks["tasks"]}


def test_a_date_range_builds_every_day_of_it(backfill: Path, databuild: Run) -> None:
    built = databuild("build", "day/{2026-01-01..2026-01-31}")
    assert built.returncode == 0, built.stderr
    assert "analysed: 31 job runs" in built.stdout
    days = [f"day/2026-01-{d:02d}" for d in range(1, 32)]
    assert sorted(re.findall(r"^completed daily  (\S+)", built.stdout, re.M)) == days
    found = json_of(databuild("partitions", "list", "--pattern", "day/2026-01-*",
                              "--format", "json"))  # fmt: skip
    assert sorted(p["partition_ref"] for p in found["partitions"]) == days
    assert {p["status"] for p in found["partitions"]} == {"PARTITION_AVAILABLE"}

    # Built already: said so, not "waiting" for a build that ended long ago.
    again = databuild("build", "day/2026-01-0{1,2}")
    assert again.returncode == 0, again.stderr
    assert "waiting" not in again.stdout
    assert re.search(r"^available day/2026-01-01: already available", again.stdout, re.M)


def test_refs_files_and_stdin_add_refs_as_written(
    backfill: Path, databuild: Run, cli_env: dict[str, str]
) -> None:
    (backfill / "refs.txt").write_text("# February\nday/2026-02-01\n\n  day/2026-02-02\n")
    listed = databuild("analyze", "day/2026-02-0{3..4}", "--refs-file", "refs.txt",
                       "--format", "json")  # fmt: skip
    outputs = json_of(listed)["job_graph"]["outputs"]
    assert sorted(outputs) == [f"day/2026-02-0{d}" for d in range(1, 5)]
    piped = subprocess.run(
        [DATABUILD, "build", "--refs-file", "-"], cwd=backfill, env=cli_env,
        input="day/2026-02-05\n# done\nday/2026-02-06\n", capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "analysed: 2 job runs" in piped.stdout


def test_malformed_and_oversized_patterns_exit_2_naming_them(
    backfill: Path, databuild: Run
) -> None:
    bad = databuild("build", "day/{2026-01-01..2026-01-3")
    assert bad.returncode == 2
    assert "'day/{2026-01-01..2026-01-3'" in bad.stderr and "never closed" in bad.stderr
    huge = databuild("build", "big/{0..99}{0..999}", "big/x")
    assert huge.returncode == 2
    assert "100,001 refs" in huge.stderr and "100,000" in huge.stderr
    assert "Traceback" not in bad.stderr + huge.stderr
    missing = databuild("analyze", "--refs-file", "no-such-file")
    assert missing.returncode == 2 and "no-such-file" in missing.stderr
    # Refused before any service was started for them.
    assert not (backfill / ".databuild" / "server.json").exists()


def test_retry_runs_only_what_failed_and_links_both_builds(
    backfill: Path, databuild: Run
) -> None:
    (backfill / "fail").write_text("day/2026-02-03\nday/2026-02-05\n")
    first = databuild("build", "day/2026-02-{01..07}")
    assert first.returncode == 1, first.stdout + first.stderr
    failed = re.findall(r"^failed\s+daily  (\S+).*\[task (\w+); log: databuild tasks logs "
                        r"(\w+)\]$", first.stdout, re.M)
    assert sorted(ref for ref, _, _ in failed) == ["day/2026-02-03", "day/2026-02-05"]
    assert all(task == again for _, task, again in failed)
    log = databuild("tasks", "logs", failed[0][1])
    assert f"failing {failed[0][0]} as told" in log.stdout
    build_id = json_of(databuild("builds", "list", "--format", "json"))["builds"][0][
        "build_request_id"
    ]

    (backfill / "fail").unlink()
    retried = databuild("builds", "retry", build_id[:8])
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "retrying 2 partition(s)" in retried.stderr
    shown = json_of(databuild("builds", "show", build_id, "--format", "json"))
    (retry_id,) = shown["retried_by"]
    assert shown["retry_of"] is None
    assert task_outputs(databuild, retry_id) == {
        "day/2026-02-03": "JOB_COMPLETED", "day/2026-02-05": "JOB_COMPLETED",
    }
    retry = json_of(databuild("builds", "show", retry_id, "--format", "json"))
    assert retry["retry_of"] == build_id
    assert retry["status"] == "BUILD_REQUEST_COMPLETED"
    table = databuild("builds", "show", retry_id).stdout
    assert re.search(rf"^retry_of:\s+{build_id}$", table, re.M)
    assert re.search(rf"^retried_by:\s+{retry_id}$", databuild("builds", "show", build_id).stdout,
                     re.M)

    nothing = databuild("builds", "retry", build_id)
    assert nothing.returncode == 0, nothing.stderr
    assert nothing.stdout.startswith("nothing to retry")
    as_json = json_of(databuild("builds", "retry", build_id, "--format", "json"))
    assert as_json["build_request_id"] is None and as_json["partitions"] == 0
    assert databuild("builds", "retry", "0123456789abcdef").returncode == 4


def test_a_running_build_is_not_retried(backfill: Path, databuild: Run) -> None:
    (backfill / "hold").write_text("day/2026-03-01\n")
    started = databuild("build", "day/2026-03-01", "--background")
    build_id = started.stdout.strip()
    refused = databuild("builds", "retry", build_id)
    assert refused.returncode == 2
    assert f"build {build_id} is still" in refused.stderr
    (backfill / "hold").unlink()
    assert databuild("tail", build_id).returncode == 0


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[list[str]]:
    """A tmux server of this test's own (its socket in tmp_path), killed at the end."""
    command = shutil.which("tmux")
    if command is None:
        pytest.skip("tmux is not installed")
    base = [command, "-S", str(tmp_path / "tmux.sock")]
    yield base
    subprocess.run([*base, "kill-server"], capture_output=True, check=False)


def test_a_500_run_build_keeps_the_terminal_short(
    backfill: Path, cli_env: dict[str, str], tmux: list[str]
) -> None:
    # One run fails; one waits until the test has seen the status line with it running.
    (backfill / "fail").write_text("big/0007\n")
    (backfill / "hold").write_text("big/0400\n")
    command = f"{shlex.quote(DATABUILD)} build 'big/{{0001..0500}}'; echo EXIT=$?"
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", "200", "-y", "50", "-c", str(backfill), command],
        env=cli_env, check=True, timeout=30,
    )  # fmt: skip
    subprocess.run([*tmux, "set-option", "-g", "remain-on-exit", "on"], check=True)

    def screen() -> list[str]:
        shown = subprocess.run([*tmux, "capture-pane", "-p"], capture_output=True, text=True)
        return [line.rstrip() for line in shown.stdout.splitlines()
                if line.strip() and not line.startswith("Pane is dead")]

    status = re.compile(
        r"^\[(\d+) / 500\] (\d+)% \d+s ETA \S+  \d+ running: (big/0400)\b"
    )
    line = poll_until(
        lambda: next((m for line in screen() if (m := status.match(line))), None),
        "the status line to show big/0400 running, with done/total, share and ETA",
    )
    done, share = int(line.group(1)), int(line.group(2))
    assert 0 < done < 500 and share == done * 100 // 500
    (backfill / "hold").unlink()

    final = poll_until(lambda: (s := screen()) and s[-1].startswith("EXIT=") and s,
                       "the build to end")
    assert final[-1] == "EXIT=1"
    assert len(final) < 10, final  # not 500 lines: the successful runs are counted, not listed
    (failed,) = [line for line in final if line.startswith("failed")]
    assert "big/0007" in failed and re.search(r"databuild tasks logs \w+", failed)
    assert re.match(r"build \w+ failed in \S+ \(499 completed, 1 failed\)", final[-2])
