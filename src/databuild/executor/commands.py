"""The command resolver the service uses: plain commands as they are, Bazel targets built first.

The service holds one :class:`JobCommands` per workspace and so is the one owner of Bazel there:
every ``bazel`` command it runs goes through the JobCommands lock, so concurrent builds queue
for Bazel instead of contending for its output base.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorProcess

from databuild.errors import AnalysisError
from databuild.executor.bazel import Bazel, executable_path

if TYPE_CHECKING:
    from databuild.graph import JobSpec, Workspace


@define(eq=False)
class JobCommands:
    """Turns job specs into argv prefixes, building Bazel targets with one ``bazel build``.

    ``resolve`` is a ``CommandResolver`` (docs/architecture.md). ``env`` is the environment of
    the Bazel client (the service's own by default).
    """

    reactor: IReactorProcess
    workspace: Workspace
    env: Mapping[str, str] = field(factory=lambda: dict(os.environ))
    _bazel: Bazel = field(init=False)
    _lock: DeferredLock = field(init=False, factory=DeferredLock)
    _bazel_bin: Path | None = field(init=False, default=None)

    def __attrs_post_init__(self) -> None:
        self._bazel = Bazel(
            reactor=self.reactor,
            root=self.workspace.root,
            command=tuple(self.workspace.bazel.command),
            build_flags=tuple(self.workspace.bazel.build_flags),
            env=self.env,
        )

    def resolve(self, jobs: Sequence[JobSpec]) -> Deferred[dict[str, tuple[str, ...]]]:
        """Job label → argv prefix; builds ``target`` jobs first (AnalysisError if that fails)."""
        return ensureDeferred(self._resolve(jobs))

    async def _resolve(self, jobs: Sequence[JobSpec]) -> dict[str, tuple[str, ...]]:
        argv = {job.label: tuple(job.command) for job in jobs if job.command is not None}
        targets = {job.label: job.target for job in jobs if job.target is not None}
        if not targets:
            return argv
        executables: dict[str, PurePosixPath] = {}
        for label, target in targets.items():
            try:
                executables[label] = executable_path(target)
            except ValueError as e:
                raise AnalysisError(f"job {label}: {e}") from e
        async with self._lock:
            bazel_bin = await self._build(sorted(set(targets.values())))
        for label, target in targets.items():
            path = bazel_bin / executables[label]
            if not os.access(path, os.X_OK):
                raise AnalysisError(
                    f"job {label}: bazel built {target} but there is no executable at {path};"
                    f" a job target must be an executable rule such as py_binary or sh_binary"
                )
            argv[label] = (str(path),)
        return argv

    async def _build(self, targets: Sequence[str]) -> Path:
        """Run ``bazel build`` (and, the first time, ``bazel info``); the lock is held."""
        await self._bazel.build(targets)
        if self._bazel_bin is None:
            self._bazel_bin = Path(await self._bazel.info("bazel-bin"))
        return self._bazel_bin
