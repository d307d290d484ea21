"""``/api/v1/openapi.json`` describes the API truly (SPEC §5.9): every route is in it, and a
property-based tester (schemathesis) finds no 500 and no answer outside the schema."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from tests.conftest import EXAMPLES, installed
from tests.service.browser import api
from tests.service.conftest import Service, start_service

from databuild.bel.shapes import EVENT_TYPES
from databuild.service import contract
from databuild.service.api import Api

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance," \
         "content_type_conformance"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    workspace = tmp_path_factory.mktemp("openapi") / "color_votes"
    shutil.copytree(EXAMPLES / "color_votes", workspace)
    running = start_service(workspace, "--idle-timeout", "0")
    yield running
    running.stop()


def routes() -> set[tuple[str, str]]:
    """Every (path, method) the API's router knows, in OpenAPI's path syntax."""
    found = set()
    for rule in Api.app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        found |= {(path, m.lower()) for m in rule.methods or () if m not in {"HEAD", "OPTIONS"}}
    return found


def test_every_route_is_described_and_nothing_else(service: Service) -> None:
    code, document = api(service, "GET", "/api/v1/openapi.json")
    assert code == 200
    assert document["openapi"].startswith("3.1")
    described = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert described == routes()
    for path, ops in document["paths"].items():
        for method, operation in ops.items():
            assert "500" in operation["responses"], (path, method)


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_schema(
    service: Service, tmp_path: pytest.TempPathFactory
) -> None:
    result = subprocess.run(
        [
            installed("st"), "run", f"{service.url}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {service.info['token']}",
            "--checks", CHECKS,
            "--max-examples", "5",
            "--generation-deterministic",
            "--request-timeout", "20",
            # It would stop the service under test; tests/service/test_lifecycle.py covers it.
            "--exclude-path", "/api/v1/service/shutdown",
        ],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert re.search(r"\d+ generated, \d+ passed", result.stdout), result.stdout[-3000:]
    assert service.process.poll() is None
    assert "Traceback" not in service.log_text()


def test_every_route_declares_its_contract() -> None:
    """A route added without ``contract.declare`` is still listed (the router and the document
    never disagree), but marked; this names it, so that its shapes get declared."""
    undeclared = sorted(
        (path, method)
        for path, ops in contract.paths(Api.app).items()
        for method, operation in ops.items()
        if operation.get("x-undeclared")
    )
    assert undeclared == [], "declare these routes' shapes with contract.declare"


def test_the_progress_stream_names_the_logs_event_types() -> None:
    operation = contract.paths(Api.app)["/api/v1/cli/builds/{build_id}/progress"]["get"]
    description = operation["responses"]["200"]["description"]
    assert all(event_type in description for event_type in EVENT_TYPES)
    event = contract.SCHEMAS["Event"]["properties"]["event_type"]
    assert event["enum"] == list(EVENT_TYPES)
