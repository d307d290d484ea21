"""The CLI stays thin: no other DataBuild room, and nothing heavy before the arguments are good."""

from __future__ import annotations

import json
import subprocess
import sys


def modules_after(code: str) -> list[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


def test_the_client_imports_no_other_room_of_databuild() -> None:
    loaded = modules_after(
        "import databuild.cli.main, databuild.cli.commands, databuild.cli.progress, "
        "databuild.cli.stream, databuild.refs"
    )
    # Standard library only: /proc reading, what a service is started with (its version), and
    # ref expansion with the errors it raises.
    shared = {"databuild.proc", "databuild.proc.info", "databuild.startup", "databuild.refs",
              "databuild.errors"}
    rooms = {m for m in loaded if m.startswith("databuild.") and not m.startswith("databuild.cli")}
    assert rooms <= shared


def test_parsing_arguments_loads_neither_twisted_nor_treq() -> None:
    loaded = modules_after(
        "from databuild.cli.args import parse_args; parse_args(['builds', 'list'])"
    )
    assert not [m for m in loaded if m.split(".")[0] in ("twisted", "treq", "attr", "attrs")]


def test_a_list_command_does_not_load_progress_rendering() -> None:
    loaded = modules_after("import databuild.cli.main, databuild.cli.commands")
    assert "databuild.cli.progress" not in loaded
    assert "databuild.cli.stream" not in loaded
