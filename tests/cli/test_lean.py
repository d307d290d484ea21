"""The CLI stays thin: no other DataBuild room, and nothing heavy before the arguments are good."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from importlib.resources import files


def modules_after(code: str) -> list[str]:
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout)


# Standard library only: /proc reading, ref expansion and its errors, and the rules a service
# is started by (its version, its event-log setting and where that puts the log).
SHARED = {
    "databuild", "databuild.proc", "databuild.proc.info", "databuild.startup", "databuild.refs",
    "databuild.errors",
}


def test_the_client_imports_no_other_room_of_databuild() -> None:
    loaded = modules_after(
        "import databuild.cli.main, databuild.cli.commands, databuild.cli.progress, "
        "databuild.cli.stream, databuild.refs"
    )
    rooms = {m for m in loaded if m.startswith("databuild.") and not m.startswith("databuild.cli")}
    assert rooms <= SHARED


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an ``import`` anywhere in ``tree`` names, inside functions too."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(  # ``from databuild import startup`` names a module too
                f"{node.module}.{alias.name}" for alias in node.names
                if _is_module(f"{node.module}.{alias.name}")
            )
    return names


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):  # not a package; a module without a spec
        return False


def test_no_client_module_imports_another_room_even_inside_a_function() -> None:
    """What a command imports only when it runs is not seen by loading the modules."""
    found = {}
    for source in files("databuild.cli").iterdir():
        if source.name.endswith(".py"):
            names = imported_modules(ast.parse(source.read_text(encoding="utf-8")))
            others = {
                n for n in names
                if n.startswith("databuild") and not n.startswith("databuild.cli")
                and n not in SHARED
            }
            if others:
                found[source.name] = sorted(others)
    assert found == {}


def test_parsing_arguments_loads_neither_twisted_nor_treq() -> None:
    loaded = modules_after(
        "from databuild.cli.args import parse_args; parse_args(['builds', 'list'])"
    )
    assert not [m for m in loaded if m.split(".")[0] in ("twisted", "treq", "attr", "attrs")]


def test_a_list_command_does_not_load_progress_rendering() -> None:
    loaded = modules_after("import databuild.cli.main, databuild.cli.commands")
    assert "databuild.cli.progress" not in loaded
    assert "databuild.cli.stream" not in loaded


COLLECTOR = """
import gc, json, sys
from databuild.cli import main as cli
seen = {}
def command_body():
    seen["loading"] = gc.isenabled()
    cli.settled()
    seen["running"] = gc.isenabled()
    seen["frozen_running"] = gc.get_freeze_count()
    cli.made_while_running = [[] for _ in range(100)]
    return 3
cli.main = command_body
code = cli.command()
seen["frozen_at_exit"] = gc.get_freeze_count()
print(json.dumps(seen))
sys.exit(code)
"""


def test_the_console_script_keeps_the_collector_off_what_it_loaded_and_on_for_the_rest() -> None:
    done = subprocess.run([sys.executable, "-c", COLLECTOR], capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    seen = json.loads(done.stdout)
    assert seen["loading"] is False  # no collection while the modules load
    assert seen["running"] is True  # a build streaming for hours collects its garbage
    assert seen["frozen_running"] > 0  # but never walks the modules again
    assert seen["frozen_at_exit"] > seen["frozen_running"]  # nor on the way out


def test_in_a_process_that_goes_on_the_cli_leaves_the_collector_alone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import gc; from databuild.cli.main import settled; settled();"
         " print(gc.isenabled(), gc.get_freeze_count())"],
        capture_output=True, text=True, check=True,
    )
    assert done.stdout.split() == ["True", "0"]
