"""The config side of the job protocol, against real job processes."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from tests.polling import poll_until_async
from twisted.internet import reactor

from databuild.errors import AnalysisError
from databuild.graph import run_config
from databuild.graph.capture import argv_batches
from databuild.model import DepType, JobConfig, PartitionInput
from databuild.proc.info import alive

from .conftest import WriteWorkspace


async def configure(
    write_workspace: WriteWorkspace, source: str, refs: list[str], timeout_s: float = 30.0
) -> tuple[JobConfig, ...]:
    ws = write_workspace({"job": (r"out/.*", source)})
    job = ws.job("job")
    assert job.command is not None
    return await run_config(reactor, ws, job, job.command, refs, timeout_s)


@pytest_twisted.ensureDeferred
async def test_config_reply_becomes_job_configs(
    write_workspace: WriteWorkspace, tmp_path: Path
) -> None:
    configs = await configure(
        write_workspace,
        """
        import json, os, sys
        assert sys.argv[1] == "config"
        print("a line of chatter on stderr", file=sys.stderr)
        print(json.dumps({"configs": [
            {"outputs": [{"str": r}],
             "inputs": [{"dep_type_code": 1, "dep_type_name": "materialize",
                         "partition_ref": {"str": "in/" + r}},
                        {"dep_type_code": 0, "partition_ref": "lookup/table"}],
             "args": [r], "env": {"CWD": os.getcwd()}}
            for r in sys.argv[2:]]}, indent=2))
        """,
        ["out/1", "out/2"],
    )
    assert [c.outputs for c in configs] == [("out/1",), ("out/2",)]
    first = configs[0]
    assert first.inputs == (
        PartitionInput("in/out/1", DepType.MATERIALIZE),
        PartitionInput("lookup/table", DepType.QUERY),
    )
    assert first.args == ("out/1",)
    assert first.env["CWD"] == str(tmp_path / "ws")


@pytest_twisted.ensureDeferred
async def test_plain_string_refs_and_omitted_fields_are_accepted(
    write_workspace: WriteWorkspace,
) -> None:
    configs = await configure(
        write_workspace,
        'import json; print(json.dumps({"configs": [{"outputs": ["out/a", "out/b"]}]}))',
        ["out/a", "out/b"],
    )
    assert configs == (JobConfig(outputs=("out/a", "out/b")),)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            'import sys; print("no such date", file=sys.stderr); sys.exit(2)',
            "exited with code 2; stderr:\nno such date",
        ),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
            "killed by signal 9",
        ),
        (
            'import sys; print("{oops"); print("why", file=sys.stderr)',
            "printed invalid JSON",
        ),
        ('print("[]")', 'printed a bad reply: expected a JSON object {"configs": [...]}'),
        (
            'import json; print(json.dumps({"configs": [{"inputs": []}]}))',
            "printed a bad reply: a config needs a non-empty list 'outputs'",
        ),
        (
            'import json; print(json.dumps({"configs": [{"outputs": ["out/1"], "args": [1]}]}))',
            "printed a bad reply: 'args' must be a list of strings",
        ),
        (
            'import json; print(json.dumps({"configs": [{"outputs": ["out/1"], '
            '"inputs": [{"dep_type_code": 7, "partition_ref": "x"}]}]}))',
            "unknown dep_type_code 7",
        ),
        (
            'import json, sys; print("dropped one", file=sys.stderr); '
            'print(json.dumps({"configs": [{"outputs": ["out/1"]}]}))',
            "left out/2 out of every config's outputs; stderr:\ndropped one",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_config_failures_name_job_refs_and_stderr(
    write_workspace: WriteWorkspace, source: str, expected: str
) -> None:
    with pytest.raises(AnalysisError) as caught:
        await configure(write_workspace, source, ["out/1", "out/2"])
    message = str(caught.value)
    assert message.startswith("job 'job': config for out/1, out/2 ")
    assert expected in message


@pytest_twisted.ensureDeferred
async def test_invalid_json_message_carries_stderr_tail(write_workspace: WriteWorkspace) -> None:
    with pytest.raises(AnalysisError) as caught:
        await configure(
            write_workspace,
            'import sys; print("{oops"); print("the reason", file=sys.stderr)',
            ["out/1"],
        )
    assert "'{oops'" in str(caught.value)
    assert str(caught.value).endswith("stderr:\nthe reason")


@pytest_twisted.ensureDeferred
async def test_command_that_cannot_start_is_named(write_workspace: WriteWorkspace) -> None:
    ws = write_workspace({"job": (r"out/.*", "")})
    job = ws.job("job")
    with pytest.raises(AnalysisError) as caught:
        await run_config(reactor, ws, job, ["./no-such-program"], ["out/1"], 30.0)
    assert "job 'job': config for out/1 could not be started (./no-such-program)" in str(
        caught.value
    )
    assert "No such file or directory" in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_hanging_config_is_killed_with_its_whole_group(
    write_workspace: WriteWorkspace, tmp_path: Path
) -> None:
    with pytest.raises(AnalysisError) as caught:
        await configure(
            write_workspace,
            """
            import subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open("grandchild.pid", "w").write(str(child.pid))
            print("waiting forever", file=sys.stderr, flush=True)
            time.sleep(60)
            """,
            ["out/1"],
            timeout_s=1.0,
        )
    message = str(caught.value)
    assert message.startswith("job 'job': config for out/1 timed out after 1 s and was killed")
    assert message.endswith("stderr:\nwaiting forever")
    grandchild = int((tmp_path / "ws" / "grandchild.pid").read_text())
    await poll_until_async(lambda: not alive(grandchild), "the grandchild to be gone")


def test_argv_batches_split_by_size_and_keep_order() -> None:
    refs = [f"r/{i:03d}" for i in range(10)]  # 6 bytes each, 7 with the separator
    assert list(argv_batches(refs, limit=21)) == [
        tuple(refs[0:3]),
        tuple(refs[3:6]),
        tuple(refs[6:9]),
        tuple(refs[9:]),
    ]
    assert list(argv_batches(["x" * 50], limit=10)) == [("x" * 50,)]
    assert list(argv_batches([])) == []
