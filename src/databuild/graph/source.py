"""Following the workspace (SPEC §5.7): the graph as the files on disk say it is now.

A :class:`GraphSource` holds the graph last loaded from ``databuild.toml`` and, for a custom
lookup, the lookup executable's file. :meth:`GraphSource.current` is called by every request
that needs the graph: it stats the files (size and mtime in nanoseconds) and, only when one of
them changed, reads them and compares their content hash; when that differs too, it loads the
graph again. The files are small and local, and a request that needs the graph goes on to run
processes, so the stat (and, rarely, a read) happens on the reactor thread.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from attrs import define, evolve, frozen
from twisted.logger import Logger

from databuild.errors import GraphFileError
from databuild.graph.workspace import Workspace, parse_workspace
from databuild.startup import GRAPH_FILE

Stamp = tuple[int, int] | None
"""A file's ``(size, mtime_ns)``, or None when it cannot be stat'ed."""

FINGERPRINT_CHARS = 16


class GraphFileInvalid(GraphFileError):
    """The graph file changed and no longer loads; the request that needed it is refused."""

    code = "graph_file_invalid"


@frozen
class GraphChange:
    """How one graph differs from the one before it, by job label."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    @classmethod
    def between(cls, old: Workspace, new: Workspace) -> GraphChange:
        before = {job.label: job for job in old.jobs}
        after = {job.label: job for job in new.jobs}
        return cls(
            added=tuple(label for label in after if label not in before),
            removed=tuple(label for label in before if label not in after),
            changed=tuple(
                label for label, job in after.items() if label in before and before[label] != job
            ),
        )

    def describe(self) -> str:
        """``jobs added: a; changed: b`` (or a word on what else changed)."""
        parts = [
            f"{what}: {', '.join(labels)}"
            for what, labels in (
                ("jobs added", self.added),
                ("jobs removed", self.removed),
                ("jobs changed", self.changed),
            )
            if labels
        ]
        return "; ".join(parts) or "no job changed (other settings or the lookup did)"


def lookup_files(workspace: Workspace) -> tuple[Path, ...]:
    """The files of a custom lookup command: its words naming a file under the workspace."""
    if workspace.lookup is None:
        return ()
    found = []
    for word in workspace.lookup:
        path = workspace.root / word
        if path.is_file():
            found.append(path)
    return tuple(dict.fromkeys(found))


def _stamp(path: Path) -> Stamp:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise GraphFileInvalid(f"{path}: no such file") from None
    except OSError as e:
        raise GraphFileInvalid(f"{path}: cannot be read: {e}") from None


def fingerprint(graph_file: bytes, lookup: Sequence[tuple[Path, bytes]]) -> str:
    """The hash of the graph file and the lookup's files, as hex."""
    digest = hashlib.sha256(graph_file)
    for path, content in lookup:
        digest.update(b"\0" + str(path).encode() + b"\0" + content)
    return digest.hexdigest()[:FINGERPRINT_CHARS]


@define
class GraphSource:
    """The workspace's graph, loaded again whenever its files change."""

    root: Path
    workspace: Workspace
    loaded_at: int
    """When ``workspace`` was loaded, Unix nanoseconds."""
    _stamps: dict[Path, Stamp]
    log = Logger()

    @classmethod
    def load(cls, root: Path) -> GraphSource:
        """The graph of the workspace at ``root`` as it is now; raises GraphFileError."""
        root = Path(root).resolve()
        workspace, stamps = cls._load(root)
        return cls(root, workspace, time.time_ns(), stamps)

    @staticmethod
    def _load(root: Path) -> tuple[Workspace, dict[Path, Stamp]]:
        graph_file = root / GRAPH_FILE
        stamps = {graph_file: _stamp(graph_file)}
        content = _read(graph_file)
        workspace = parse_workspace(root, content)
        lookup = []
        for path in lookup_files(workspace):
            stamps[path] = _stamp(path)
            lookup.append((path, _read(path)))
        return evolve(workspace, fingerprint=fingerprint(content, lookup)), stamps

    @property
    def fingerprint(self) -> str:
        return self.workspace.fingerprint

    def describe(self) -> dict[str, object]:
        """The ``graph`` field of ``GET /api/v1/health``."""
        return {
            "label": self.workspace.label,
            "fingerprint": self.fingerprint,
            "loaded_at": self.loaded_at,
        }

    def _same_content(self) -> bool:
        """Whether the files, touched since, still hash as the loaded graph (say, a ``touch``
        or an edit undone); then their new stamps are kept and nothing is loaded."""
        stamps = {path: _stamp(path) for path in self._stamps}
        graph_file, *lookup = self._stamps
        content = fingerprint(_read(graph_file), [(path, _read(path)) for path in lookup])
        if content != self.fingerprint:
            return False
        self._stamps = stamps
        return True

    def current(self) -> Workspace:
        """The graph as the files say now, loaded again if they changed.

        Raises GraphFileInvalid (the loader's message) when a changed file does not load; the
        graph loaded before stays, and the next call tries again.
        """
        if all(_stamp(path) == stamp for path, stamp in self._stamps.items()):
            return self.workspace
        try:
            if self._same_content():
                return self.workspace
            workspace, stamps = self._load(self.root)
        except GraphFileError as e:
            self.log.warn(
                "{graph_file} changed but does not load; requests that need the graph are "
                "refused until it is fixed: {problem}",
                graph_file=str(self.root / GRAPH_FILE),
                problem=str(e),
            )
            raise GraphFileInvalid(str(e)) from None
        self._stamps = stamps
        if workspace.fingerprint != self.fingerprint:
            change = GraphChange.between(self.workspace, workspace)
            self.log.info(
                "graph {label} reloaded, fingerprint {old_fingerprint} -> {fingerprint}: "
                "{change}",
                label=workspace.label,
                old_fingerprint=self.fingerprint,
                fingerprint=workspace.fingerprint,
                change=change.describe(),
                jobs_added=list(change.added),
                jobs_removed=list(change.removed),
                jobs_changed=list(change.changed),
            )
            self.workspace = workspace
            self.loaded_at = time.time_ns()
        return self.workspace
