"""The dashboard at scale in a real headless Chromium against a real ``twistd databuild``
(SPEC §8, §9): a 10,000-run build drawn by job, its counts as the API gives them, a job's
runs paged, the run page following a running job's log, datasets with their status strips,
a partition's lineage. The big build is written into the log before the service starts
(``tests/service/synthetic.py``); the running job is paced by a file the test creates.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.conftest import EXAMPLES
from tests.polling import poll_until
from tests.service.browser import api, chromium, console_errors, dashboard_url, login_url
from tests.service.conftest import Service, start_service
from tests.service.synthetic import LABELS, write_build
from tests.service.test_dashboard import WAIT_S, css, finished, submit, until

BIG = 10_000
TALKY_JOB = '''\
"""Job ``talky``: the run for ``talky/NAME`` prints a line, waits for release-NAME, prints."""
import json, os, sys, time
if sys.argv[1] == "config":
    print(json.dumps({"configs": [{"outputs": [r], "args": [r], "env": {"TALKY": "1"}}
                                  for r in sys.argv[2:]]}))
    sys.exit(0)
name = sys.argv[2].split("/")[1]
print(f"started {name}", flush=True)
release = os.path.join(os.environ["DATABUILD_WORKSPACE"], f"release-{name}")
while not os.path.exists(release):
    time.sleep(0.05)
print(f"finished {name}", flush=True)
'''

TICK_JOB = """\
# Job ``tick``: its runs wait for the file release-ticks, then end at once.
if [ "$1" = config ]; then
    shift
    printf '{"configs": ['
    sep=""
    for ref in "$@"; do printf '%s{"outputs": ["%s"]}' "$sep" "$ref"; sep=","; done
    printf ']}\\n'
    exit 0
fi
while [ ! -f "$DATABUILD_WORKSPACE/release-ticks" ]; do sleep 0.05; done
"""
TICKS = 240
"""Runs of the live big build: over the 200 drawn one by one."""


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str]]:
    """A service whose log holds a finished build of BIG runs, and that build's id."""
    workspace = tmp_path_factory.mktemp("scale") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace,
                    ignore=shutil.ignore_patterns(".databuild", "data"))
    (workspace / "jobs" / "talky.py").write_text(TALKY_JOB)
    with (workspace / "databuild.toml").open("a") as f:
        f.write('\n[[jobs]]\nlabel = "talky"\noutputs = [\'talky/[a-z0-9]+\']\n'
                'command = ["python3", "jobs/talky.py"]\n')
        f.write('\n[[jobs]]\nlabel = "tick"\noutputs = [\'tick/[0-9]+\']\n'
                'command = ["sh", "jobs/tick.sh"]\n')
    (workspace / "jobs" / "tick.sh").write_text(TICK_JOB)
    build_id = write_build(workspace, BIG)
    service = start_service(workspace, "--idle-timeout", "0")
    yield service, build_id
    service.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, big: tuple[Service, str]) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("profile"))
    try:
        driver.get(login_url(big[0]))
        yield driver
    finally:
        driver.quit()


def text(driver: Any, selector: str) -> str:
    """The text of the first element ``selector`` finds now ("" if none), read in one step so
    that a page reloading meanwhile cannot leave a stale element behind."""
    return str(driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
        selector,
    ))


def drawn(driver: Any) -> bool:
    return bool(css(driver, '#graph[data-ready="true"]'))


def test_a_10000_run_build_page_is_drawn_by_job_and_scrolls(
    big: tuple[Service, str], browser: Any
) -> None:
    service, build_id = big
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, drawn, "the graph to be drawn")
    nodes = css(browser, "#graph .node[data-job]")
    assert sorted(n.get_attribute("data-job") for n in nodes) == sorted(LABELS)
    assert not css(browser, "#graph .node[data-run]")  # no run is drawn one by one
    assert len(css(browser, "#graph path.edge")) == 2
    assert f"/ {BIG:,} runs done (100.0 %)" in css(browser, "#progress")[0].text
    assert "UTC" in css(browser, "#build-ended")[0].text
    assert css(browser, "#build-duration")[0].text.endswith((" s", " min", " h"))
    css(browser, f'#graph .node[data-job="{LABELS[0]}"]')[0].click()
    until(browser, lambda d: css(d, "#job-runs tbody tr[data-run]"), "the job's runs")
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    assert browser.execute_script("return window.scrollY") > 0
    no_console_errors(browser)


def test_the_job_level_counts_match_the_api_and_a_job_lists_its_runs_paged(
    big: tuple[Service, str], browser: Any
) -> None:
    service, build_id = big
    code, jobs = api(service, "GET", f"/api/v1/builds/{build_id}/jobs")
    assert code == 200
    assert jobs["runs"] == BIG
    ingest, daily, report = LABELS
    assert jobs["edges"] == [
        {"upstream": daily, "downstream": report},
        {"upstream": ingest, "downstream": daily},
    ]
    missing = api(service, "GET", "/api/v1/builds/0123456789abcdef/jobs")
    assert missing[0] == 404 and missing[1]["error"]["code"] == "not_found"
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, drawn, "the graph to be drawn")
    for job in jobs["jobs"]:
        [node] = css(browser, f'#graph .node[data-job="{job["job_label"]}"]')
        for status, count in job["job_runs"].items():
            short = status.removeprefix("JOB_").lower()
            assert int(node.get_attribute(f"data-{short}")) == count, (job["job_label"], status)
        assert f'/ {job["runs"]:,} done' in node.text
    first = next(j for j in jobs["jobs"] if j["job_label"] == ingest)
    css(browser, f'#graph .node[data-job="{ingest}"]')[0].click()
    until(browser, lambda d: len(css(d, "#job-runs tbody tr[data-run]")) == 50,
          "the first page of the job's runs")
    assert f"1\u201350 of {first['runs']:,}" in css(browser, "#job-runs-range")[0].text
    first_page = {r.get_attribute("data-run") for r in css(browser, "#job-runs tr[data-run]")}
    css(browser, "#job-runs-older")[0].click()
    until(browser, lambda d: "51\u2013100" in css(d, "#job-runs-range")[0].text, "the second page")
    second_page = {r.get_attribute("data-run") for r in css(browser, "#job-runs tr[data-run]")}
    assert len(second_page) == 50 and not first_page & second_page
    from selenium.webdriver.support.ui import Select

    Select(css(browser, "#job-runs-status")[0]).select_by_value("failed")
    failed = first["job_runs"]["JOB_FAILED"]
    until(browser, lambda d: f"of {failed}" in css(d, "#job-runs-range")[0].text,
          "the failed runs only")
    assert {r.text.split()[1] for r in css(browser, "#job-runs tr[data-run]")} == {"failed"}
    no_console_errors(browser)


def test_a_big_running_build_counts_its_runs_live_by_job(
    big: tuple[Service, str], browser: Any
) -> None:
    service, _ = big
    build_id = submit(service, *(f"tick/{n:04d}" for n in range(TICKS)))

    def counted() -> dict[str, Any] | None:
        jobs = api(service, "GET", f"/api/v1/builds/{build_id}/jobs")[1]
        return jobs if jobs["runs"] == TICKS and jobs["running"] else None

    poll_until(counted, "the plan and a running tick", WAIT_S)
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, drawn, "the graph to be drawn")
    [node] = css(browser, '#graph .node[data-job="tick"]')
    assert int(node.get_attribute("data-completed")) == 0
    assert int(node.get_attribute("data-running")) > 0
    (service.workspace / "release-ticks").touch()
    until(browser, lambda d: css(d, '#graph .node[data-job="tick"]')[0]
          .get_attribute("data-completed") == str(TICKS), "every tick counted completed, live")
    assert finished(service, build_id) == "BUILD_REQUEST_COMPLETED"
    until(browser, lambda d: css(d, "#build[data-finished]"), "the page to see the build end")
    assert f"{TICKS} / {TICKS} runs done" in css(browser, "#progress")[0].text
    assert int(node.get_attribute("data-running")) == 0
    assert int(node.get_attribute("data-scheduled")) == 0
    no_console_errors(browser)


def test_the_run_page_follows_a_running_jobs_log(big: tuple[Service, str], browser: Any) -> None:
    service, _ = big
    build_id = submit(service, "talky/follow")

    def running_task() -> str | None:
        tasks = api(service, "GET", f"/api/v1/tasks?build_request_id={build_id}")[1]["tasks"]
        return next((t["job_run_id"] for t in tasks if t["status"] == "JOB_RUNNING"), None)

    task_id = poll_until(running_task, "the talky run to run", WAIT_S)
    browser.get(f"{dashboard_url(service)}/tasks/{task_id}")
    until(browser, lambda d: "started follow" in css(d, "#log")[0].text, "the first log line")
    assert "running" in css(browser, "#task-status")[0].text
    assert "talky/follow" in css(browser, "#outputs")[0].text
    assert "talky/follow" in css(browser, "#args")[0].text
    assert "TALKY" in css(browser, "#env")[0].text
    assert "finished follow" not in css(browser, "#log")[0].text
    (service.workspace / "release-follow").touch()
    until(browser, lambda d: "finished follow" in text(d, "#log"),
          "the last log line, followed live")
    until(browser, lambda d: "completed" in text(d, "#task-status"),
          "the page to show the run's end")
    assert finished(service, build_id) == "BUILD_REQUEST_COMPLETED"
    no_console_errors(browser)


def test_the_build_pages_log_panel_follows_a_running_run(
    big: tuple[Service, str], browser: Any
) -> None:
    service, _ = big
    build_id = submit(service, "talky/panel")
    poll_until(lambda: api(service, "GET", f"/api/v1/builds/{build_id}")[1]["job_runs"]
               ["JOB_RUNNING"], "the talky run to run", WAIT_S)
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, lambda d: css(d, '#graph .node[data-status="JOB_RUNNING"]'), "its node")
    css(browser, '#graph .node[data-status="JOB_RUNNING"]')[0].click()
    until(browser, lambda d: "started panel" in css(d, "#log")[0].text, "the first line")
    (service.workspace / "release-panel").touch()
    until(browser, lambda d: "finished panel" in css(d, "#log")[0].text,
          "the last line, followed live")
    assert finished(service, build_id) == "BUILD_REQUEST_COMPLETED"
    no_console_errors(browser)


def test_datasets_strip_and_a_partitions_lineage(big: tuple[Service, str], browser: Any) -> None:
    service, _ = big
    ref = "color_vote_report/2026-02-03/red"
    assert finished(service, submit(service, ref)) == "BUILD_REQUEST_COMPLETED"
    code, found = api(service, "GET", "/api/v1/datasets?limit=1000")
    assert code == 200
    report = next(d for d in found["datasets"] if d["job_label"] == "color_vote_report")
    assert report["partitions"] == report["statuses"]["PARTITION_AVAILABLE"] >= 1
    [pattern] = report["output_patterns"]
    assert pattern.startswith("color_vote_report/")
    assert api(service, "GET", "/api/v1/datasets?limit=0")[0] == 400
    browser.get(f"{dashboard_url(service)}/partitions")
    [row] = css(browser, '#datasets tr[data-dataset="color_vote_report"]')
    segments = row.find_elements("css selector", ".strip .segment rect")
    assert [s.get_attribute("class") for s in segments] == ["s-available"]
    assert "color_vote_report/" in row.text  # its output pattern
    [big_row] = css(browser, f'#datasets tr[data-dataset="{LABELS[0]}"]')
    shown = [s.get_attribute("class") for s in big_row.find_elements("css selector", "rect")]
    assert len(shown) == 60  # 6,000 partitions in at most 60 segments
    assert 0 < shown.count("s-failed") < shown.count("s-available")
    browser.get(f"{dashboard_url(service)}/partitions/{quote(ref, safe='')}")
    upstream = css(browser, "#upstream")[0].text
    assert "daily_color_votes/2026-02-03/red" in upstream
    daily = "daily_color_votes/2026-02-03/red"
    browser.get(f"{dashboard_url(service)}/partitions/{quote(daily, safe='')}")
    assert ref in css(browser, "#downstream")[0].text or "color_votes_1w" in (
        css(browser, "#downstream")[0].text
    )
    no_console_errors(browser)


def test_screenshots_of_the_pages_at_scale(big: tuple[Service, str], browser: Any,
                                          tmp_path: Path) -> None:
    """The pages docs/dashboard.md shows; to ``$DATABUILD_SCREENSHOTS`` when set."""
    service, build_id = big
    images = Path(os.environ.get("DATABUILD_SCREENSHOTS", tmp_path))
    images.mkdir(parents=True, exist_ok=True)
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, drawn, "the graph to be drawn")
    css(browser, f'#graph .node[data-job="{LABELS[1]}"]')[0].click()
    until(browser, lambda d: css(d, "#job-runs tbody tr[data-run]"), "the job's runs")
    css(browser, "#job-runs tbody tr[data-run] button")[0].click()
    until(browser, lambda d: css(d, '#log[data-ended="true"]'), "the run's log")
    browser.save_screenshot(str(images / "dashboard-build-jobs.png"))
    small = submit(service, "color_vote_report/2026-03-05/blue", "color_vote_report/2026-03-05/red")
    assert finished(service, small) == "BUILD_REQUEST_COMPLETED"
    browser.get(f"{dashboard_url(service)}/builds/{small}")
    until(browser, drawn, "the small build's graph")
    browser.save_screenshot(str(images / "dashboard-build-runs.png"))
    task = api(service, "GET", f"/api/v1/tasks?build_request_id={small}&limit=1")[1]["tasks"][0]
    browser.get(f"{dashboard_url(service)}/tasks/{task['job_run_id']}")
    until(browser, lambda d: css(d, '#log[data-ended="true"]'), "the run's log")
    browser.save_screenshot(str(images / "dashboard-run.png"))
    browser.get(f"{dashboard_url(service)}/partitions")
    browser.save_screenshot(str(images / "dashboard-partitions.png"))
    ref = quote("color_votes_1w/2026-03-05/red", safe="")
    browser.get(f"{dashboard_url(service)}/partitions/{ref}")
    browser.save_screenshot(str(images / "dashboard-partition.png"))
    no_console_errors(browser)


def no_console_errors(driver: Any) -> None:
    assert console_errors(driver) == []
