"""Errors DataBuild reports to users; each message names the thing that is wrong."""


class DataBuildError(Exception):
    """Base of every error DataBuild reports to a user (never a traceback)."""

    code = "error"


class InvalidRefError(DataBuildError, ValueError):
    """A partition ref that breaks the rules of SPEC §1."""

    code = "invalid_ref"


class GraphFileError(DataBuildError):
    """``databuild.toml`` is missing or invalid."""

    code = "invalid_graph"


class JobProtocolError(DataBuildError):
    """A job broke the job protocol (bad JSON, wrong shape, missing refs)."""

    code = "job_protocol"


class LookupFailed(DataBuildError):
    """No job, or more than one job, produces a ref."""

    code = "lookup_failed"


class AnalysisError(DataBuildError):
    """Analysis of a build request failed (a job's config failed, a cycle, ...)."""

    code = "analysis_failed"


class NotFound(DataBuildError):
    """An unknown build, job run, partition or job."""

    code = "not_found"


class Conflict(DataBuildError):
    """The request does not fit the current state (e.g. cancelling a finished build)."""

    code = "conflict"
