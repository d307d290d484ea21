"""Test probe: records how every job process was started.

Python imports ``sitecustomize`` from its path at start. The end-to-end tests put this directory
on the ``PYTHONPATH`` of the service they start, so each Python process of a job's ``exec``
appends one JSON line to ``$DATABUILD_TEST_EXEC_RECORD``: its ``sys.argv`` and its job run. A
``py_binary`` run from bazel-bin records two lines: Bazel's launcher (run as
``bazel-bin/<package>/<name>``), then the job's own interpreter on the script in the runfiles.
"""

import json
import os
import sys

_RECORD = os.environ.get("DATABUILD_TEST_EXEC_RECORD")

if _RECORD and os.environ.get("DATABUILD_JOB_RUN_ID"):
    _line = json.dumps(
        {
            "argv": sys.argv,
            "job_run_id": os.environ["DATABUILD_JOB_RUN_ID"],
            "job_label": os.environ.get("DATABUILD_JOB_LABEL"),
            "outputs": json.loads(os.environ.get("DATABUILD_OUTPUTS", "[]")),
        }
    )
    _fd = os.open(_RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(_fd, (_line + "\n").encode())
    finally:
        os.close(_fd)
