"""A build started from the dashboard goes through the same door as one from the API (SPEC §8:
"a view over the same API, with nothing it alone can do"): it plans with the graph file as it
is now (§5.7) and holds the service busy until it ends (§5.2)."""

from __future__ import annotations

import http.client
import re
from pathlib import Path
from urllib.parse import urlsplit

from tests.polling import poll_until
from tests.service.browser import login_url
from tests.service.conftest import Service, with_lasting_job

IDLE_TIMEOUT_S = 2
JOB_S = 2.5 * IDLE_TIMEOUT_S
"""The job outlasts the idle timeout by far; the test never calls the service meanwhile."""


def dashboard_post(service: Service, path: str, form: str) -> http.client.HTTPResponse:
    """A dashboard form POST with a fresh session, as the browser sends it."""
    port = service.info["port"]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    link = urlsplit(login_url(service))  # at the dashboard's own name, <random>.localhost
    connection.request("GET", f"{link.path}?{link.query}", headers={"Host": link.netloc})
    login = connection.getresponse()
    login.read()
    assert login.status == 303, login.status
    cookie = login.getheader("set-cookie").split(";", 1)[0]
    connection.request(
        "POST",
        path,
        body=form.encode(),
        headers={
            "Host": link.netloc,
            "Cookie": cookie,
            "Origin": f"http://{link.netloc}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer


def test_a_dashboard_build_plans_with_the_edited_graph_and_outlives_the_idle_timeout(
    service_factory, color_votes: Path
) -> None:
    service = service_factory(color_votes, "--idle-timeout", str(IDLE_TIMEOUT_S))
    with_lasting_job(color_votes, JOB_S)  # a job the graph the service started with does not have

    answer = dashboard_post(service, "/partitions/build", "ref=lasting/door")

    assert answer.status == 303
    build_id = re.fullmatch(r"/builds/(\w+)", answer.getheader("location")).group(1)
    # Nothing calls the service while the job runs: only the build may keep it up.
    poll_until(lambda: (color_votes / "done-door").exists(), "the job's end", 60)
    assert service.wait_exit(60) == 0  # idle once the build is over
    log = service.log_text()
    ended = log.index(f"build {build_id} ended: completed")
    assert "requested from the dashboard" in log
    assert log.index("shutting down", ended) > ended
    assert "shutting down" not in log[:ended]
