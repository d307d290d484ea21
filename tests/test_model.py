"""The domain values: ref rules, job-protocol JSON, job graphs."""

from __future__ import annotations

import pytest

from databuild.errors import InvalidRefError, JobProtocolError
from databuild.model import (
    MAX_REF_LENGTH,
    DepType,
    JobConfig,
    JobGraph,
    JobRun,
    PartitionInput,
    Refs,
    describe_refs,
    parse_config_output,
    validate_ref,
    validate_refs,
)


@pytest.mark.parametrize(
    "ref",
    ["daily_votes/2026-01-01", "s3://bucket/reviews/date=2026-01-01", "x", "é/ü", "a" * 1024],
)
def test_valid_refs_pass_unchanged(ref: str) -> None:
    assert validate_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("", "must not be empty"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\x00b", "control character"),
        ("a\nb", "whitespace"),
        ("a" * (MAX_REF_LENGTH + 1), "at most 1024"),
        (3, "must be a string, not int"),
        (None, "must be a string, not NoneType"),
    ],
)
def test_invalid_refs_are_refused_with_the_reason(ref: object, problem: str) -> None:
    with pytest.raises(InvalidRefError, match=problem):
        validate_ref(ref)


def test_validate_refs_drops_repeats_keeping_order() -> None:
    assert validate_refs(["b", "a", "b"]) == ("b", "a")
    with pytest.raises(InvalidRefError, match="non-empty list"):
        validate_refs([])
    with pytest.raises(InvalidRefError, match="non-empty list"):
        validate_refs("a")


def test_refs_are_checked_once_and_then_trusted() -> None:
    refs = validate_refs(["b", "a", "b"])
    assert type(refs) is Refs
    # The orchestrator's and the analysis's checks of a request's refs take them as they are.
    assert validate_refs(refs) is refs
    # A plain tuple, even one that names the same refs, is still checked.
    assert type(validate_refs(tuple(refs))) is Refs
    with pytest.raises(InvalidRefError, match="whitespace"):
        validate_refs(("a", "has space"))


def test_describe_refs_shortens_long_lists() -> None:
    assert describe_refs(["a", "b"]) == "a, b"
    assert describe_refs([str(i) for i in range(8)]) == "0, 1, 2, 3, 4 and 3 more"


def test_input_accepts_code_name_or_neither() -> None:
    assert PartitionInput.from_json(
        {"dep_type_code": 0, "partition_ref": {"str": "a"}}
    ) == PartitionInput("a", DepType.QUERY)
    assert PartitionInput.from_json(
        {"dep_type_name": "query", "partition_ref": "a"}
    ) == PartitionInput("a", DepType.QUERY)
    assert PartitionInput.from_json({"partition_ref": "a"}) == PartitionInput("a")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"dep_type_code": 2, "partition_ref": "a"}, "unknown dep_type_code 2"),
        ({"dep_type_name": "eventually", "partition_ref": "a"}, "unknown dep_type_name"),
        ({"partition_ref": {"string": "a"}}, "input: partition ref must be a string"),
        ("a", "an input must be an object"),
    ],
)
def test_bad_inputs_are_named(data: object, problem: str) -> None:
    with pytest.raises(JobProtocolError, match=problem):
        PartitionInput.from_json(data)


def test_config_json_round_trips_in_the_spec_shape() -> None:
    config = JobConfig(
        outputs=("daily_votes/2026-01-01",),
        inputs=(
            PartitionInput("daily_color_votes/2026-01-01/red"),
            PartitionInput("colors", DepType.QUERY),
        ),
        args=("2026-01-01",),
        env={"DATE": "2026-01-01"},
    )
    data = config.to_json()
    assert data == {
        "outputs": [{"str": "daily_votes/2026-01-01"}],
        "inputs": [
            {
                "dep_type_code": 1,
                "dep_type_name": "materialize",
                "partition_ref": {"str": "daily_color_votes/2026-01-01/red"},
            },
            {"dep_type_code": 0, "dep_type_name": "query", "partition_ref": {"str": "colors"}},
        ],
        "args": ["2026-01-01"],
        "env": {"DATE": "2026-01-01"},
    }
    assert JobConfig.from_json(data) == config
    assert config.materialize_inputs == ("daily_color_votes/2026-01-01/red",)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ([], r'expected a JSON object \{"configs": \[...\]\}'),
        ({"configs": {}}, "expected a JSON object"),
        ({"configs": [3]}, "a config must be an object"),
        ({"configs": [{"outputs": []}]}, "non-empty list 'outputs'"),
        ({"configs": [{"outputs": ["a b"]}]}, "output: partition ref 'a b' contains whitespace"),
        ({"configs": [{"outputs": ["a"], "inputs": {}}]}, "'inputs' must be a list"),
        ({"configs": [{"outputs": ["a"], "env": {"A": 1}}]}, "'env' must be an object of strings"),
    ],
)
def test_bad_config_replies_are_named(reply: object, problem: str) -> None:
    with pytest.raises(JobProtocolError, match=problem):
        parse_config_output(reply)


def test_empty_config_list_is_a_valid_reply() -> None:
    assert parse_config_output({"configs": []}) == ()


def graph_of(*runs: tuple[str, tuple[str, ...], tuple[str, ...]]) -> JobGraph:
    return JobGraph(
        outputs=(runs[-1][1][0],),
        job_runs=tuple(
            JobRun(run_id, "job", JobConfig(outputs, tuple(PartitionInput(i) for i in inputs)))
            for run_id, outputs, inputs in runs
        ),
    )


def test_graph_finds_producers_and_upstream_runs() -> None:
    graph = graph_of(
        ("r1", ("a", "b"), ()),
        ("r2", ("c",), ("a", "b", "available")),
        ("r3", ("d",), ("c", "a")),
    )
    r1, r2, r3 = graph.job_runs
    assert graph.producer_of("b") is r1
    assert graph.producer_of("available") is None
    assert list(graph.upstream(r2)) == [r1]
    assert list(graph.upstream(r3)) == [r2, r1]


def test_graph_json_round_trips() -> None:
    graph = graph_of(("r1", ("a",), ()), ("r2", ("b",), ("a",)))
    data = graph.to_json()
    assert data["outputs"] == ["b"]
    assert data["job_runs"][1] == {
        "job_run_id": "r2",
        "job_label": "job",
        "outputs": ["b"],
        "inputs": [
            {"dep_type_code": 1, "dep_type_name": "materialize", "partition_ref": {"str": "a"}}
        ],
        "args": [],
        "env": {},
    }
    assert JobGraph.from_json(data) == graph
