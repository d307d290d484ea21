"""Idle shutdown (SPEC §5.2): a timer armed only while nothing holds the service busy."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger


class IdleTimer(Service):
    """Calls ``on_idle`` once the service has been idle for ``timeout_s`` seconds.

    Whatever keeps the service busy (a request in flight, an open progress stream, a running
    build) takes a :meth:`hold` and releases it when done; each release restarts the full
    timeout, so every API call resets the timer. A timeout of 0 never fires.
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, timeout_s: float, on_idle: Callable[[], object]
    ) -> None:
        self._clock = clock
        self.timeout_s = timeout_s
        self._on_idle = on_idle
        self._holds = 0
        self._call: IDelayedCall | None = None

    @property
    def armed(self) -> bool:
        """Whether the idle countdown is running."""
        return self._call is not None

    @property
    def busy(self) -> bool:
        """Whether anything holds the service busy."""
        return self._holds > 0

    def hold(self) -> Callable[[], None]:
        """Mark the service busy; call the returned function (any number of times) to end it."""
        self._holds += 1
        self._disarm()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._holds -= 1
                self._arm()

        return release

    def startService(self) -> None:
        super().startService()
        self._arm()

    def stopService(self) -> None:
        super().stopService()
        self._disarm()

    def _arm(self) -> None:
        if self.running and self._holds == 0 and self.timeout_s > 0 and self._call is None:
            self._call = self._clock.callLater(self.timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _expire(self) -> None:
        self._call = None
        self.log.info(
            "idle for {idle_timeout_s} s (no build, stream or request): shutting down",
            idle_timeout_s=self.timeout_s,
            shutdown_reason="idle",
        )
        self._on_idle()
