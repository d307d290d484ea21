"""A child for the tether test: a stand-in service whose jobs the tether holds.

Starts a Tether and two jobs in their own sessions: ``held``, a shell with a background
``sleep``, held until this process dies, and ``released``, a ``sleep`` released at once.
Prints ``{"held": [leader, grandchild], "released": pid}`` and waits to be killed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import react

from databuild.proc.process import spawn
from databuild.proc.tether import Tether


async def start(reactor: Any) -> None:
    tether = Tether(reactor)
    tether.startService()
    grandchild: Deferred[str] = Deferred()
    held = await spawn(reactor, ["sh", "-c", "sleep 300 & echo $!; wait"], cwd=os.getcwd(),
                       env=os.environ, on_line=lambda stream, text: grandchild.callback(text))
    released = await spawn(reactor, ["sleep", "300"], cwd=os.getcwd(), env=os.environ)
    tether.hold(held.pgid)
    tether.hold(released.pgid)
    tether.release(released.pgid)
    print(json.dumps({"held": [held.pid, int(await grandchild)], "released": released.pid}))
    sys.stdout.flush()
    await Deferred()  # until killed


def main() -> None:
    react(lambda reactor: ensureDeferred(start(reactor)))


if __name__ == "__main__":
    main()
