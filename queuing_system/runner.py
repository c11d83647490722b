"""Running one job in the processor's loop: the offered function under RQ's timeout, progress sent
on the loop's ordered connection, every way it can end kept for settling; and the pace that sizes
the next claim."""

from __future__ import annotations

import contextlib
import importlib
import signal
import time
from datetime import datetime
from types import FrameType
from typing import Any

from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty, JobTimeoutException, UnixSignalDeathPenalty

from queuing_system import events
from queuing_system.console import REDIS_DOWN, in_finalizer
from queuing_system.job_run import JobRun, Offer, encoded, now
from queuing_system.keys import JOB_EVENTS_CHANNEL
from queuing_system.ordered_connection import OrderedConnection
from queuing_system.steps import Settlement, SettleMode
from queuing_system.steward import LoopState
from queuing_system.watchdog import WATCHDOG


class ProcessorStoppedError(Exception):
    """Raised inside the job in hand when its processor is stopped a second time."""

    def __init__(self, message: str = "Processor stopped before the job finished") -> None:
        super().__init__(message)  # raised in another thread, it is made without arguments


# The C functions behind `signal.signal` and `signal.alarm` (no stub: typed Any): the Python wrappers
# turn numbers and handlers into enums and back, which costs several times the system calls.
_c_signal: Any = importlib.import_module("_signal")
_SIGALRM, _ITIMER_REAL = int(signal.SIGALRM), int(signal.ITIMER_REAL)


class QuickAlarm(UnixSignalDeathPenalty):
    """RQ's SIGALRM timeout for a job (same handler, same exception) at one system call per arming:
    the process's SIGALRM handler is installed once and passes the alarm to the job's penalty, if a
    job is armed (a late alarm, after its job ended, is ignored)."""

    armed: QuickAlarm | None = None  # the penalty of the job running now (main thread only)
    due = 0.0  # when its alarm rings (time.monotonic())

    def setup_death_penalty(self) -> None:
        if _c_signal.getsignal(_SIGALRM) is not _alarm_rings:  # no system call: Python's own record
            _c_signal.signal(_SIGALRM, _alarm_rings)
        QuickAlarm.armed, self.due = self, time.monotonic() + self._timeout
        _c_signal.alarm(self._timeout)

    def cancel_death_penalty(self) -> None:
        _c_signal.alarm(0)
        QuickAlarm.armed = None


def ignore_stray_alarms() -> None:
    """A SIGALRM no job's time limit set (`kill -ALRM`) is ignored, idle or mid-job, instead of ending
    the process (its default) or timing the job in hand out early."""
    _c_signal.signal(_SIGALRM, _alarm_rings)


def _alarm_rings(signum: int, frame: FrameType | None) -> None:
    armed = QuickAlarm.armed
    if armed is None or time.monotonic() < armed.due - 0.5:  # no limit set, or not this one's alarm (yet)
        return
    if in_finalizer(frame):  # raised there, the time limit would be dropped: ring again shortly
        _c_signal.setitimer(_ITIMER_REAL, 0.01)
        return
    armed.handle_death_penalty(signum, frame)  # type: ignore[no-untyped-call]  # RQ's: raises its exception


class JobRunner:
    """Runs the jobs the loop starts, one at a time, and keeps their recent pace."""

    def __init__(
        self,
        offer: Offer,
        line: OrderedConnection,
        state: LoopState,
        death_penalty: type[BaseDeathPenalty] | None,
        default_timeout: int,
    ) -> None:
        self.offer, self.line, self.state = offer, line, state
        if death_penalty is UnixSignalDeathPenalty:
            death_penalty = QuickAlarm
        self.death_penalty, self.default_timeout = death_penalty, default_timeout
        self.pace: float | None = None  # seconds per job (moving average); None before any job ran

    def run(self, run: JobRun) -> JobRun:
        job = run.job
        timeout = job.timeout if job.timeout and job.timeout > 0 else self.default_timeout
        self.state.job_started(timeout)
        token = events.progress_sink.set(self._send_progress)
        try:
            function = self.offer.function_for(job)
            with self._time_limit(timeout, job.id):
                self.state.enter_job()
                started = time.perf_counter()
                try:
                    job.offered_function = function  # type: ignore[attr-defined]
                    run.return_value = job.perform()
                finally:
                    self.state.leave_job()  # a stop or time limit not landed yet lands here
                    took = time.perf_counter() - started
                    self.pace = took if self.pace is None else 0.8 * self.pace + 0.2 * took
        except BaseException as error:  # every way a job can end is an end to record
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                error = ProcessorStoppedError("Processor stopped before the job finished")
            run.exc_info = (type(error), error, error.__traceback__)
        finally:
            events.progress_sink.reset(token)
            self.state.job_ended()
        run.ended_at = now()
        if run.exc_info is None:
            run.announce = self.offer.announcer(run)
        return run

    def _time_limit(self, timeout: float, job_id: str) -> contextlib.AbstractContextManager[object]:
        """RQ's death penalty for a worker in its process's main thread (SIGALRM); in a thread, the
        process's watchdog (watchdog.py), which needs no thread per job."""
        if self.death_penalty is None:
            return WATCHDOG.limit(timeout, self.state)
        return self.death_penalty(timeout, JobTimeoutException, job_id=job_id)

    def _send_progress(self, job: Job, percent: int) -> None:
        """Progress without waiting: meta and the event go out now; the reply is read at settle time."""
        with contextlib.suppress(*REDIS_DOWN):  # progress is best effort; the end is not
            self.line.send(
                ("HSET", job.key, "meta", JSONSerializer.dumps(job.meta)),
                ("PUBLISH", JOB_EVENTS_CHANNEL, events.event_message(job, events.JobEvent.PROGRESS, percent)),
            )

    def claim_size(self, window: float, most: int) -> int:
        """As many jobs as run in `window` seconds at the recent pace: slow jobs are claimed one at a
        time (so other workers share them), quick ones in batches (at most `most`). Before any job: one."""
        if self.pace is None:
            return 1
        return max(1, min(most, int(window / max(self.pace, 1e-6))))


def settlement(run: JobRun, moment: datetime) -> Settlement:
    """What the next ADVANCE step settles for `run`: its success, or the release of an end RQ stored."""
    mode = SettleMode.RELEASED if run.recorded else SettleMode.FINISHED
    if mode is SettleMode.FINISHED and not run.event and run.announce is None:
        run.event = events.event_message(run.job, events.JobEvent.COMPLETED)  # with its creation token
    return Settlement(
        mode=mode,
        job_id=run.job.id,
        execution_id=run.execution_id,
        started_at=run.started_at,
        ended_at=run.ended_at or moment,
        return_value=encoded(run.return_value) if mode is SettleMode.FINISHED else "",
        event=run.event,
    )
