"""``databuild worker``: the settings of a Celery worker, checked before it starts (SPEC §10)."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from databuild.cli.exits import OK, USAGE, CliError, say
from databuild.cli.servicefiles import resolve_workspace


def worker(args: argparse.Namespace, environ: Mapping[str, str], cwd: Path, err: TextIO) -> int:
    """Run the worker until it is stopped; a bad setting exits 2 with one sentence."""
    from databuild.bel.backend import EventLogError, parse_uri
    from databuild.errors import GraphFileError
    from databuild.executor.worker import serve
    from databuild.graph import load_workspace
    from databuild.service.settings import DEFAULT_BROKER, DEFAULT_QUEUE, ENV_BROKER
    from databuild.startup import ENV_EVENT_LOG

    try:
        root = resolve_workspace(args.workspace, environ, cwd)
        workspace = load_workspace(root)
        event_log = args.event_log or environ.get(ENV_EVENT_LOG) or workspace.service.event_log
        if not event_log or parse_uri(event_log, root).dialect != "postgresql":
            raise CliError(
                "a worker needs the PostgreSQL event log its services use: give --event-log "
                f"postgresql://... (or ${ENV_EVENT_LOG}, [service] event_log)", USAGE
            )
    except CliError as e:
        say(err, e.message)
        return e.exit_code
    except (GraphFileError, EventLogError) as e:
        say(err, str(e))
        return USAGE
    serve(
        workspace=root,
        broker=args.broker or environ.get(ENV_BROKER) or workspace.executor.broker
        or DEFAULT_BROKER,
        event_log=event_log,
        queues=args.queues or [workspace.executor.queue or DEFAULT_QUEUE],
        concurrency=args.concurrency or os.cpu_count() or 1,
        name=args.name or socket.gethostname(),
        lease_timeout_s=float(args.lease_timeout),
    )
    return OK
