"""Exit codes of the ``databuild`` command (SPEC §6), the error that carries one, and how
both errors and remarks reach the person at the terminal."""

from __future__ import annotations

from typing import TextIO

from databuild.cli.render import visible

OK = 0
BUILD_FAILED = 1
USAGE = 2
UNAVAILABLE = 3
NOT_FOUND = 4
CANCELLED = 8

BUILD_EXIT_CODES = {
    "BUILD_REQUEST_COMPLETED": OK,
    "BUILD_REQUEST_FAILED": BUILD_FAILED,
    "BUILD_REQUEST_CANCELLED": CANCELLED,
}


class CliError(Exception):
    """A failure to report as one sentence on stderr, ending the command with ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def exit_code_for_http(status: int) -> int:
    """The exit code for an API error answer with HTTP ``status`` (SPEC §5.4)."""
    if status == 404:
        return NOT_FOUND
    if 400 <= status < 500 and status != 401:
        return USAGE
    return UNAVAILABLE


def say(err: TextIO, text: str) -> None:
    """A remark or an error for people: on stderr, never mixed with the output, with what the
    service said escaped (``render.visible``)."""
    err.write(f"databuild: {visible(text)}\n")
    err.flush()
