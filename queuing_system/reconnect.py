"""Riding out a Redis that went away or said no: the one reconnect-with-backoff helper of
long-running processes, and the one line each kind of fault gets."""

from __future__ import annotations

import threading
import time

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


class Voice:
    """Says each fault line once for the workers of one process (`--concurrency 50` is one processor to
    its user: one line per failed attempt, not fifty). A worker's line is not said when another worker
    of the process said one of its kind in the last `quiet` seconds: Redis away (however each worker
    heard of it: reset, closed, refused), or the same refusal. The workers fail together and retry on
    the same schedule, so one of them speaks for all."""

    def __init__(self, quiet: float = 1.0) -> None:
        self._quiet = quiet
        self._lock = threading.Lock()
        self._last: tuple[str, float, int] = ("", 0.0, 0)

    def say_fault(self, error: BaseException) -> None:
        kind = "away" if means_not_connected(error) else f"{type(error).__name__}: {error}"
        line, moment, speaker = kind, time.monotonic(), threading.get_ident()
        with self._lock:
            said_line, said_at, said_by = self._last
            if line == said_line and said_by != speaker and moment - said_at < self._quiet:
                return
            self._last = (line, moment, speaker)
        say_fault(error)


class Reconnection:
    """Between attempts: one line for each failed one (not connected, or what Redis refused), a capped
    doubling wait (`console.backoff`), cut short by `stop`; the wait starts small again once Redis
    answers."""

    def __init__(self, stop: threading.Event | None = None, voice: Voice | None = None) -> None:
        self._stop = stop if stop is not None else threading.Event()
        self._delays = backoff()
        self._say = voice.say_fault if voice is not None else say_fault

    def failed(self, error: BaseException, deadline: float | None = None) -> None:
        """Say what went wrong, then wait before the next attempt."""
        self._say(error)
        self.wait(deadline)

    def wait(self, deadline: float | None = None) -> None:
        """Wait the next delay (at once when a stop is requested). With a `deadline` (a
        `time.monotonic()` instant: already stopping, a last few seconds to finish), the whole delay
        whatever the stop says, up to the deadline: a stop already requested must not make every
        attempt follow the last at once."""
        delay = next(self._delays)
        if deadline is None:
            self._stop.wait(delay)
        else:
            time.sleep(max(0.0, min(delay, deadline - time.monotonic())))

    def succeeded(self) -> None:
        self._delays = backoff()
