"""What a service is started with that its clients compare with their own (SPEC §6, "Restarting
a service that no longer fits"): the version and the event-log setting. A light module: the CLI
reads it on every call."""

from __future__ import annotations

from collections.abc import Mapping

import databuild

ENV_EVENT_LOG = "DATABUILD_BUILD_EVENT_LOG"
DEFAULT_EVENT_LOG = ".databuild/bel.sqlite"
ENV_VERSION = "DATABUILD_TEST_SERVICE_VERSION"
"""A test hook (docs/service.md): the version a service reports instead of the package's, so
that a test can run a service that differs from its CLI honestly."""


def reported_version(environ: Mapping[str, str]) -> str:
    """The version a service started with ``environ`` reports."""
    return environ.get(ENV_VERSION) or databuild.__version__
