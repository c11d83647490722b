"""Beside the processor's loop: the state the two share, and the steward thread that looks after it."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

from queuing_system.bad_data import BadKeys
from queuing_system.steps import GiveBack, KeepAlive


class LoopState:
    """What the loop tells its steward (and a stop request tells both), safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stop_event = threading.Event()  # wakes every wait of the loop when a stop is requested
        self.stop_requested_at = 0.0
        self.in_job = False  # inside the job's own code (a second stop may interrupt it there)
        self._busy_since: float | None = None
        self._busy_timeout = 0.0
        self._held_back = False  # this job's hold limit passed and its worker's claims were given back

    @property
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def request_stop(self) -> bool:
        """Mark a stop; True the first time. (Never from a signal handler: an Event is not safe to set
        in the thread that may be inside its wait; see Processor.request_stop.)"""
        if self.stop_event.is_set():
            return False
        self.stop_requested_at = time.monotonic()
        self.stop_event.set()
        return True

    def job_started(self, timeout: float) -> None:
        with self._lock:
            self._busy_since, self._busy_timeout, self._held_back = time.monotonic(), timeout, False

    def job_ended(self) -> None:
        with self._lock:
            self._busy_since, self._held_back = None, False

    def should_give_back(self, hold_limit: float) -> bool:
        """While stopping, always; else once per job, when it has run longer than `hold_limit`."""
        with self._lock:
            if self.stop_event.is_set():
                return True
            since = self._busy_since
            if since is None or self._held_back or time.monotonic() - since <= hold_limit:
                return False
            self._held_back = True
            return True

    @property
    def busy(self) -> bool:
        return self._busy_since is not None

    def may_still_run(self, grace: float) -> bool:
        """Idle, or the job in hand within its timeout plus `grace` (beyond that, let the lease lapse)."""
        with self._lock:
            since = self._busy_since
            return since is None or time.monotonic() - since < self._busy_timeout + grace


class Steward(threading.Thread):
    """Keeps the worker's lease while a job runs, gives its claims back when a job is slow or a stop
    is requested, and stops the worker when the process that started it is gone (`on_orphaned`)."""

    def __init__(
        self,
        connection: redis.Redis,
        worker: str,
        state: LoopState,
        bad_keys: BadKeys,
        *,
        lease: int,
        hold_limit: float,
        on_orphaned: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=f"steward-{worker[:8]}", daemon=True)
        self._connection = connection  # the pool client: the loop's ordered connection is its own
        self._worker, self._state, self._bad_keys = worker, state, bad_keys
        self._lease, self._hold_limit = lease, hold_limit
        self._on_orphaned = on_orphaned
        self._parent_pid = os.getppid()
        self._wake = threading.Event()
        self._done = threading.Event()
        self._last_keep_alive = time.monotonic()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._done.set()
        self._wake.set()
        if self.is_alive():
            self.join(5)

    def run(self) -> None:
        tick = min(0.25, self._hold_limit / 2)
        while not self._done.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._done.is_set():
                return
            with contextlib.suppress(RedisError):  # the loop says what is wrong with Redis; we try again
                self._look_after()

    def _look_after(self) -> None:
        execute = self._connection.execute_command
        if self._state.should_give_back(self._hold_limit):
            _, problems = GiveBack(self._worker).run(execute)
            self._bad_keys.report(problems)
        now = time.monotonic()
        # Renewed three times a lease while a job is in hand; idle (nothing to lose), twice: quieter.
        period = self._lease / (3 if self._state.busy else 2)
        if self._state.may_still_run(self._lease) and now - self._last_keep_alive >= period:
            self._last_keep_alive = now
            KeepAlive(self._worker, self._lease).run(execute)
        if self._on_orphaned is not None and os.getppid() != self._parent_pid and not self._state.stopping:
            self._on_orphaned()  # the processor that started us is gone: leave as on Ctrl+C
