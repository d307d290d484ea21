"""Dashboard benchmark: how soon a build page is drawn (``data-ready``) in headless Chromium.

    .venv/bin/python benchmarks/dashboard_bench.py [--runs 1000,10000,100000] [--repeat 3]

For each size, a finished build of that many runs (three jobs in a chain, the runs of three
days failed) is written into a fresh workspace's SQLite log through the real writer
(``tests/service/synthetic.py``), a real ``twistd databuild`` serves it, and Debian's headless
Chromium (Selenium) loads its page: the time from the request of the page to the graph
element's ``data-ready="true"`` is taken ``--repeat`` times, the median shown, with the time
the service takes to answer ``GET /api/v1/builds/{id}/jobs`` (the aggregate the page draws).
Baseline, same run, same browser: the page of a build of 10 runs (drawn run by run). The
target (SPEC §8): a page of 100,000 runs usable within 2 s.

Browser and service share the machine, so the figures include the browser's own cost.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.service.browser import api, chromium, dashboard_url, login_url  # noqa: E402  (the tests' own)
from tests.service.conftest import Service, start_service  # noqa: E402
from tests.service.synthetic import write_build  # noqa: E402

BASELINE_RUNS = 10
TARGET_S = 2.0


def _ready_s(driver: Any, url: str) -> float:
    """Seconds from asking for ``url`` to its graph carrying ``data-ready``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    start = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, 120, poll_frequency=0.005).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, '#graph[data-ready="true"]')
    )
    return time.perf_counter() - start


def _aggregate_ms(service: Service, build_id: str) -> float:
    request = urllib.request.Request(f"{service.url}/api/v1/builds/{build_id}/jobs",
                                     headers=service.headers())
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def measure(runs: int, repeat: int, scratch: Path) -> dict[str, float]:
    workspace = scratch / f"ws-{runs}"
    shutil.copytree(REPO / "examples" / "color_votes", workspace,
                    ignore=shutil.ignore_patterns(".databuild", "data"))
    start = time.perf_counter()
    build_id = write_build(workspace, runs)
    written_s = time.perf_counter() - start
    service = start_service(workspace, "--idle-timeout", "0")
    driver = chromium(scratch / f"profile-{runs}")
    try:
        driver.get(login_url(service))
        url = f"{dashboard_url(service)}/builds/{build_id}"
        _ready_s(driver, url)  # warm: the browser's cache of the scripts, the log's pages
        ready = statistics.median(_ready_s(driver, url) for _ in range(repeat))
        aggregate = statistics.median(_aggregate_ms(service, build_id) for _ in range(repeat))
        assert api(service, "GET", f"/api/v1/builds/{build_id}/jobs")[1]["runs"] == runs
    finally:
        driver.quit()
        service.stop()
    return {"runs": runs, "written_s": written_s, "ready_s": ready, "aggregate_ms": aggregate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="1000,10000,100000",
                        help="comma-separated build sizes (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(n) for n in args.runs.split(",")]
    with tempfile.TemporaryDirectory(prefix="dashboard-bench-") as scratch:
        base = measure(BASELINE_RUNS, args.repeat, Path(scratch))
        rows = [measure(n, args.repeat, Path(scratch)) for n in sizes]
    print(f"{'runs':>8} {'written':>9} {'jobs API':>9} {'data-ready':>11} {'vs 10 runs':>10}"
          f" {'target':>7}")
    for row in [base, *rows]:
        ratio = row["ready_s"] / base["ready_s"]
        verdict = "" if row is base else ("ok" if row["ready_s"] <= TARGET_S else "MISSED")
        print(f"{row['runs']:>8,} {row['written_s']:>8.1f}s {row['aggregate_ms']:>7.1f}ms"
              f" {row['ready_s']:>10.3f}s {ratio:>9.2f}x {verdict:>7}")


if __name__ == "__main__":
    main()
