"""Beside the processor's loop: the state the two share, and the steward thread that looks after it."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import RedisError

from queuing_system.bad_data import BadKeys
from queuing_system.console import in_finalizer
from queuing_system.steps import GiveBack, KeepAlive


class LoopState:
    """What the loop tells its steward (and a stop request tells both), safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stop_event = threading.Event()  # wakes every wait of the loop when a stop is requested
        self.stop_requested_at = 0.0
        self._stop_noted = False  # a stop was asked for (set first, by a signal handler)
        self.in_job = False  # inside the job's own code (a second stop may interrupt it there)
        self._job_thread: int | None = None  # the thread running the job's own code
        self._interrupted = False  # a stop was raised in that thread and may not have landed yet
        self._busy_since: float | None = None
        self._busy_timeout = 0.0
        self._held_back = False  # this job's hold limit passed and its worker's claims were given back

    @property
    def stopping(self) -> bool:
        return self._stop_noted or self.stop_event.is_set()

    def note_stop(self) -> None:
        """From a signal handler: stopping from now on (no job starts after it), before `request_stop`
        (from a thread) wakes the waits. Plain assignments: no lock a handler could deadlock on."""
        if not self._stop_noted:
            self.stop_requested_at = time.monotonic()
            self._stop_noted = True

    def request_stop(self) -> bool:
        """Mark a stop and wake every wait; True the first time. (Never from a signal handler: an
        Event is not safe to set in the thread that may be inside its wait; see `note_stop`.)"""
        if self.stop_event.is_set():
            return False
        if not self._stop_noted:
            self.stop_requested_at = time.monotonic()
        self._stop_noted = True
        self.stop_event.set()
        return True

    def job_started(self, timeout: float) -> None:
        with self._lock:
            self._busy_since, self._busy_timeout, self._held_back = time.monotonic(), timeout, False

    def job_ended(self) -> None:
        with self._lock:
            self._busy_since, self._held_back = None, False

    # -- the job's own code: where a second stop may interrupt a worker thread ------------------------

    def enter_job(self) -> None:
        with self._lock:
            self.in_job, self._job_thread, self._interrupted = True, threading.get_ident(), False

    def leave_job(self) -> None:
        """Out of the job's code. A stop or time limit raised in it (`interrupt_job`) that has not landed
        yet lands here, still inside the job's run (which records it as the job's end), never later in
        the loop. (Not taken back with PyThreadState_SetAsyncExc(NULL): that leaves CPython's eval
        breaker set for every thread, and under a tracer such as coverage's the process crawls.)"""
        with self._lock:
            self.in_job = False
            raised, self._interrupted = self._interrupted, False
        if raised:
            for _ in range(3):  # a backward jump: where a pending asynchronous exception lands
                pass

    def interrupt_job(self, error: type[BaseException]) -> bool:
        """Raise `error` inside the job's own code, running in another thread (as RQ's TimerDeathPenalty
        times a job out); False when no job code is running. It lands at the job's next Python step: a
        blocking call (a sleep, a socket read) ends first."""
        with self._lock:
            if not self.in_job or self._job_thread is None or self._interrupted:
                return False
            self._interrupted = True
            return bool(
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._job_thread), ctypes.py_object(error))
            )

    def job_in_finalizer(self) -> bool:
        """Whether the job's thread is inside an object's finalizer now, where an exception raised in it
        would be printed and dropped (Python 3.12+ collects garbage where asynchronous exceptions land)."""
        thread = self._job_thread
        return self.in_job and thread is not None and in_finalizer(sys._current_frames().get(thread))

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
        keeps_idle_lease: bool = True,
    ) -> None:
        super().__init__(name=f"steward-{worker[:8]}", daemon=True)
        self._connection = connection  # the pool client: the loop's ordered connection is its own
        self._worker, self._state, self._bad_keys = worker, state, bad_keys
        self._lease, self._hold_limit = lease, hold_limit
        self._on_orphaned = on_orphaned
        # Idle, a worker holds nothing a sweep would have to give back: only a processor's lead worker
        # (who may wait on Redis for the others, and so hold a job it moved) keeps its lease then. The
        # others let it lapse (an idle processor of 50 workers stays quiet) and register again on waking.
        self._keeps_idle_lease = keeps_idle_lease
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
            # Idle, a worker that keeps no lease has only its parent to watch: a slower look (a stop wakes it).
            self._wake.wait(tick if self._state.busy or self._keeps_idle_lease else 1.0)
            self._wake.clear()
            if self._done.is_set():
                return
            try:
                self._look_after()
            except RedisError:  # the loop says what is wrong with Redis; we try again
                pass
            except Exception:  # not Redis (out of descriptors, memory…): the loop meets it too; try again
                logging.getLogger("rq.worker").exception("steward of %s", self._worker)

    def _look_after(self) -> None:
        execute = self._connection.execute_command
        if self._state.should_give_back(self._hold_limit):
            _, problems = GiveBack(self._worker).run(execute)
            self._bad_keys.report(problems)
        now = time.monotonic()
        # Renewed three times a lease while a job is in hand; idle (nothing to lose), twice: quieter.
        period = self._lease / (3 if self._state.busy else 2)
        wanted = self._state.busy or self._keeps_idle_lease
        if wanted and self._state.may_still_run(self._lease) and now - self._last_keep_alive >= period:
            self._last_keep_alive = now
            KeepAlive(self._worker, self._lease).run(execute)
        if self._on_orphaned is not None and os.getppid() != self._parent_pid and not self._state.stopping:
            self._on_orphaned()  # the processor that started us is gone: leave as on Ctrl+C
