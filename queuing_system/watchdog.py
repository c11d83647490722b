"""Job time limits for workers that run in threads (`--concurrency`, a server's background processing).

RQ's `TimerDeathPenalty` starts a `threading.Timer` per job, and `Thread.start()` waits until that thread
runs: with fifty workers sharing a process, that wait was the biggest cost of a job. Here one watchdog
thread per process keeps every limit in a heap, and raises RQ's `JobTimeoutException` (with RQ's message)
in the job's thread when its limit passes, through `LoopState.interrupt_job`: only inside the job's own
code: one that has not landed when the job ends lands as it leaves (see steward.py).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import os
import threading
import time

from rq.timeouts import JobTimeoutException

from queuing_system.steward import LoopState


@functools.cache
def timeout_error(seconds: float) -> type[JobTimeoutException]:
    """RQ's exception, made without arguments (as a raise in another thread makes it) but with RQ's message."""

    def __init__(self: JobTimeoutException, *args: object) -> None:
        JobTimeoutException.__init__(self, *(args or (f"Task exceeded maximum timeout value ({seconds} seconds)",)))

    return type("JobTimeoutException", (JobTimeoutException,), {"__init__": __init__})


class TimeLimit:
    """One job's limit: ended when the block ends (dropped when it reaches the top of the heap)."""

    __slots__ = ("_entry",)

    def __init__(self, entry: list[object]) -> None:
        self._entry = entry

    def __enter__(self) -> TimeLimit:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._entry[2] = None


class Watchdog:
    """One thread of this process that ends jobs over their time limit (started at the first limit)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._limits: list[list[object]] = []  # heap of [deadline, order, state or None (ended), error]
        self._order = itertools.count()
        self._pid = 0  # the process whose thread runs (a forked child starts its own)

    def limit(self, seconds: float, state: LoopState) -> TimeLimit:
        """`seconds` for the job the calling thread runs inside this block (as RQ's death penalties)."""
        entry: list[object] = [time.monotonic() + seconds, next(self._order), state, timeout_error(seconds)]
        with self._changed:
            start = self._pid != os.getpid()
            if start:
                self._pid, self._limits = os.getpid(), []
            heapq.heappush(self._limits, entry)
            self._changed.notify()
        if start:  # (outside the lock, which the new thread takes at once)
            threading.Thread(target=self._watch, name="job-time-limits", daemon=True).start()
        return TimeLimit(entry)

    def _watch(self) -> None:
        with self._changed:
            while True:
                while self._limits and self._limits[0][2] is None:
                    heapq.heappop(self._limits)
                if not self._limits:
                    self._changed.wait()
                    continue
                deadline, _, state, error = self._limits[0]
                left = float(deadline) - time.monotonic()  # type: ignore[arg-type]
                if left > 0:
                    self._changed.wait(left)
                    continue
                entry = heapq.heappop(self._limits)
                if isinstance(state, LoopState):
                    if state.job_in_finalizer():  # raised there, the limit would be dropped: a little later
                        entry[0] = time.monotonic() + 0.01
                        heapq.heappush(self._limits, entry)
                        continue
                    state.interrupt_job(error)  # type: ignore[arg-type]


WATCHDOG = Watchdog()
