"""``databuild worker``: hands the process over to a Celery worker (SPEC §10).

The CLI stays thin (no other room of DataBuild is imported here): it finds the workspace,
then replaces itself, same pid, with ``python -m databuild.executor.worker`` given the options
as one JSON document; that checks the settings (a bad one exits 2 with one sentence) and runs
the worker until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from databuild.cli.exits import CliError, say
from databuild.cli.servicefiles import resolve_workspace

WORKER_MODULE = "databuild.executor.worker"


def worker(args: argparse.Namespace, environ: Mapping[str, str], cwd: Path, err: TextIO) -> int:
    """Become the worker; returns only when the workspace cannot be found."""
    try:
        root = resolve_workspace(args.workspace, environ, cwd)
    except CliError as e:
        say(err, e.message)
        return e.exit_code
    options = {
        "workspace": str(root),
        "broker": args.broker,
        "event_log": args.event_log,
        "queues": args.queues or [],
        "concurrency": args.concurrency,
        "name": args.name,
        "lease_timeout_s": float(args.lease_timeout),
    }
    err.flush()
    os.execv(sys.executable, [sys.executable, "-m", WORKER_MODULE, json.dumps(options)])
