"""The web dashboard in a real headless Chromium, against a real ``twistd databuild`` (SPEC §8).

Jobs are paced by files the tests create (the ``slow`` job), never by sleeps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from tests.conftest import EXAMPLES
from tests.polling import poll_until
from tests.service.browser import (
    CuttableProxy,
    api,
    chromium,
    console_errors,
    dashboard_url,
    login_url,
)
from tests.service.conftest import Service, start_service, with_slow_job

WAIT_S = 60


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("dashboard") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    with_slow_job(workspace)
    running = start_service(workspace, "--idle-timeout", "0")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, service: Service) -> Iterator[Any]:
    driver = chromium(tmp_path_factory.mktemp("profile"))
    try:
        driver.get(login_url(service))
        yield driver
    finally:
        driver.quit()


def until(driver: Any, condition: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(
        lambda d: condition(d), f"timed out waiting for {what}"
    )


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def submit(service: Service, *refs: str) -> str:
    code, body = api(service, "POST", "/api/v1/builds", {"partitions": list(refs)})
    assert code == 202, body
    return body["build_request_id"]


def build_status(service: Service, build_id: str) -> str:
    return api(service, "GET", f"/api/v1/builds/{build_id}")[1]["status"]


def finished(service: Service, build_id: str) -> str:
    final = {"BUILD_REQUEST_COMPLETED", "BUILD_REQUEST_FAILED", "BUILD_REQUEST_CANCELLED"}
    return poll_until(
        lambda: (s := build_status(service, build_id)) in final and s, "the build's end", WAIT_S
    )


def started(service: Service, name: str) -> None:
    poll_until(lambda: (service.workspace / "pids" / name).exists(), f"slow/{name}", WAIT_S)


def release(service: Service, name: str) -> None:
    (service.workspace / f"release-{name}").touch()


def node_status(driver: Any, run_id: str) -> str | None:
    nodes = css(driver, f'#graph .node[data-run="{run_id}"]')
    return nodes[0].get_attribute("data-status") if nodes else None


def run_ids(service: Service, build_id: str) -> dict[str, str]:
    """The build's job runs: output ref → job run id."""
    tasks = api(service, "GET", f"/api/v1/builds/{build_id}")[1]["tasks"]
    return {task["outputs"][0]: task["job_run_id"] for task in tasks}


def no_console_errors(driver: Any) -> None:
    assert console_errors(driver) == []


# --- access ----------------------------------------------------------------------------------


def test_a_login_code_works_once_and_pages_need_the_session(
    service: Service, tmp_path: Path
) -> None:
    driver = chromium(tmp_path / "profile")
    try:
        driver.get(dashboard_url(service) + "/builds")
        assert driver.current_url == dashboard_url(service) + "/welcome"
        assert "databuild dashboard" in driver.page_source
        url = login_url(service)
        driver.get(url)
        assert driver.current_url == dashboard_url(service) + "/"
        assert css(driver, "#active")
        driver.delete_all_cookies()
        driver.get(url)
        assert "used already or expired" in driver.page_source
        driver.get(dashboard_url(service) + "/")
        assert driver.current_url == dashboard_url(service) + "/welcome"
        cookie = None
        driver.get(login_url(service))
        cookie = next(c for c in driver.get_cookies() if c["name"].startswith("databuild_"))
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    finally:
        driver.quit()


def test_a_post_from_another_origin_is_refused(service: Service) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        service.url + "/partitions/build", data=b"ref=slow/nope", method="POST",
        headers={"Origin": "http://evil.example"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403


# --- pages ------------------------------------------------------------------------------------


def test_home_lists_a_running_build(service: Service, browser: Any) -> None:
    build_id = submit(service, "slow/home")
    started(service, "home")
    browser.get(dashboard_url(service) + "/")
    rows = css(browser, f'#active tr[data-build="{build_id}"]')
    assert rows and "executing" in rows[0].text
    release(service, "home")
    until(browser, lambda d: "completed" in css(d, f'#active tr[data-build="{build_id}"]')[0].text,
          "the home row to follow the build to its end")
    no_console_errors(browser)


def test_build_page_graph_follows_the_build_live(service: Service, browser: Any) -> None:
    build_id = submit(service, "slow/livea", "slow/liveb")
    started(service, "livea")
    started(service, "liveb")
    runs = run_ids(service, build_id)
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, lambda d: all(node_status(d, r) == "JOB_RUNNING" for r in runs.values()),
          "every run's node to show it running")
    assert len(css(browser, "#graph .node")) == len(runs) == 2
    release(service, "livea")
    until(browser, lambda d: node_status(d, runs["slow/livea"]) == "JOB_COMPLETED",
          "slow/livea's node to turn completed")
    assert node_status(browser, runs["slow/liveb"]) == "JOB_RUNNING"
    release(service, "liveb")
    until(browser, lambda d: node_status(d, runs["slow/liveb"]) == "JOB_COMPLETED",
          "slow/liveb's node to turn completed")
    until(browser, lambda d: css(d, "#build[data-finished]"), "the page to see the build end")
    assert "completed" in css(browser, "#build-status")[0].text
    assert len(css(browser, "#timeline .row")) == 2
    css(browser, f'#graph .node[data-run="{runs["slow/livea"]}"]')[0].click()
    until(browser, lambda d: "released" in css(d, "#log")[0].text, "the run's log")
    no_console_errors(browser)


def test_build_page_resumes_after_a_dropped_stream_without_losing_a_run(
    service: Service, tmp_path: Path
) -> None:
    proxy = CuttableProxy(service.info["port"])
    driver = chromium(tmp_path / "profile")
    try:
        login = urlsplit(login_url(service))
        driver.get(f"{proxy.url}{login.path}?{login.query}")
        via = driver.current_url.rstrip("/")  # the dashboard's own name, on the proxy's port
        assert urlsplit(via).port == proxy.port
        build_id = submit(service, "slow/dropa", "slow/dropb")
        started(service, "dropa")
        started(service, "dropb")
        runs = run_ids(service, build_id)
        driver.get(f"{via}/builds/{build_id}")
        until(driver, lambda d: all(node_status(d, r) == "JOB_RUNNING" for r in runs.values()),
              "both runs' nodes to show them running")
        proxy.cut()
        release(service, "dropa")
        until(driver, lambda d: node_status(d, runs["slow/dropa"]) == "JOB_COMPLETED",
              "slow/dropa's node to turn completed over the resumed stream")
        release(service, "dropb")
        until(driver, lambda d: css(d, "#build[data-finished]"), "the page to see the build end")
        assert len(css(driver, "#graph .node")) == 2
        assert len(css(driver, "#timeline .row")) == 2
        events = api(service, "GET", f"/api/v1/events?build_request_id={build_id}")[1]["events"]
        assert int(css(driver, "#build")[0].get_attribute("data-last-event")) == max(
            e["idx"] for e in events
        )
    finally:
        driver.quit()
        proxy.close()


def test_cancel_button_cancels_the_build(service: Service, browser: Any) -> None:
    build_id = submit(service, "slow/cancelled")
    started(service, "cancelled")
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    until(browser, lambda d: css(d, "#cancel"), "the Cancel button")
    css(browser, "#cancel")[0].click()
    assert finished(service, build_id) == "BUILD_REQUEST_CANCELLED"
    until(browser, lambda d: "cancelled" in css(d, "#build-status")[0].text,
          "the page to show the build cancelled")
    assert not css(browser, "#cancel")
    no_console_errors(browser)


def test_partitions_search_finds_a_ref_and_builds_it(service: Service, browser: Any) -> None:
    assert finished(service, submit(service, "daily_votes/2026-01-03")) == (
        "BUILD_REQUEST_COMPLETED"
    )
    browser.get(dashboard_url(service) + "/partitions")
    field = css(browser, "#pattern")[0]
    field.send_keys("daily_votes/2026-01-0[3]")
    css(browser, "#search")[0].click()
    until(browser, lambda d: "pattern=" in d.current_url, "the search")
    rows = css(browser, "#partitions tbody tr")
    assert [row.text.split()[0] for row in rows] == ["daily_votes/2026-01-03"]
    rows[0].find_element("tag name", "a").click()
    until(browser, lambda d: css(d, "#force-button"), "the partition page")
    css(browser, "#force-button")[0].click()
    until(browser, lambda d: "/builds/" in d.current_url, "the new build's page")
    until(browser, lambda d: css(d, "#build[data-finished]"), "the forced build to end")
    assert "completed" in css(browser, "#build-status")[0].text
    no_console_errors(browser)


def test_jobs_and_analyze_pages(service: Service, browser: Any) -> None:
    browser.get(dashboard_url(service) + "/jobs")
    assert "aggregate_color_votes" in browser.page_source
    browser.get(dashboard_url(service) + "/jobs/aggregate_color_votes")
    assert css(browser, "svg.trend rect")
    browser.get(dashboard_url(service) + "/analyze?refs=color_vote_report/2026-01-05/red")
    until(browser, lambda d: len(css(d, "#graph .node")) > 1, "the analysed graph")
    no_console_errors(browser)


def test_the_build_form_expands_ref_patterns_like_the_cli(
    service: Service, browser: Any
) -> None:
    browser.get(dashboard_url(service) + "/analyze?refs=daily_votes/2026-01-{11,12}")
    until(browser, lambda d: len(css(d, "#graph .node")) > 1, "the analysed graph")
    css(browser, "#build-refs")[0].click()
    until(browser, lambda d: "/builds/" in d.current_url, "the new build's page")
    build_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    code, build = api(service, "GET", f"/api/v1/builds/{build_id}")
    assert code == 200
    assert build["requested_partitions"] == ["daily_votes/2026-01-11", "daily_votes/2026-01-12"]
    no_console_errors(browser)
    browser.get(dashboard_url(service) + "/analyze?refs=daily_votes/2026-01-{11,12")
    assert "never closed" in browser.page_source
    console_errors(browser)  # the page's own 400, read so that the next test starts clean


def test_build_pages_link_a_retry_both_ways(service: Service, browser: Any) -> None:
    build_id = submit(service, "slow/retried")
    started(service, "retried")
    assert api(service, "POST", f"/api/v1/builds/{build_id}/cancel")[0] == 200
    assert finished(service, build_id) == "BUILD_REQUEST_CANCELLED"
    release(service, "retried")
    code, retry = api(service, "POST", f"/api/v1/builds/{build_id}/retry")
    assert (code, retry["partitions"], retry["retry_of"]) == (202, 1, build_id)
    retry_id = retry["build_request_id"]
    assert finished(service, retry_id) == "BUILD_REQUEST_COMPLETED"
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    css(browser, "#retried-by a")[0].click()
    until(browser, lambda d: d.current_url.endswith(retry_id), "the retry's page")
    css(browser, "#retry-of a")[0].click()
    until(browser, lambda d: d.current_url.endswith(build_id), "the retried build's page")
    no_console_errors(browser)


def test_screenshots_for_the_docs(service: Service, browser: Any, tmp_path: Path) -> None:
    """Home and a build page, as docs/dashboard.md shows them.

    They go to ``$DATABUILD_SCREENSHOTS`` when set (``docs/images`` to refresh the docs).
    """
    images = Path(os.environ.get("DATABUILD_SCREENSHOTS", tmp_path))
    images.mkdir(parents=True, exist_ok=True)
    assert finished(service, submit(service, "daily_votes/2026-01-09")) == (
        "BUILD_REQUEST_COMPLETED"
    )
    build_id = submit(service, "daily_votes/2026-01-10", "slow/shot")
    started(service, "shot")
    browser.get(dashboard_url(service) + "/")
    until(browser, lambda d: css(d, f'#active tr[data-build="{build_id}"]'), "the active build")
    browser.save_screenshot(str(images / "dashboard-home.png"))
    browser.get(f"{dashboard_url(service)}/builds/{build_id}")
    runs = run_ids(service, build_id)
    until(browser, lambda d: node_status(d, runs["daily_votes/2026-01-10"]) == "JOB_COMPLETED",
          "the aggregate run to show completed")
    css(browser, f'#graph .node[data-run="{runs["daily_votes/2026-01-10"]}"]')[0].click()
    until(browser, lambda d: css(d, "#log span"), "the run's log")
    browser.save_screenshot(str(images / "dashboard-build.png"))
    release(service, "shot")
    assert finished(service, build_id) == "BUILD_REQUEST_COMPLETED"
    no_console_errors(browser)


def test_an_open_tab_does_not_keep_an_idle_service_and_says_when_it_stopped(
    color_votes: Path, service_factory: Any, tmp_path: Path
) -> None:
    # The browser starts first and the timeout leaves it room: the tab must be open before
    # the service could idle out, however slowly a loaded machine starts Chromium.
    driver = chromium(tmp_path / "profile")
    try:
        idle = service_factory(color_votes, "--idle-timeout", "10")
        driver.get(login_url(idle))
        assert css(driver, "#active")
        assert idle.wait_exit(60) == 0
        until(driver, lambda d: css(d, "#stopped")[0].is_displayed(), "the stopped banner")
    finally:
        driver.quit()
