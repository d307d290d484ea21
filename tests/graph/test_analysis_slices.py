"""The analysis's own loops over a big graph run in slices (SPEC §9): driven by a Clock."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.slicing import one_step_per_slice, slices_until
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred, succeed
from twisted.internet.task import Clock

from databuild.graph.analysis import _Analysis
from databuild.graph.commands import plain_commands
from databuild.model import DepType, JobConfig, JobRun, PartitionInput
from databuild.slices import STEP


def run(n: int) -> JobRun:
    inputs = (
        PartitionInput(f"in/{n % 500}"),
        PartitionInput(f"made/{n % 3}"),
        PartitionInput(f"read/{n}", DepType.QUERY),
    )
    return JobRun(f"r{n}", "job", JobConfig(outputs=(f"out/{n}",), inputs=inputs))


def test_the_inputs_of_many_runs_are_gathered_a_slice_at_a_time() -> None:
    clock = Clock()
    asked: list[list[str]] = []

    def available(refs: Sequence[str]) -> Deferred[set[str]]:
        asked.append(list(refs))
        return succeed({ref for ref in refs if ref.endswith("0")})

    analysis: Any = _Analysis(
        clock, None, available, plain_commands, DeferredSemaphore(1), one_step_per_slice(clock)  # type: ignore[arg-type]
    )
    runs = [run(n) for n in range(20 * STEP)]
    analysis._producers = {f"made/{n}": runs[n] for n in range(3)}
    unbuilt = ensureDeferred(analysis._unbuilt_inputs(runs))
    assert slices_until(clock, unbuilt, "the gathering") >= 20
    # Each materialize input once, in the order first needed; none a run makes, no query input.
    assert asked == [[f"in/{n}" for n in range(500)]]
    assert unbuilt.result == [f"in/{n}" for n in range(500) if n % 10]
