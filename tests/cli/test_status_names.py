"""The CLI's own copies of the status names (kept for its lean imports) equal the source."""

from __future__ import annotations

from databuild.bel.status import BuildStatus, JobStatus, PartitionStatus
from databuild.cli.args import STATUSES
from databuild.cli.exits import BUILD_EXIT_CODES
from databuild.cli.progress import FINISHED_JOB_STATUSES


def test_the_cli_knows_every_status_in_the_sources_order() -> None:
    assert {
        "build": tuple(s.value for s in BuildStatus),
        "job": tuple(s.value for s in JobStatus),
        "partition": tuple(s.value for s in PartitionStatus),
    } == STATUSES


def test_the_clis_final_statuses_are_the_sources() -> None:
    assert set(FINISHED_JOB_STATUSES) == {s.value for s in JobStatus if s.final}
    assert set(BUILD_EXIT_CODES) == {s.value for s in BuildStatus if s.final}
