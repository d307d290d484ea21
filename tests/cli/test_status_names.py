"""The CLI's own copies of the status names (kept for its lean imports) equal the source."""

from __future__ import annotations

import re
from pathlib import Path

import databuild.cli
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


def test_every_status_the_cli_spells_out_exists() -> None:
    names = {s.value for kind in (BuildStatus, JobStatus, PartitionStatus) for s in kind}
    cli = Path(databuild.cli.__file__).parent
    spelled = {
        match
        for source in cli.glob("*.py")
        for match in re.findall(r"\"((?:BUILD_REQUEST|JOB|PARTITION)_[A-Z_]*[A-Z])\"",
                                source.read_text())
    }
    assert spelled and spelled <= names, spelled - names
