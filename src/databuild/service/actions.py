"""What a client asks the service to do, whichever door it came in by (API or dashboard).

The API's routes and the dashboard's pages are two ways of serving one set of actions; this is
the one place below both that owns them: a build is submitted with the graph the workspace has
*now* (SPEC §5.7) and holds the service busy until it ends (SPEC §5.2); an analysis uses the
current graph too; a cancellation is the orchestrator's. A door adds only how it is asked
(JSON or a form) and how it answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from databuild.graph.source import GraphSource
from databuild.graph.workspace import Workspace
from databuild.model import JobGraph, describe_refs
from databuild.orchestrator import Orchestrator
from databuild.service.idle import IdleTimer


@frozen
class Analysis:
    """The job graph a build would run, and the graph file's fingerprint it was planned with."""

    job_graph: JobGraph
    graph_fingerprint: str


class Actions:
    """Submit, retry, analyze and cancel builds for every door of one service."""

    log = Logger()

    def __init__(self, orchestrator: Orchestrator, graph: GraphSource, idle: IdleTimer) -> None:
        self._orchestrator = orchestrator
        self._graph = graph
        self._idle = idle

    @property
    def active_builds(self) -> int:
        return self._orchestrator.active_builds

    @property
    def workspace(self) -> Workspace:
        """The graph as last loaded, not read again (what pages describe it by)."""
        return self._graph.workspace

    def describe_graph(self) -> dict[str, object]:
        """The graph as last loaded (``graph`` of ``GET /api/v1/health``)."""
        return self._graph.describe()

    def submit(self, refs: Sequence[str], force: bool, *, door: str) -> Deferred[str]:
        """Start a build of ``refs`` with the current graph; fires with its id once RECEIVED
        is stored. The service stays busy until the build ends. ``door`` (``API``,
        ``dashboard``) is only said in the log. Errbacks as ``Orchestrator.submit`` does, and
        with GraphFileInvalid when the edited graph file does not load."""
        return ensureDeferred(self._submit(refs, force, door))

    async def _submit(self, refs: Sequence[str], force: bool, door: str) -> str:
        workspace = self._graph.current()
        build_id = await self._orchestrator.submit(refs, force, workspace)
        self.log.info(
            "build {build_request_id} requested from the {door}: {partitions}{forced}",
            build_request_id=build_id,
            door=door,
            partitions=describe_refs(refs),
            forced=" (forced)" if force else "",
        )
        self._hold_while_running(build_id)
        return build_id

    def retry(self, build_request_id: str) -> Deferred[tuple[str | None, tuple[str, ...]]]:
        """Build again, with the current graph, what a final build requested and is not
        AVAILABLE now (SPEC §9); fires with the new build's id and its refs, or ``(None, ())``
        when nothing is left. The new build holds the service busy like any other."""
        return ensureDeferred(self._retry(build_request_id))

    async def _retry(self, build_request_id: str) -> tuple[str | None, tuple[str, ...]]:
        new_id, refs = await self._orchestrator.retry(build_request_id, self._graph.current())
        if new_id is not None:
            self.log.info(
                "build {build_request_id} retries build {retry_of}: {partitions}",
                build_request_id=new_id,
                retry_of=build_request_id,
                partitions=describe_refs(refs),
            )
            self._hold_while_running(new_id)
        return new_id, refs

    def analyze(self, refs: Sequence[str]) -> Deferred[Analysis]:
        """The job graph a build of ``refs`` would run now; nothing is run or recorded."""
        return ensureDeferred(self._analyze(refs))

    async def _analyze(self, refs: Sequence[str]) -> Analysis:
        workspace = self._graph.current()
        job_graph = await self._orchestrator.analyze(refs, workspace)
        return Analysis(job_graph, workspace.fingerprint)

    def cancel_build(self, build_request_id: str) -> Deferred[None]:
        """Cancel a live build; fires once its cancellation is recorded."""
        return self._orchestrator.cancel_build(build_request_id)

    def cancel_task(self, job_run_id: str) -> Deferred[None]:
        """Cancel one job run; fires once it is final."""
        return self._orchestrator.cancel_task(job_run_id)

    def _hold_while_running(self, build_id: str) -> None:
        """Keep the service from idling out until the build finishes."""
        release = self._idle.hold()

        def ended(result: object) -> None:
            release()
            if isinstance(result, Failure):
                self.log.failure(
                    "cannot watch build {build_request_id}", result, build_request_id=build_id
                )

        self._orchestrator.ended(build_id).addBoth(ended)
