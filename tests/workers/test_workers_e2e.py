"""Job runs on Celery workers, end to end (SPEC §10)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.conftest import installed
from tests.multi.conftest import Team
from tests.multi.proxy import Proxy
from tests.multi.test_takeover import TAKE_OVER_DEADLINE_S
from tests.polling import poll_until
from tests.workers.conftest import BROKER, WORKER_LEASE_S, Farm
from tests.workers.netns import separate_host

from databuild.executor.celeryapp import TASK_NAME, attempt_message, make_app
from databuild.proc.info import alive


def test_a_build_runs_every_job_on_the_workers(farm: Farm) -> None:
    farm.worker("wa")
    farm.worker("wb")
    service = farm.service("s")

    build = service.finished(service.submit("top/1", "top/2"))

    assert build["status"] == "BUILD_REQUEST_COMPLETED", build
    starts = [e for e in farm.execs() if e["phase"] == "start"]
    assert sorted(e["ref"] for e in starts) == ["leaf/1", "leaf/2", "leaf/3", "top/1", "top/2"]
    assert {e["worker"] for e in starts} <= {"wa", "wb"}
    assert None not in {e["worker"] for e in starts}
    for task in build["tasks"]:
        status, body = service.call("GET", f"/api/v1/tasks/{task['job_run_id']}")
        assert status == 200, body
        ran_on = {e["worker"] for e in starts if e["job_run_id"] == task["job_run_id"]}
        assert {body["worker"]} == ran_on


def _task_of(service: Team, build_id: str, ref: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        tasks = service.build(build_id)["tasks"]
        return next((t for t in tasks if ref in t["outputs"]), None)

    return poll_until(found, f"the run of {ref}", 60.0)


def _at_least(items: list[Any], n: int) -> list[Any] | None:
    return items if len(items) >= n else None


def test_the_log_of_a_remote_run_follows_live_through_the_api(farm: Farm) -> None:
    farm.worker("wa")
    service = farm.service("s")
    build_id = service.submit("slow/x")
    task = _task_of(service, build_id, "slow/x")
    path = f"/api/v1/tasks/{task['job_run_id']}/logs"

    def lines() -> list[str] | None:
        status, body = service.call("GET", path)
        assert status == 200, body
        texts = [line["text"] for line in body["lines"]]
        return texts if "x line 5" in texts else None

    texts = poll_until(lines, "the remote run's lines to reach the API", 60.0)
    assert service.build(build_id)["status"] == "BUILD_REQUEST_EXECUTING"
    assert texts[:3] == ["x line 0", "x line 1", "x line 2"]
    farm.release("x")
    assert service.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED"


def test_cancelling_a_running_remote_run_ends_its_process_group(farm: Farm) -> None:
    farm.worker("wa")
    service = farm.service("s")
    build_id = service.submit("slow/x")
    [(pid, worker)] = farm.started_slow("x")
    assert worker == "wa"

    status, body = service.call("POST", f"/api/v1/builds/{build_id}/cancel")

    assert status in (200, 202), body
    assert service.finished(build_id)["status"] == "BUILD_REQUEST_CANCELLED"
    poll_until(lambda: not alive(pid), "the cancelled run's process to end", 10.0)
    task = _task_of(service, build_id, "slow/x")
    assert task["status"] == "JOB_CANCELLED"
    assert farm.attempts(task["job_run_id"]) == [(1, "ended", "wa")]


def test_cancelling_a_queued_remote_run_never_starts_it(farm: Farm) -> None:
    service = farm.service("s")  # no worker consumes the queue yet
    build_id = service.submit("leaf/1")
    task = _task_of(service, build_id, "leaf/1")
    poll_until(lambda: farm.attempts(task["job_run_id"]), "the attempt to be queued", 30.0)

    status, body = service.call("POST", f"/api/v1/builds/{build_id}/cancel")
    assert status in (200, 202), body
    assert service.finished(build_id)["status"] == "BUILD_REQUEST_CANCELLED"
    farm.worker("wa")  # the message is still in the queue: the worker takes it, and drops it

    poll_until(lambda: "not run again" in farm.workers[0].log_text(),
               "the worker to drop the cancelled attempt", 30.0)
    assert farm.execs() == []
    assert farm.attempts(task["job_run_id"]) == [(1, "cancelled", None)]


def test_cancelling_as_the_run_starts_converges(farm: Farm) -> None:
    farm.worker("wa")
    service = farm.service("s")
    build_id = service.submit("slow/x")
    poll_until(lambda: service.build(build_id)["tasks"], "the run to be scheduled", 30.0)

    status, body = service.call("POST", f"/api/v1/builds/{build_id}/cancel")

    assert status in (200, 202), body
    assert service.finished(build_id)["status"] == "BUILD_REQUEST_CANCELLED"
    task = _task_of(service, build_id, "slow/x")
    poll_until(
        lambda: all(state in ("ended", "cancelled")
                    for _, state, _ in farm.attempts(task["job_run_id"])),
        "every attempt to end", 30.0,
    )
    for path in farm.data.glob("started-x-*[0-9]"):
        pid = int(path.read_text().split()[0])
        poll_until(lambda pid=pid: not alive(pid), "the run's process to end", 10.0)


def test_a_killed_worker_s_attempt_fails_within_the_lease_and_the_retry_runs_elsewhere(
    tmp_path: Path, pg_schema: str
) -> None:
    farm = Farm(tmp_path, pg_schema, tmp_path / "data", retries=1)
    farm.data.mkdir()
    try:
        farm.worker("wa", concurrency=1)
        service = farm.service("s")
        build_id = service.submit("slow/x")
        [(first_pid, first_worker)] = farm.started_slow("x")
        farm.worker("wb" if first_worker == "wa" else "wa", concurrency=1)
        killed = next(w for w in farm.workers if w.name == first_worker)
        killed.kill()

        task = _task_of(service, build_id, "slow/x")
        attempts = poll_until(
            lambda: _at_least(farm.attempts(task["job_run_id"]), 2),
            "the lost attempt to be retried", 10 * WORKER_LEASE_S,
        )
        assert attempts[0] == (1, "lost", first_worker)
        assert attempts[1][1:] in (("running", attempts[1][2]), ("queued", None))
        poll_until(lambda: not alive(first_pid), "the killed worker's job to die", 30.0)
        starts = poll_until(
            lambda: _at_least(farm.started_slow("x"), 2), "the retry to start", 60.0
        )
        assert {worker for _, worker in starts} == {"wa", "wb"}
        farm.release("x")
        assert service.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED"
        assert [a[1] for a in farm.attempts(task["job_run_id"])] == ["lost", "ended"]
        assert f"on worker {first_worker} is lost" in service.log_text()
    finally:
        for worker in farm.workers:
            worker.stop()
        for team in farm.started:
            team.stop()


def _message(farm: Farm, service: Team, task: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of the run's first attempt, as the service published them."""
    [(body,)] = farm.sql(
        "SELECT body FROM events WHERE build_request_id = %s AND event_type = 'job_graph'",
        task["build_request_id"],
    )
    runs = json.loads(body)["job_graph"]["job_runs"]
    run = next(r for r in runs if r["job_run_id"] == task["job_run_id"])
    [(epoch,)] = farm.sql(
        "SELECT epoch FROM remote_attempts WHERE job_run_id = %s", task["job_run_id"]
    )
    return attempt_message(
        run, task["build_request_id"], ["python3", "workerjob.py"], None, 1, epoch
    )


def test_a_message_delivered_twice_runs_once(farm: Farm) -> None:
    farm.worker("wa", concurrency=1)
    farm.worker("wb", concurrency=1)
    service = farm.service("s")
    build_id = service.submit("slow/x")
    farm.started_slow("x")
    task = _task_of(service, build_id, "slow/x")

    app = make_app(BROKER)
    app.send_task(TASK_NAME, kwargs=_message(farm, service, task),
                  task_id=task["job_run_id"], queue=farm.queue)
    poll_until(
        lambda: any("not run again" in w.log_text() for w in farm.workers),
        "a worker to drop the second delivery", 30.0,
    )
    farm.release("x")

    assert service.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED"
    assert [e["phase"] for e in farm.execs()] == ["start", "end"]
    assert [a[:2] for a in farm.attempts(task["job_run_id"])] == [(1, "ended")]


def test_a_service_taking_over_adopts_the_running_remote_runs(farm: Farm) -> None:
    farm.worker("wa")
    a = farm.service("a")
    b = farm.service("b")
    build_id = a.submit("slow/x")
    [(pid, _)] = farm.started_slow("x")
    task = _task_of(a, build_id, "slow/x")

    a.kill()
    poll_until(lambda: "1 remote runs adopted" in b.log_text(), "b to adopt the run",
               TAKE_OVER_DEADLINE_S)
    assert alive(pid)
    farm.release("x")

    def ended() -> dict[str, Any] | None:
        status, body = b.call("GET", f"/api/v1/tasks/{task['job_run_id']}")
        assert status == 200, body
        return body if body["status"] in ("JOB_COMPLETED", "JOB_FAILED") else None

    assert poll_until(ended, "the adopted run to end", 60.0)["status"] == "JOB_COMPLETED"
    assert [e["phase"] for e in farm.execs()] == ["start", "end"]
    status, partition = b.call("GET", "/api/v1/partitions/slow%2Fx")
    assert status == 200, partition
    assert partition["status"] == "PARTITION_AVAILABLE"
    assert [a[:2] for a in farm.attempts(task["job_run_id"])] == [(1, "ended")]


def test_workers_on_separate_hosts_run_every_job_of_a_build(farm: Farm) -> None:
    with separate_host() as h1, separate_host() as h2:
        relays = []
        for host, name in ((h1, "wa"), (h2, "wb")):
            log = Proxy(("127.0.0.1", 5432), host=host.gateway)
            broker = Proxy(("127.0.0.1", 5672), host=host.gateway)
            relays += [log, broker]
            farm.worker(
                name, prefix=host.prefix, event_log=log.uri(farm.event_log),
                broker=broker.uri(BROKER),
            )
        try:
            service = farm.service("s")
            build = service.finished(service.submit("top/1", "top/2", "top/3"))

            assert build["status"] == "BUILD_REQUEST_COMPLETED", build
            starts = [e for e in farm.execs() if e["phase"] == "start"]
            assert len(starts) == 7
            assert {e["worker"] for e in starts} <= {"wa", "wb"}
            status, body = service.call("GET", "/api/v1/workers")
            assert status == 200, body
            workers = {w["name"]: w for w in body["workers"]}
            assert set(workers) == {"wa", "wb"}
            assert all(w["live"] for w in workers.values())
            assert sum(w["runs_total"] for w in workers.values()) == 7
        finally:
            for worker in farm.workers:
                worker.stop()
            for relay in relays:
                relay.cut()


def test_twistd_refuses_celery_on_a_sqlite_log(farm: Farm) -> None:
    root = farm.workspace("s")
    done = subprocess.run(
        [installed("twistd"), "-n", "databuild", "--workspace", str(root), "--port", "0",
         "--event-log", str(root / "bel.sqlite")],
        capture_output=True, text=True, timeout=60, cwd=root,
    )
    assert done.returncode != 0
    first = (done.stderr or done.stdout).splitlines()[0]
    assert first.startswith("twistd databuild: the celery executor needs a PostgreSQL event log")


def test_workers_list_shows_each_worker(farm: Farm) -> None:
    farm.worker("wa", concurrency=3)
    root = farm.workspace("s")
    service = farm.service("s")
    env = {**os.environ, "DATABUILD_SERVICE_URL": service.info["url"],
           "DATABUILD_SERVICE_TOKEN": service.info["token"]}
    done = subprocess.run(
        [installed("databuild"), "--workspace", str(root), "--format", "json", "workers",
         "list"], capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 0, done.stderr
    [worker] = json.loads(done.stdout)["workers"]
    assert (worker["name"], worker["concurrency"], worker["queues"]) == ("wa", 3, [farm.queue])
    assert worker["live"] and worker["running"] == 0


def test_metrics_count_queued_runs_and_runs_per_worker(farm: Farm) -> None:
    service = farm.service("s")  # no worker yet: the run waits in its queue
    build_id = service.submit("slow/x")

    def metrics() -> str:
        parts = urlsplit(service.info["url"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("GET", "/metrics",
                     headers={"Authorization": f"Bearer {service.info['token']}"})
        return conn.getresponse().read().decode()

    queued = f'databuild_queue_depth{{queue="{farm.queue}"}} 1.0'
    poll_until(lambda: queued in metrics(), "the queued run in the metrics", 30.0)
    farm.worker("wa")
    farm.started_slow("x")
    running = 'databuild_worker_runs{worker="wa"} 1.0'
    poll_until(lambda: running in metrics(), "the running run in the metrics", 30.0)
    assert f'databuild_queue_depth{{queue="{farm.queue}"}} 0.0' in metrics()
    farm.release("x")
    assert service.finished(build_id)["status"] == "BUILD_REQUEST_COMPLETED"


def test_a_worker_cut_off_from_the_log_stops_its_runs(farm: Farm) -> None:
    proxy = Proxy(("127.0.0.1", 5432))
    farm.worker("wa", event_log=proxy.uri(farm.event_log))
    service = farm.service("s")
    build_id = service.submit("slow/x")
    [(pid, _)] = farm.started_slow("x")

    proxy.cut()

    poll_until(lambda: not alive(pid), "the cut-off worker to stop its run",
               10 * WORKER_LEASE_S)
    assert "cannot reach the event log" in farm.workers[0].log_text()
    build = service.finished(build_id)
    assert build["status"] == "BUILD_REQUEST_FAILED"
    assert "stopped heartbeating" in _task_of(service, build_id, "slow/x")["message"]


def test_a_run_the_broker_cannot_take_fails_and_its_build_ends(farm: Farm) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    service = farm.service("s", "--broker", f"amqp://guest:guest@127.0.0.1:{port}//")

    build = service.finished(service.submit("leaf/1"))

    assert build["status"] == "BUILD_REQUEST_FAILED"
    [task] = build["tasks"]
    assert task["status"] == "JOB_FAILED"
    assert "databuild:" in task["message"]
    assert farm.attempts(task["job_run_id"]) == [(1, "cancelled", None)]
    assert farm.execs() == []


def test_tasks_logs_follow_prints_a_remote_run_until_it_ends(farm: Farm) -> None:
    farm.worker("wa")
    service = farm.service("s")
    build_id = service.submit("slow/x")
    task = _task_of(service, build_id, "slow/x")
    env = {**os.environ, "DATABUILD_SERVICE_URL": service.info["url"],
           "DATABUILD_SERVICE_TOKEN": service.info["token"]}
    out = farm.root / "follow.txt"
    with out.open("wb") as sink:
        follow = subprocess.Popen(
            [installed("databuild"), "tasks", "logs", task["job_run_id"], "--follow"],
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=farm.root,
        )
    try:
        poll_until(lambda: "x line 3" in out.read_text(), "followed lines", 60.0)
        assert follow.poll() is None
        farm.release("x")
        assert follow.wait(60) == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    texts = [line.split("  ")[-1] for line in out.read_text().splitlines()]
    assert texts == [f"x line {n}" for n in range(len(texts))]


def test_a_job_s_runs_go_to_the_workers_of_its_queue(farm: Farm) -> None:
    farm.worker("wa")
    farm.worker("wbig", queues=[f"{farm.queue}-big"])
    service = farm.service("s")

    build = service.finished(service.submit("big/1", "big/2", "leaf/1", "leaf/2"))

    assert build["status"] == "BUILD_REQUEST_COMPLETED", build
    ran = {e["ref"]: e["worker"] for e in farm.execs() if e["phase"] == "start"}
    assert ran == {"big/1": "wbig", "big/2": "wbig", "leaf/1": "wa", "leaf/2": "wa"}
