"""The cheapest job there is, in ``sh``, for tests and benchmarks of many runs.

Its ``config`` answers every ref it is given in one call, one run per ref
(``{"outputs": [ref], "args": [ref]}``, no inputs); its ``exec`` runs the body it is given.
"""

from __future__ import annotations

_CONFIG = """\
if [ "$1" = config ]; then
  shift
  printf '{"configs": ['
  sep=
  for ref in "$@"; do
    printf '%s{"outputs": ["%s"], "args": ["%s"]}' "$sep" "$ref" "$ref"
    sep=,
  done
  printf ']}\\n'
  exit 0
fi
"""


def one_run_per_ref(exec_body: str = "exit 0") -> str:
    """The script of such a job, whose ``exec`` runs ``exec_body``."""
    return f"{_CONFIG}{exec_body}\n"
