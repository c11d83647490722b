"""Riding out a Redis that went away: the one reconnect-with-backoff helper of long-running processes."""

from __future__ import annotations

import threading

from queuing_system.console import backoff, not_connected


class Reconnection:
    """Between attempts: the not-connected line for each failed one, a capped doubling wait
    (`console.backoff`), cut short by `stop`; the wait starts small again once Redis answers."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop if stop is not None else threading.Event()
        self._delays = backoff()

    def failed(self, error: BaseException) -> None:
        """Say that Redis is away, then wait before the next attempt."""
        not_connected(error)
        self.wait()

    def wait(self) -> None:
        """Wait the next delay (at once when a stop is requested)."""
        self._stop.wait(next(self._delays))

    def succeeded(self) -> None:
        self._delays = backoff()
