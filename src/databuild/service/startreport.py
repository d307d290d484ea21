"""Telling twistd how the start went, once it is known (SPEC §5.1).

twistd reports a daemon's start to the process that launched it through a status pipe, and
writes "started" into it as soon as ``startService`` returns; this service starts
asynchronously (the event log opens on its own thread, the port opens after recovery). So
the service takes the pipe when it starts and writes into it when its start-up Deferred has
fired: ``0`` for a start, ``1 <sentence>`` for a failure, which makes the launching twistd
print the sentence and exit 1. twistd reads only 100 bytes of it and prints them as a Python
bytes literal, so a daemon first writes the whole sentence to the launching twistd's stderr
(held since before it forked: its own stdio is ``/dev/null`` by then). A failed start also
makes the service's own process exit 1 (daemonized or not), once twistd has cleaned up, so
that a supervisor sees the failure.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import MutableMapping
from typing import Any

from attrs import define
from twisted.logger import Logger

STATUS_PIPE = "statusPipe"
"""Where twistd keeps the daemon's end of the status pipe, in its own options."""
_PIPE_BYTES = 100
"""How much of the pipe twistd's launching process reads."""

log = Logger()


@define
class StartReport:
    """The start of one service, told to twistd. ``twistd_options`` is twistd's own options
    (the parent of the plugin's options); None for a service run outside twistd, which is
    told nothing."""

    twistd_options: MutableMapping[str, Any] | None
    _pipe: int | None = None
    _terminal: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.twistd_options is not None and not self.twistd_options.get("nodaemon"):
            self._terminal = os.dup(2)  # still the launching terminal's: twistd forks later

    def begin(self) -> None:
        """Take the status pipe before twistd reports a start that has not happened yet."""
        if self.twistd_options is not None:
            self._pipe = self.twistd_options.pop(STATUS_PIPE, None)

    def succeeded(self) -> None:
        self._say(b"")
        self._tell(b"0")

    def failed(self, sentence: str) -> None:
        whole = sentence.encode("utf-8", "replace")
        self._say(b"twistd databuild: " + whole + b"\n")
        self._tell(b"1 " + whole[: _PIPE_BYTES - 2])
        if self.twistd_options is not None:
            atexit.register(_exit_failed)

    def _say(self, text: bytes) -> None:
        """Write ``text`` where the launching twistd's stderr goes, once."""
        if self._terminal is None:
            return
        terminal, self._terminal = self._terminal, None
        try:
            os.write(terminal, text)
        except OSError:  # nobody reads it any more: the log holds the sentence too
            pass
        finally:
            os.close(terminal)

    def _tell(self, message: bytes) -> None:
        if self._pipe is None:
            return
        pipe, self._pipe = self._pipe, None
        try:
            os.write(pipe, message)
        except OSError as e:  # the launching twistd is gone (killed): nobody to tell
            log.warn("could not tell twistd how the start went: {error}", error=e.strerror)
        finally:
            os.close(pipe)


def _exit_failed() -> None:
    """The last thing the process does after a failed start: exit with status 1."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
