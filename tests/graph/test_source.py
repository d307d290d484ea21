"""Following the graph file (SPEC §5.7): stat first, hash to decide, reload and say what changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from databuild.graph.source import GraphChange, GraphFileInvalid, GraphSource

HEAD = '[graph]\nlabel = "g"\n'


def job(label: str, command: str = "a.py") -> str:
    return f'\n[[jobs]]\nlabel = "{label}"\noutputs = ["{label}/.+"]\ncommand = ["{command}"]\n'


def write(root: Path, text: str, name: str = "databuild.toml") -> None:
    path = root / name
    path.write_text(text)
    # An edit within the same mtime tick of the file system still changes size or mtime_ns.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_file_whose_size_and_mtime_are_unchanged_is_not_read_again(tmp_path: Path) -> None:
    write(tmp_path, HEAD + job("a"))
    source = GraphSource.load(tmp_path)
    first = source.current()
    path = tmp_path / "databuild.toml"
    stat = path.stat()
    path.write_text(HEAD + job("b"))  # same size, and the mtime put back: the stat says "same"
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.current() is first and first.has_job("a")
    assert source.describe() == {
        "label": "g", "fingerprint": first.fingerprint, "loaded_at": source.loaded_at
    }


def test_a_touched_file_with_the_same_content_is_not_loaded_again(tmp_path: Path) -> None:
    write(tmp_path, HEAD + job("a"))
    source = GraphSource.load(tmp_path)
    before, loaded_at = source.current(), source.loaded_at
    write(tmp_path, HEAD + job("a"))
    assert source.current() is before and source.loaded_at == loaded_at


def test_a_changed_file_is_loaded_again_and_the_change_named(tmp_path: Path) -> None:
    write(tmp_path, HEAD + job("a") + job("b"))
    source = GraphSource.load(tmp_path)
    old = source.current()
    write(tmp_path, HEAD + job("a", "other.py") + job("c"))
    new = source.current()
    assert new.fingerprint != old.fingerprint and new.has_job("c") and not new.has_job("b")
    change = GraphChange.between(old, new)
    assert (change.added, change.removed, change.changed) == (("c",), ("b",), ("a",))
    assert change.describe() == "jobs added: c; jobs removed: b; jobs changed: a"


def test_an_invalid_file_is_refused_and_the_graph_before_kept_until_it_is_fixed(
    tmp_path: Path,
) -> None:
    write(tmp_path, HEAD + job("a"))
    source = GraphSource.load(tmp_path)
    good = source.current()
    write(tmp_path, HEAD + job("a") + "[[jobs]\n")
    for _ in range(2):
        with pytest.raises(GraphFileInvalid, match=r"databuild.toml: invalid TOML: .*line 8"):
            source.current()
    assert source.workspace is good
    write(tmp_path, HEAD + job("a") + job("b"))
    assert source.current().has_job("b")


def test_the_custom_lookup_file_is_followed_too(tmp_path: Path) -> None:
    write(tmp_path, HEAD.replace('"g"\n', '"g"\nlookup = ["python3", "lookup.py"]\n') + job("a"))
    write(tmp_path, "print('{}')\n", "lookup.py")
    source = GraphSource.load(tmp_path)
    before = source.current().fingerprint
    write(tmp_path, "print('{}')  # changed\n", "lookup.py")
    after = source.current()
    assert after.fingerprint != before and after.lookup == ("python3", "lookup.py")
