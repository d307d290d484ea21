"""Telling twistd how the start went, once it is known (SPEC §5.1).

twistd reports a daemon's start to the process that launched it through a status pipe, and
writes "started" into it as soon as ``startService`` returns; this service starts
asynchronously (the event log opens on its own thread, the port opens after recovery). So
the service takes the pipe when it starts and writes into it when its start-up Deferred has
fired: ``0`` for a start, ``1 <sentence>`` for a failure, which makes the launching twistd
print the sentence and exit 1. A failed start also makes the service's own process exit 1
(daemonized or not), once twistd has cleaned up, so that a supervisor sees the failure.
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

    def begin(self) -> None:
        """Take the status pipe before twistd reports a start that has not happened yet."""
        if self.twistd_options is not None:
            self._pipe = self.twistd_options.pop(STATUS_PIPE, None)

    def succeeded(self) -> None:
        self._tell(b"0")

    def failed(self, sentence: str) -> None:
        self._tell(b"1 " + sentence.encode("utf-8", "replace")[: _PIPE_BYTES - 2])
        if self.twistd_options is not None:
            atexit.register(_exit_failed)

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
