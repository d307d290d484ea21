"""The Celery application both sides use: one task, no result backend, no Celery retries.

The service owns retries and statuses (SPEC §10): a message is acked when a worker takes it
(``task_acks_late`` off), a worker holds one message per free slot (prefetch 1), and results
go to the event log, never to a Celery backend.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

TASK_NAME = "databuild.run_attempt"


def make_app(broker: str) -> Celery:
    """A Celery app talking to ``broker``; it is nobody's current app."""
    app = Celery("databuild", broker=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        task_create_missing_queues=True,
    )
    return app


def attempt_message(
    job_run: dict[str, Any],
    build_request_id: str,
    argv_prefix: list[str],
    timeout_s: float | None,
    attempt: int,
    epoch: str,
) -> dict[str, Any]:
    """The keyword arguments of one attempt's task (what ``worker.AttemptRunner.run`` takes)."""
    return {
        "job_run": job_run,
        "build_request_id": build_request_id,
        "argv_prefix": argv_prefix,
        "timeout_s": timeout_s,
        "attempt": attempt,
        "epoch": epoch,
    }
