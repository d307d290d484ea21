"""Build requests: planning, scheduling, delegation, cancellation, recovery, progress fan-out."""

from databuild.orchestrator.hub import ProgressHub, Subscription
from databuild.orchestrator.service import Orchestrator

__all__ = ["Orchestrator", "ProgressHub", "Subscription"]
