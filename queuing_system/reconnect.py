"""Riding out a Redis that went away or said no: the one reconnect-with-backoff helper of
long-running processes, and the one line each kind of fault gets."""

from __future__ import annotations

import threading

from redis.exceptions import RedisError

from queuing_system.console import backoff, means_not_connected, not_connected, say
from queuing_system.refusals import said

# Every fault a long-running process rides out: Redis away (connection errors, timeouts), a server
# that is not Redis, and Redis answering with an error (OOM, BUSY, LOADING, READONLY, MASTERDOWN, …).
REDIS_FAULTS = (RedisError,)


def refused(error: BaseException) -> None:
    """The line for Redis answering a command with an error: what Redis said, in its words."""
    say(f"Redis refused a command: {said(error)}")


def say_fault(error: BaseException) -> None:
    if means_not_connected(error):  # the one classifier: away, silent, not Redis, no such database
        not_connected(error)
    else:
        refused(error)


class Reconnection:
    """Between attempts: one line for each failed one (not connected, or what Redis refused), a capped
    doubling wait (`console.backoff`), cut short by `stop`; the wait starts small again once Redis
    answers."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop if stop is not None else threading.Event()
        self._delays = backoff()

    def failed(self, error: BaseException) -> None:
        """Say what went wrong, then wait before the next attempt."""
        say_fault(error)
        self.wait()

    def wait(self) -> None:
        """Wait the next delay (at once when a stop is requested)."""
        self._stop.wait(next(self._delays))

    def succeeded(self) -> None:
        self._delays = backoff()
