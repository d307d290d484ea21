"""What a service is started with that its clients compare with their own (SPEC §6, "Restarting
a service that no longer fits"): the version and the event-log setting; and which of its
environment's entries are DataBuild's secrets, never passed on to a service or a job. A light
module: the CLI reads it on every call."""

from __future__ import annotations

from collections.abc import Mapping

import databuild

ENV_EVENT_LOG = "DATABUILD_BUILD_EVENT_LOG"
DEFAULT_EVENT_LOG = ".databuild/bel.sqlite"
ENV_SERVICE_TOKEN = "DATABUILD_SERVICE_TOKEN"
"""A client's token for the service at ``DATABUILD_SERVICE_URL``: a team service's key."""
ENV_VERSION = "DATABUILD_TEST_SERVICE_VERSION"
"""A test hook (docs/service.md): the version a service reports instead of the package's, so
that a test can run a service that differs from its CLI honestly."""


def reported_version(environ: Mapping[str, str]) -> str:
    """The version a service started with ``environ`` reports."""
    return environ.get(ENV_VERSION) or databuild.__version__


CLIENT_SECRETS = (ENV_SERVICE_TOKEN,)
"""What only a client uses: a service started by a CLI is not given it."""
JOB_SECRETS = (*CLIENT_SECRETS, ENV_EVENT_LOG)
"""What no job gets: the client's token, and the event log's URI (it may hold a password; only
the service writes the log)."""


def without(environ: Mapping[str, str], secrets: tuple[str, ...]) -> dict[str, str]:
    """A copy of ``environ`` without the entries named in ``secrets``."""
    return {name: value for name, value in environ.items() if name not in secrets}
