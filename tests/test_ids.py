"""Ids: random ones for builds and runs, time-ordered ones for events."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable

import pytest

from databuild import ids as id_module
from databuild.ids import new_event_id, new_id


def test_build_and_run_ids_are_random_version_4_uuids() -> None:
    made = [new_id() for _ in range(10_000)]
    assert len(set(made)) == 10_000
    assert all(len(i) == 32 and uuid.UUID(i).hex == i for i in made)
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in made)
    # People tell ids apart by their first characters: those are random, not a clock.
    assert len({i[:4] for i in made}) > 5_000


def test_event_ids_are_version_7_uuids_that_sort_by_the_millisecond_they_were_made_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    start_ms = 1_795_000_000_000
    clock = iter(range(start_ms * 10**6, (start_ms + 1_000) * 10**6, 10**6))
    monkeypatch.setattr(id_module.time, "time_ns", lambda: next(clock))
    ids = [new_event_id() for _ in range(1_000)]
    assert sorted(ids) == ids
    assert all(uuid.UUID(i).version == 7 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert int(ids[0][:12], 16) == start_ms
    assert all(len(i) == 32 for i in ids)


def test_event_ids_made_in_one_millisecond_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_module.time, "time_ns", lambda: 1_795_000_000_000 * 10**6)
    ids = {new_event_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert len({i[:12] for i in ids}) == 1


@pytest.mark.parametrize("make", [new_id, new_event_id])
def test_ids_do_not_repeat_when_the_random_module_is_seeded_again_or_the_process_forks(
    monkeypatch: pytest.MonkeyPatch, make: Callable[[], str]
) -> None:
    # One millisecond for event ids: only their random bits can tell them apart.
    monkeypatch.setattr(id_module.time, "time_ns", lambda: 1_795_000_000_000 * 10**6)
    random.seed(7)
    first = make()
    random.seed(7)
    assert make() != first
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(write, make().encode())
        os._exit(0)
    os.close(write)
    in_child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(child, 0)
    assert len(in_child) == 32
    assert in_child != make()
