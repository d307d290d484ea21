"""A child for the tether test: a stand-in service whose jobs the tether holds.

Starts a Tether and two jobs in their own sessions: ``held``, a shell with a background
``sleep``, held until this process dies, and ``released``, a ``sleep`` released at once.
Prints ``{"held": [leader, grandchild], "released": pid}`` and waits to be killed.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from databuild.proc.process import spawn
from databuild.proc.tether import Tether


def main() -> None:
    tether = Tether(reactor)
    tether.startService()
    grandchild: Deferred[str] = Deferred()
    held = spawn(reactor, ["sh", "-c", "sleep 300 & echo $!; wait"], cwd=os.getcwd(),
                 env=os.environ, on_line=lambda stream, text: grandchild.callback(text))
    released = spawn(reactor, ["sleep", "300"], cwd=os.getcwd(), env=os.environ)
    tether.hold(held.pgid)
    tether.hold(released.pgid)
    tether.release(released.pgid)

    def report(pid: str) -> None:
        print(json.dumps({"held": [held.pid, int(pid)], "released": released.pid}))
        sys.stdout.flush()

    grandchild.addCallback(report)
    reactor.run()


if __name__ == "__main__":
    main()
