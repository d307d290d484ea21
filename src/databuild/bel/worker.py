"""One thread for one connection: calls run on it one at a time, in order, off the reactor.

Twisted's ``ThreadPool`` with one thread does the same through a coordinator, a context and a
result callback per call. A log that commits 50 appends at a time hands its thread a call and
gets the result back once per commit, and those steps sit between one commit and the next,
while neither thread works (docs/performance.md, "Third step").
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure

from databuild.bel.backend import EventLogError

_P = ParamSpec("_P")
_T = TypeVar("_T")

_Call = tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Worker:
    """A thread of its own that runs the calls given to it, each result a Deferred that
    fires on the reactor's thread."""

    def __init__(self, reactor: IReactorFromThreads, name: str) -> None:
        self._reactor = reactor
        self._name = name
        self._calls: SimpleQueue[_Call | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name=self._name)
        self._thread.start()

    def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        """Run ``fn(*args, **kwargs)`` on the thread after the calls given before it."""
        if self._stopped:
            return fail(EventLogError(f"thread {self._name} has stopped"))
        done: Deferred[_T] = Deferred()
        self._calls.put((done, fn, args, kwargs))
        return done

    def stop(self) -> None:
        """Let the calls given so far finish, then end the thread (waiting for it, as
        ``ThreadPool.stop`` does). Stopping twice, or before starting, is harmless."""
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self._calls.put(None)
            self._thread.join()

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            done, fn, args, kwargs = call
            deliver: Callable[[Any], None]
            try:
                outcome, deliver = fn(*args, **kwargs), done.callback
            except BaseException:
                outcome, deliver = Failure(), done.errback
            self._reactor.callFromThread(deliver, outcome)
            # Hold nothing of this call (a cursor, a batch of events) while waiting for the next.
            del call, done, fn, args, kwargs, outcome, deliver
