"""databuild.executor.runner: job runs as real process groups, logs, limits, records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest_twisted
from tests.polling import poll_until_async
from twisted.internet import reactor
from twisted.internet.defer import gatherResults

from databuild.executor.runlog import find_run_log, read_run_log
from databuild.executor.runner import Executor
from databuild.executor.running import read_records
from databuild.ids import new_id
from databuild.model import JobConfig, JobRun
from databuild.proc.info import alive
from databuild.proc.tether import Tether

PY = sys.executable


def job_run(*args: str, env: dict[str, str] | None = None) -> JobRun:
    return JobRun(new_id(), "test_job", JobConfig(outputs=("p/1",), args=args, env=env or {}))


def script(tmp_path: Path, name: str, body: str) -> tuple[str, ...]:
    """An argv prefix running ``body`` as a Python job (``sys.argv[1]`` is ``exec``)."""
    path = tmp_path / name
    path.write_text(body)
    return (PY, str(path))


@pytest_twisted.ensureDeferred
async def test_exec_gets_args_config_on_stdin_and_databuild_env(tmp_path: Path) -> None:
    prefix = script(
        tmp_path,
        "job.py",
        "import json, os, sys\n"
        "cfg = json.load(sys.stdin)\n"
        "print(json.dumps({'argv': sys.argv[1:], 'outputs': cfg['outputs'],\n"
        "  'env': {k: v for k, v in os.environ.items() if k.startswith(('DATABUILD_', 'DATE'))},\n"
        "  'cwd': os.getcwd()}))\n",
    )
    run = job_run("2026-01-01", env={"DATE": "2026-01-01"})
    executor = Executor(reactor, tmp_path, 2, base_env={"PATH": os.environ["PATH"]})
    result = await executor.run(run, "build-1", prefix, None).result
    assert result.succeeded
    [line] = read_run_log(find_run_log(tmp_path / ".databuild", run.job_run_id))
    data = line["data"]
    assert data["argv"] == ["exec", "2026-01-01"]
    assert data["outputs"] == [{"str": "p/1"}]
    assert data["cwd"] == str(tmp_path)
    assert data["env"].pop("DATABUILD_SPAWN_ID")  # marks what the run leaves behind
    assert data["env"] == {
        "DATE": "2026-01-01",
        "DATABUILD_JOB_RUN_ID": run.job_run_id,
        "DATABUILD_BUILD_REQUEST_ID": "build-1",
        "DATABUILD_JOB_LABEL": "test_job",
        "DATABUILD_OUTPUTS": '["p/1"]',
        "DATABUILD_WORKSPACE": str(tmp_path),
    }


@pytest_twisted.ensureDeferred
async def test_log_keeps_every_line_with_stream_and_structured_stdout(tmp_path: Path) -> None:
    prefix = script(
        tmp_path,
        "job.py",
        "import sys\n"
        "print('plain')\n"
        "print('{\"rows\": 3}')\n"
        "print('[1, 2]')\n"
        "print('oops', file=sys.stderr)\n",
    )
    run = job_run()
    executor = Executor(reactor, tmp_path, 1)
    await executor.run(run, "b", prefix, None).result
    path = find_run_log(tmp_path / ".databuild", run.job_run_id)
    assert path is not None
    assert path.parent.parent == tmp_path / ".databuild" / "logs"
    assert path.parent.name == time.strftime("%Y-%m-%d", time.gmtime())
    lines = read_run_log(path)
    assert {(entry["stream"], entry["text"]) for entry in lines} == {
        ("stdout", "plain"),
        ("stdout", '{"rows": 3}'),
        ("stdout", "[1, 2]"),
        ("stderr", "oops"),
    }
    assert [entry.get("data") for entry in lines if entry["stream"] == "stdout"] == [
        None,
        {"rows": 3},
        None,
    ]
    assert all(isinstance(entry["time"], int) for entry in lines)


@pytest_twisted.ensureDeferred
async def test_lines_reach_the_log_while_the_job_still_runs(tmp_path: Path) -> None:
    go = tmp_path / "go"
    prefix = script(
        tmp_path,
        "job.py",
        f"import os, time\nprint('early', flush=True)\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n",
    )
    run = job_run()
    executor = Executor(reactor, tmp_path, 1)
    handle = executor.run(run, "b", prefix, None)

    def early_logged() -> bool:
        path = find_run_log(tmp_path / ".databuild", run.job_run_id)
        return path is not None and any(e["text"] == "early" for e in read_run_log(path))

    await poll_until_async(early_logged, "the early line to be logged")
    assert not handle.result.called
    go.touch()
    assert (await handle.result).succeeded


@pytest_twisted.ensureDeferred
async def test_parallel_processes_never_exceed_the_shared_limit(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    prefix = script(
        tmp_path,
        "job.py",
        "import os, sys, time\n"
        f"d = {str(marks)!r}\n"
        "me = os.environ['DATABUILD_JOB_RUN_ID']\n"
        "open(os.path.join(d, me + '.start'), 'w').write(repr(time.time()))\n"
        "time.sleep(0.4)\n"
        "open(os.path.join(d, me + '.end'), 'w').write(repr(time.time()))\n",
    )
    executor = Executor(reactor, tmp_path, 2)
    runs = [job_run() for _ in range(6)]
    # Two "builds" share the executor: the limit is the executor's, not a build's.
    handles = [executor.run(r, f"build-{i % 2}", prefix, None) for i, r in enumerate(runs)]
    results = await gatherResults([h.result for h in handles])
    assert all(r.succeeded for r in results)
    spans = [
        (float((marks / f"{r.job_run_id}.start").read_text()),
         float((marks / f"{r.job_run_id}.end").read_text()))
        for r in runs
    ]
    # At each run's start, how many runs were running (itself included): never over the
    # limit. How many ran at once below it depends on the machine's load, so is not asserted.
    overlap = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert overlap <= 2


@pytest_twisted.ensureDeferred
async def test_a_run_over_its_timeout_is_killed_and_reported_timed_out(tmp_path: Path) -> None:
    prefix = script(tmp_path, "job.py", "import time\ntime.sleep(60)\n")
    executor = Executor(reactor, tmp_path, 1, grace_s=1)
    result = await executor.run(job_run(), "b", prefix, 0.3).result
    assert result.timed_out
    assert not result.succeeded
    assert result.describe() == "timed out"


@pytest_twisted.ensureDeferred
async def test_a_failing_run_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    prefix = script(
        tmp_path,
        "job.py",
        f"import sys\np = {str(counter)!r}\n"
        "n = len(open(p).read()) if __import__('os').path.exists(p) else 0\n"
        "open(p, 'a').write('x')\n"
        "sys.exit(0 if n >= 2 else 1)\n",
    )
    executor = Executor(reactor, tmp_path, 1)
    handle = executor.run(job_run(), "b", prefix, None, retries=3)
    result = await handle.result
    assert result.succeeded
    assert handle.attempts == 3
    assert counter.read_text() == "xxx"


@pytest_twisted.ensureDeferred
async def test_retries_stop_after_the_last_attempt(tmp_path: Path) -> None:
    counter = tmp_path / "attempts"
    prefix = script(
        tmp_path, "job.py", f"import sys\nopen({str(counter)!r}, 'a').write('x')\nsys.exit(4)\n"
    )
    executor = Executor(reactor, tmp_path, 1)
    handle = executor.run(job_run(), "b", prefix, None, retries=1)
    result = await handle.result
    assert result.exit_code == 4
    assert handle.attempts == 2
    assert counter.read_text() == "xx"


@pytest_twisted.ensureDeferred
async def test_cancel_terminates_the_whole_group_including_grandchildren(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    prefix = script(
        tmp_path,
        "job.py",
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(300)\n",
    )
    executor = Executor(reactor, tmp_path, 1, grace_s=2)
    run = job_run()
    handle = executor.run(run, "b", prefix, None)
    await poll_until_async(lambda: pids.exists() and " " in pids.read_text(), "the pids file")
    leader, grandchild = map(int, pids.read_text().split())
    [found] = read_records(tmp_path / ".databuild" / "running")
    [record] = found.records
    assert record.pid == leader and record.job_run_id == run.job_run_id
    assert executor.running_records() == [record]
    handle.cancel()
    result = await handle.result
    assert result.cancelled
    await poll_until_async(lambda: not alive(grandchild), "the grandchild to be gone")
    assert not alive(leader)
    assert [f.records for f in read_records(tmp_path / ".databuild" / "running")] == [()]
    executor.close()
    assert read_records(tmp_path / ".databuild" / "running") == []


@pytest_twisted.ensureDeferred
async def test_a_run_cancelled_while_queued_never_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    go = tmp_path / "go"
    blocker = script(
        tmp_path, "block.py",
        f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\n",
    )
    marking = script(tmp_path, "mark.py", f"open({str(marker)!r}, 'w').write('ran')\n")
    executor = Executor(reactor, tmp_path, 1)
    first = executor.run(job_run(), "b", blocker, None)
    second = executor.run(job_run(), "b", marking, None)
    await first.started
    second.cancel()
    result = await second.result
    assert result.cancelled
    assert not second.started.called
    go.touch()
    assert (await first.result).succeeded
    assert executor.running == 0
    assert not marker.exists()


@pytest_twisted.ensureDeferred
async def test_queued_runs_get_slots_in_order_and_a_cancelled_one_passes_its_turn(
    tmp_path: Path,
) -> None:
    order = tmp_path / "order"
    go = tmp_path / "go"
    blocker = script(
        tmp_path, "block.py",
        f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\n",
    )
    marking = script(
        tmp_path, "mark.py",
        f"import os\nopen({str(order)!r}, 'a').write(os.environ['DATABUILD_JOB_RUN_ID'] + '\\n')\n",
    )
    executor = Executor(reactor, tmp_path, 1)
    first = executor.run(job_run(), "b", blocker, None)
    queued = [job_run() for _ in range(4)]
    handles = [executor.run(run, "b", marking, None) for run in queued]
    await first.started
    handles[1].cancel()
    go.touch()
    results = await gatherResults([h.result for h in [first, *handles]])
    assert [r.succeeded for r in results] == [True, True, False, True, True]
    assert results[2].cancelled and not handles[1].started.called
    ran = [queued[i].job_run_id for i in (0, 2, 3)]
    assert order.read_text().split() == ran
    assert executor.running == 0


@pytest_twisted.ensureDeferred
async def test_a_command_that_cannot_start_fails_the_run(tmp_path: Path) -> None:
    executor = Executor(reactor, tmp_path, 1)
    run = job_run()
    result = await executor.run(run, "b", (str(tmp_path / "missing"),), None).result
    assert not result.succeeded
    assert result.exit_code == 127
    assert "missing" in result.stderr_tail
    [line] = read_run_log(find_run_log(tmp_path / ".databuild", run.job_run_id))
    assert line["stream"] == "stderr" and "No such file" in line["text"]


def test_the_parallelism_limit_must_be_positive(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="at least 1"):
        Executor(reactor, tmp_path, 0)


def test_structured_data_only_for_json_objects_on_stdout() -> None:
    from databuild.executor.runlog import log_record

    assert log_record("stdout", '{"a": 1}', 5) == {
        "time": 5, "stream": "stdout", "text": '{"a": 1}', "data": {"a": 1}
    }
    assert "data" not in log_record("stderr", '{"a": 1}', 5)
    assert "data" not in log_record("stdout", "{not json", 5)
    assert json.loads(json.dumps(log_record("stdout", "x", 1)))["text"] == "x"


@pytest_twisted.ensureDeferred
async def test_many_instantly_exiting_runs_never_signal_the_service_itself(tmp_path: Path) -> None:
    # A child can be reaped inside spawn, before it returns; the group kill that follows
    # a leader's exit must then target the child's group, never pgid 0 (our own group).
    # The tether holds each one's group by the pid learnt then.
    tether = Tether(reactor)
    tether.startService()
    executor = Executor(reactor, tmp_path, 4, base_env={"PATH": os.environ["PATH"]},
                        tether=tether)
    try:
        handles = [executor.run(job_run(), "b", ("true",), None) for _ in range(100)]
        results = await gatherResults([h.result for h in handles])
    finally:
        await tether.stopService()
    assert all(r.succeeded for r in results)


def test_group_kill_refuses_our_own_group_and_init() -> None:
    from databuild.proc.process import kill_group

    assert kill_group(0, 0) is False
    assert kill_group(1, 0) is False


@pytest_twisted.ensureDeferred
async def test_a_run_goes_on_when_its_running_record_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / ".databuild").mkdir()
    (tmp_path / ".databuild" / "running").write_text("a file where the directory should be")
    executor = Executor(reactor, tmp_path, 1)
    result = await executor.run(job_run(), "b", ("true",), None).result
    assert result.succeeded


def _shell_job(tmp_path: Path, body: str) -> tuple[str, ...]:
    """An argv prefix running ``body`` with ``sh`` (its ``$1`` is ``exec``)."""
    path = tmp_path / "job.sh"
    path.write_text(body)
    return ("sh", str(path))


@pytest_twisted.ensureDeferred
async def test_a_setsid_process_holding_the_pipes_does_not_hold_the_run(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.pid"
    prefix = _shell_job(tmp_path, f"setsid sleep 300 & echo $! > {daemon}\necho started\n")
    executor = Executor(reactor, tmp_path, 1, grace_s=1)
    run = job_run()
    result = await executor.run(run, "b", prefix, None).result
    # The run is over though its daemon could sleep for minutes more; the daemon goes too.
    assert result.succeeded
    assert [line["text"] for line in read_run_log(
        find_run_log(tmp_path / ".databuild", run.job_run_id))] == ["started"]
    await poll_until_async(lambda: not alive(int(daemon.read_text())), "the daemon to be gone")
    assert executor.running == 0


@pytest_twisted.ensureDeferred
async def test_a_daemon_whose_environment_cannot_be_read_yet_is_looked_at_again(
    tmp_path: Path,
) -> None:
    # While a process runs execve, /proc shows it no environment: the sweep at the leader's
    # exit cannot tell whose it is. This daemon shows none until ``go`` exists, then execs
    # into a process that carries the run's marker: a later look must find it.
    daemon, escaped, go = tmp_path / "daemon.pid", tmp_path / "escaped", tmp_path / "go"
    prefix = _shell_job(
        tmp_path,
        f'setsid env -i sh -c "touch {escaped}; while [ ! -e {go} ]; do sleep 0.01; done; '
        f'exec env DATABUILD_SPAWN_ID=$DATABUILD_SPAWN_ID sleep 300" &\n'
        f"echo $! > {daemon}\n"
        # The leader ends once the daemon is in a session of its own.
        f"while [ ! -e {escaped} ]; do sleep 0.01; done\n",
    )
    executor = Executor(reactor, tmp_path, 1, grace_s=60)
    result = await executor.run(job_run(), "b", prefix, None).result
    assert result.succeeded
    pid = int(daemon.read_text())
    try:
        assert alive(pid)  # not told yet: left alone
        go.touch()
        await poll_until_async(lambda: not alive(pid), "the daemon to be gone")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest_twisted.ensureDeferred
async def test_cancel_and_timeout_end_runs_whose_setsid_process_holds_the_pipes(
    tmp_path: Path,
) -> None:
    daemons = tmp_path / "daemons"
    daemons.mkdir()
    prefix = _shell_job(
        tmp_path, f"setsid sleep 300 & echo $! > {daemons}/$$\ntrap '' TERM\n"
        "while true; do sleep 0.1; done\n",
    )
    executor = Executor(reactor, tmp_path, 2, grace_s=0.5)
    cancelled = executor.run(job_run(), "b", prefix, None)
    timed_out = executor.run(job_run(), "b", prefix, 0.5)
    await poll_until_async(lambda: len(list(daemons.iterdir())) == 2, "both daemons")
    cancelled.cancel()
    assert (await cancelled.result).cancelled
    assert (await timed_out.result).timed_out
    for pidfile in daemons.iterdir():
        await poll_until_async(
            lambda pidfile=pidfile: not alive(int(pidfile.read_text())), "a daemon to be gone"
        )
        assert not alive(int(pidfile.name))
