"""One Bazel workspace for every test here: a copy of examples/color_votes_bazel, built offline.

Bazel's first start in a workspace (its server JVM, its output base) is the slow part, so all
tests share one copy, one output base and one server, which end with the last test here
(``bazel clean --expunge``, ``bazel shutdown``). The copy's ``databuild.toml`` gets build flags
that replace the ``rules_cc`` and ``rules_java`` repositories Bazel would download with the
stand-ins in ``offline/``; the example itself stays usable with a networked Bazel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent.parent / "examples"
OFFLINE = HERE / "offline"
PACKAGES = HERE / "packages"
# Startup options of every Bazel command in these tests; a server left behind exits by itself.
BAZEL = ("bazel", "--max_idle_secs=900")
OFFLINE_FLAGS = (
    f"--override_repository=rules_cc={OFFLINE / 'rules_cc'}",
    f"--override_repository=rules_java={OFFLINE / 'rules_java'}",
)
EXAMPLE_BAZEL_TABLE = '[bazel]\ncommand = ["bazel"]\nbuild_flags = []\n'


def toml_array(values: tuple[str, ...] | list[str]) -> str:
    return json.dumps(list(values))


def job_env() -> dict[str, str]:
    """The environment for the CLI, the service and so the jobs: this venv's python first.

    A py_binary's launcher runs the first ``python3`` on PATH.
    """
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("DATABUILD_WORKSPACE", "DATABUILD_SERVICE_URL", "DATABUILD_SERVICE_TOKEN"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="package")
def bazel_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The Bazel example with its plain sibling (whose job sources it builds), ready offline.

    Holds the test-only packages too: ``//broken``, whose target cannot be built, and ``//slow``,
    whose build only ends when it is stopped.
    """
    examples = tmp_path_factory.mktemp("examples")
    ignore = shutil.ignore_patterns(".databuild", "data", "bazel-*")
    for name in ("color_votes", "color_votes_bazel"):
        shutil.copytree(EXAMPLES / name, examples / name, symlinks=True, ignore=ignore)
    root = examples / "color_votes_bazel"
    for package in PACKAGES.iterdir():
        shutil.copytree(package, root / package.name)
    graph = root / "databuild.toml"
    text = graph.read_text()
    assert EXAMPLE_BAZEL_TABLE in text, "the example's [bazel] table changed; update this fixture"
    graph.write_text(
        text.replace(
            EXAMPLE_BAZEL_TABLE,
            f"[bazel]\ncommand = {toml_array(BAZEL)}\nbuild_flags = {toml_array(OFFLINE_FLAGS)}\n",
        )
        # Any free port: the tests never depend on 8080 (or any one port) being free.
        + "\n[service]\nport = 0\n"
    )
    try:
        yield root
    finally:
        _reap_when_it_exits(_server_pid(root))
        for command in ("clean", "--expunge"), ("shutdown",):
            subprocess.run(
                [*BAZEL, *command],
                cwd=root,
                env=job_env(),
                capture_output=True,
                timeout=300,
                check=False,
            )


def _server_pid(root: Path) -> int | None:
    info = subprocess.run(
        [*BAZEL, "info", "server_pid"], cwd=root, env=job_env(), capture_output=True,
        text=True, timeout=300, check=False,
    )
    return int(info.stdout) if info.returncode == 0 and info.stdout.strip().isdigit() else None


def _reap_when_it_exits(pid: int | None) -> None:
    """Reap Bazel's server once it exits, if it is this process's child.

    This process starts programs through ``databuild.proc``, which makes it a child
    subreaper: the server Bazel daemonizes becomes its child. Unreaped, its zombie would make
    ``bazel clean --expunge`` wait 70 s for it to die.
    """
    def reap() -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    if pid is not None:
        threading.Thread(target=reap, name="reap-bazel-server", daemon=True).start()
