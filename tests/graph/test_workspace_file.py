"""Reading databuild.toml: every key, its defaults, and every kind of invalid file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from databuild.errors import GraphFileError
from databuild.graph import (
    BazelSettings,
    ServiceSettings,
    load_workspace,
)

MINIMAL_JOB = """
[[jobs]]
label = "a"
outputs = ['a/\\d+']
command = ["python3", "a.py"]
"""


def write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "databuild.toml").write_text(textwrap.dedent(text))
    return root


def load_error(tmp_path: Path, text: str) -> str:
    write(tmp_path, text)
    with pytest.raises(GraphFileError) as caught:
        load_workspace(tmp_path)
    message = str(caught.value)
    assert str(tmp_path / "databuild.toml") in message
    return message


def test_full_file_is_read_into_settings_and_jobs(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [graph]
        label = "color_votes"
        lookup = ["python3", "lookup.py"]

        [service]
        event_log = "postgresql://db/bel"
        port = 0
        idle_timeout = 1.5
        max_parallel_jobs = 3

        [bazel]
        command = ["bazelisk", "--batch"]
        build_flags = ["-c", "opt"]

        [[jobs]]
        label = "ingest"
        outputs = ['daily/(?P<date>\\d{4}-\\d{2}-\\d{2})', 'other/.*']
        command = ["python3", "jobs/ingest.py"]
        timeout = 600
        retries = 2

        [[jobs]]
        label = "//jobs:aggregate"
        outputs = ['total/.*']
        target = "//jobs:aggregate"
        """,
    )
    ws = load_workspace(tmp_path)
    assert ws.root == tmp_path.resolve()
    assert ws.label == "color_votes"
    assert ws.lookup == ("python3", "lookup.py")
    assert ws.service == ServiceSettings("postgresql://db/bel", 0, 1.5, 3)
    assert ws.bazel == BazelSettings(("bazelisk", "--batch"), ("-c", "opt"))
    ingest, aggregate = ws.jobs
    assert ingest.label == "ingest"
    assert [p.pattern for p in ingest.outputs] == [
        "daily/(?P<date>\\d{4}-\\d{2}-\\d{2})",
        "other/.*",
    ]
    assert ingest.command == ("python3", "jobs/ingest.py")
    assert (ingest.target, ingest.timeout, ingest.retries) == (None, 600.0, 2)
    assert aggregate.command is None
    assert aggregate.target == "//jobs:aggregate"
    assert ws.job("//jobs:aggregate") is aggregate


def test_unset_keys_take_their_defaults(tmp_path: Path) -> None:
    write(tmp_path, '[graph]\nlabel = "g"\n' + MINIMAL_JOB)
    ws = load_workspace(tmp_path)
    assert ws.lookup is None
    assert ws.service == ServiceSettings(None, None, None, None)
    assert ws.bazel == BazelSettings(("bazel",), ())
    (job,) = ws.jobs
    assert (job.timeout, job.retries, job.target) == (None, 0, None)


def test_output_patterns_match_whole_refs_only(tmp_path: Path) -> None:
    write(tmp_path, '[graph]\nlabel = "g"\n' + MINIMAL_JOB)
    (job,) = load_workspace(tmp_path).jobs
    assert job.produces("a/12")
    assert not job.produces("a/12/extra")
    assert not job.produces("xa/12")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[graph]\nlabel = "g"\ncolour = 1\n', "[graph]: unknown key 'colour'"),
        ('[graph]\nlabel = "g"\n[extras]\n', "top level: unknown key 'extras'"),
        ('[graph]\nlabel = "g"\n[service]\nprot = 1\n', "[service]: unknown key 'prot'"),
        ('[graph]\nlabel = "g"\n[bazel]\nflags = []\n', "[bazel]: unknown key 'flags'"),
        (
            '[graph]\nlabel = "g"\n' + MINIMAL_JOB + "tiemout = 3\n",
            "job 'a': unknown key 'tiemout'",
        ),
        (MINIMAL_JOB, "top level: missing table [graph]"),
        ("[graph]\n", "[graph]: missing key 'label'"),
        ("[graph]\nlabel = 3\n", "[graph]: 'label' must be a string, not an integer"),
        ('[graph]\nlabel = ""\n', "[graph]: 'label' must not be empty"),
        ('graph = "g"\n', "'graph' must be a table, not a string"),
        ('[graph]\nlabel = "g"\nlookup = "lookup.py"\n', "'lookup' must be an array of strings"),
        ('[graph]\nlabel = "g"\nlookup = []\n', "'lookup' must not be empty"),
        ('[graph]\nlabel = "g"\n[bazel]\ncommand = [1]\n', "'command' must be an array"),
        ('jobs = 3\n[graph]\nlabel = "g"\n', "'jobs' must be an array of tables"),
    ],
)
def test_bad_tables_are_named(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("port = -1", "'port' is -1; it must be 0 to 65535"),
        ("port = 70000", "'port' is 70000; it must be 0 to 65535"),
        ('port = "8080"', "'port' must be an integer, not a string"),
        ("port = true", "'port' must be an integer, not a boolean"),
        ("idle_timeout = -5", "'idle_timeout' is -5; it must be zero or more seconds"),
        ("idle_timeout = nan", "'idle_timeout' is nan"),
        ('idle_timeout = "5m"', "'idle_timeout' must be a number of seconds, not a string"),
        ("max_parallel_jobs = 0", "'max_parallel_jobs' is 0; it must be at least 1"),
        ("max_parallel_jobs = 2.5", "'max_parallel_jobs' must be an integer, not a number"),
        ("event_log = 5", "'event_log' must be a string"),
    ],
)
def test_bad_service_values_are_named(tmp_path: Path, service: str, expected: str) -> None:
    message = load_error(tmp_path, f'[graph]\nlabel = "g"\n[service]\n{service}\n')
    assert "[service]" in message
    assert expected in message


def job_error(tmp_path: Path, job: str) -> str:
    return load_error(tmp_path, f'[graph]\nlabel = "g"\n[[jobs]]\n{textwrap.dedent(job)}')


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (
            'label = "j"\noutputs = ["x"]\ncommand = ["a"]\ntarget = "//a"\n',
            "job 'j': has both of 'command' and 'target'; give exactly one",
        ),
        (
            'label = "j"\noutputs = ["x"]\n',
            "job 'j': has neither of 'command' and 'target'; give exactly one",
        ),
        ('label = "j"\ncommand = ["a"]\n', "job 'j': missing key 'outputs'"),
        ('label = "j"\noutputs = []\ncommand = ["a"]\n', "job 'j': 'outputs' must not be empty"),
        (
            'label = "j"\noutputs = "x"\ncommand = ["a"]\n',
            "job 'j': 'outputs' must be an array of strings",
        ),
        (
            'label = "j"\noutputs = ["ok", "a(b"]\ncommand = ["a"]\n',
            "job 'j': outputs[1] 'a(b' is not a valid regular expression: missing ), "
            "unterminated subpattern",
        ),
        ('outputs = ["x"]\ncommand = ["a"]\n', "jobs[0] (no label): missing key 'label'"),
        (
            'label = "my job"\noutputs = ["x"]\ncommand = ["a"]\n',
            "label 'my job' must not contain whitespace",
        ),
        ('label = "j"\noutputs = ["x"]\ncommand = []\n', "job 'j': 'command' must not be empty"),
        ('label = "j"\noutputs = ["x"]\ncommand = [""]\n', "'command' must start with a program"),
        ('label = "j"\noutputs = ["x"]\ncommand = "a.py"\n', "job 'j': 'command' must be an"),
        ('label = "j"\noutputs = ["x"]\ntarget = ""\n', "job 'j': 'target' must not be empty"),
        (
            'label = "j"\noutputs = ["x"]\ncommand = ["a"]\ntimeout = 0\n',
            "job 'j': 'timeout' is 0; it must be more than zero seconds",
        ),
        (
            'label = "j"\noutputs = ["x"]\ncommand = ["a"]\ntimeout = "1h"\n',
            "job 'j': 'timeout' must be a number of seconds, not a string",
        ),
        (
            'label = "j"\noutputs = ["x"]\ncommand = ["a"]\nretries = -1\n',
            "job 'j': 'retries' is -1; it must be at least 0",
        ),
        (
            'label = "j"\noutputs = ["x"]\ncommand = ["a"]\nretries = 1.0\n',
            "job 'j': 'retries' must be an integer, not a number",
        ),
    ],
)
def test_bad_jobs_are_named_with_the_problem(tmp_path: Path, job: str, expected: str) -> None:
    assert expected in job_error(tmp_path, job)


def test_two_jobs_with_one_label_are_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[graph]\nlabel = "g"\n' + MINIMAL_JOB + MINIMAL_JOB)
    assert "job 'a': two jobs have this label" in message


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[graph]\nlabel = "g"\n\n[[jobs]\nlabel = "a"\n')
    assert "invalid TOML" in message
    assert re.search(r"line 4\b", message), message


def test_missing_graph_file_says_the_directory_is_no_workspace(tmp_path: Path) -> None:
    with pytest.raises(GraphFileError, match="is not a workspace"):
        load_workspace(tmp_path)


def test_graph_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    (tmp_path / "databuild.toml").write_bytes(b'[graph]\nlabel = "\xff"\n')
    with pytest.raises(GraphFileError, match="cannot be read"):
        load_workspace(tmp_path)


def test_example_workspace_loads(color_votes: Path) -> None:
    ws = load_workspace(color_votes)
    assert ws.label == "color_votes"
    assert [j.label for j in ws.jobs] == [
        "ingest_color_votes",
        "trailing_color_votes",
        "aggregate_color_votes",
        "color_vote_report",
    ]
