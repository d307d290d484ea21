"""The graph: ``databuild.toml``, lookup, the ``config`` side of the job protocol, analysis."""

from databuild.graph.analysis import AvailableQuery, analyze
from databuild.graph.commands import CommandResolver, plain_commands
from databuild.graph.config import run_config
from databuild.graph.lookup import lookup, match_job
from databuild.graph.workspace import (
    BazelSettings,
    JobSpec,
    ServiceSettings,
    Workspace,
    load_workspace,
)

__all__ = [
    "AvailableQuery",
    "BazelSettings",
    "CommandResolver",
    "JobSpec",
    "ServiceSettings",
    "Workspace",
    "analyze",
    "load_workspace",
    "lookup",
    "match_job",
    "plain_commands",
    "run_config",
]
