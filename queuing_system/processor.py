"""A processor: one worker that claims, runs, settles and recovers jobs, on RQ's data model.

Read it top to bottom; the loop is `Processor.work()`.

1. Claim.   Jobs move from their queue into this worker's claim list
            (`queuing:claimed:<worker>`) in one atomic Lua step, never through a
            client's hands: a processor killed at any instant cannot lose a job.
            The claim is the worker's fair share of the backlog (at most
            `claim_max`), so a short queue is still shared between workers.
            An idle worker blocks on its main queue with BLMOVE, which moves
            the job straight into its claim list.
2. Run.     The next claimed job is started (RQ's execution, started registry,
            job status) in the same Lua step that settles the previous one:
            one round trip per job. Only functions the processor offers run;
            anything else a job names fails, and nothing of it is imported.
            Progress is sent without waiting for the reply, on the connection
            the job is later settled on, so it always arrives before the end.
3. Settle.  Success is recorded as RQ records it, and `completed` is published
            in the same atomic step: a creator never hears of an end that is
            not stored. Failures, retries and dependents go through RQ's own
            `handle_job_failure`/`handle_job_success`; `failed` is published
            once RQ has stored the failure.
4. Recover. A worker is alive while its RQ worker key exists; every step re-arms
            its expiry (the lease) and a steward thread re-arms it during long
            jobs. When a worker dies, its key expires; the next maintenance
            sweep of any worker gives its claims back to the front of their
            queues (they were never started: they do not fail) and fails or
            retries the one job it was running, through RQ. So a job can only
            run twice if its processor died while running it (at-least-once).

A slow job cannot hold its claims hostage: after `hold_limit` seconds the
steward gives the other claimed jobs back. A warm stop gives them back at once.

RQ behaviour this relies on (rq==3.0.0, pinned in requirements.txt;
tests/test_processor.py::test_rq_sees_our_jobs_as_its_own compares what our
steps write with what RQ's SimpleWorker writes, and fails if RQ changes):
- the key layout and fields of jobs (`rq:job:<id>`: status, started_at, ended_at,
  last_heartbeat, worker_name, origin, timeout, result_ttl), executions
  (`rq:execution:<job>:<execution>`, `rq:executions:<job>`), the started
  registry (`rq:wip:<queue>`, members "<job>:<execution>"), the finished
  registry, results streams (`rq:results:<job>`), and workers
  (`rq:worker:<name>`, its `:executions` set), as `processor_lua.ADVANCE` writes them;
- `Job.perform()` calls `job.func` (we answer it from the processor's offer,
  instead of RQ importing any dotted name) and sets RQ's current job;
- the callback names a job stores (`Job._success_callback_name`, `_failure_callback_name`);
- `BaseWorker.handle_job_failure` / `handle_job_success` record an end (and
  retries, dependents) in one transaction, without running callbacks;
- `RQScheduler.acquire_locks` / `heartbeat` / `enqueue_scheduled_jobs` work
  without RQ's scheduler process (we call them from our loop: no subprocess).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import FrameType
from typing import Any

import redis
from redis.exceptions import NoScriptError, ResponseError
from rq.exceptions import AbandonedJobError, DeserializationError, NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import format_exc_info
from rq.queue import Queue
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ReadyJobRegistry
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException, TimerDeathPenalty, UnixSignalDeathPenalty
from rq.utils import as_text, parse_composite_key, utcformat, utcparse
from rq.worker import BaseWorker
from rq.worker_registration import clean_worker_registry

from queuing_system import events, processor_lua
from queuing_system.console import REDIS_DOWN, backoff, not_connected
from queuing_system.jobs import queues_by_priority
from queuing_system.keys import JOB_EVENTS_CHANNEL
from queuing_system.settings import env_float, env_int

log = logging.getLogger("rq.worker")

CLAIMERS = "queuing:claimers"
EVENT_CALLBACKS = {
    "queuing_system.events.on_success": events.on_success,
    "queuing_system.events.on_failure": events.on_failure,
}


@dataclass(frozen=True)
class ProcessorSettings:
    # Seconds an idle worker blocks on its queue before looking around (maintenance, the scheduler,
    # jobs on the priority siblings, a stop request).
    idle_wait: int = field(default_factory=lambda: env_int("QUEUING_DEQUEUE_TIMEOUT", 1, 1, 60))
    # Seconds between sweeps for the claims and jobs of dead workers.
    maintenance_interval: int = field(default_factory=lambda: env_int("QUEUING_MAINTENANCE_INTERVAL", 5, 1, 600))
    # Seconds a worker that stops touching Redis is still presumed alive.
    lease: int = field(default_factory=lambda: env_int("QUEUING_WORKER_LEASE", 15, 2, 600))
    # At most this many jobs claimed at once (the fair share of the backlog is often fewer, and so is
    # what the worker can run within `claim_window` seconds at its recent pace).
    claim_max: int = field(default_factory=lambda: env_int("QUEUING_CLAIM_MAX", 50, 1, 1000))
    claim_window: float = 0.05
    # A job running longer than this gives its worker's other claims back to the queue.
    hold_limit: float = field(default_factory=lambda: env_float("QUEUING_CLAIM_HOLD", 1.0, 0.05, 60.0))
    # Timeout of a job that names none (jobs created here always carry one).
    default_timeout: int = field(default_factory=lambda: env_int("QUEUING_JOB_TIMEOUT", 20, 1, 86400))


class ProcessorStoppedError(Exception):
    """Raised inside the job in hand when its processor is stopped a second time."""


class JobRefusedError(Exception):
    """A job names a function (or callback) this processor does not offer."""


class RedisLine:
    """One connection used strictly in order: progress is sent without waiting for its reply,
    and read back before the reply of the next call. Redis runs one connection's commands in
    the order they were sent, so progress always lands before the step that settles the job."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None
        self._pending = 0
        self._shas: dict[str, str] = {}

    def _connected(self) -> Any:
        if self._connection is None:
            self._connection = self._pool.make_connection()
            self._connection.connect()
        return self._connection

    def send(self, *commands: Sequence[Any]) -> None:
        """Send commands now; their replies are read (and ignored) before the next call's."""
        try:
            connection = self._connected()
            connection.send_packed_command(connection.pack_commands(commands))
        except BaseException:
            self.reset()
            raise
        self._pending += len(commands)

    def call(self, *args: Any) -> Any:
        self.send(args)
        return self._reply()

    def flush(self) -> None:
        """Wait until Redis has run everything sent so far."""
        if self._pending:
            self.call("PING")

    def _reply(self) -> Any:
        try:
            while self._pending > 1:
                self._pending -= 1
                with contextlib.suppress(ResponseError):  # a progress write that failed: the end still counts
                    self._connection.read_response()
            self._pending = 0
            return self._connection.read_response()
        except ResponseError:
            raise
        except BaseException:
            self.reset()
            raise

    def run(self, script: str, *args: Any) -> Any:
        """EVALSHA a script (no keys: see processor_lua), loading it the first time."""
        sha = self._shas.get(script)
        if sha is not None:
            try:
                return self.call("EVALSHA", sha, 0, *args)
            except NoScriptError:
                pass  # a restarted Redis forgot it: nothing ran, load it again
        self._shas[script] = as_text(self.call("SCRIPT", "LOAD", script))
        return self.call("EVALSHA", self._shas[script], 0, *args)

    def reset(self) -> None:
        self._pending = 0
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.disconnect()
            self._connection = None


@dataclass
class Ran:
    """A job that ran and is not settled yet."""

    job: Job
    execution_id: str
    started_at: datetime
    ended_at: datetime | None = None
    return_value: Any = None
    exc_info: tuple[Any, Any, Any] | None = None
    recorded: bool = False  # its end is stored (RQ did it); only the release and the announcement remain
    event: str = ""  # the job event to publish with the release
    announce: Callable[[], None] | None = None  # an offered callback, called once the end is stored

    @property
    def composite(self) -> str:
        return f"{self.job.id}:{self.execution_id}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Processor(BaseWorker):
    """One worker on `base_queue` and its priority siblings (served high, normal, low).

    `functions` maps the function names jobs may carry to what runs them;
    `callbacks` the callback names they may carry (by default the job-event
    ones, which the settle step performs itself). In a thread (`in_thread`)
    it times jobs out with a timer instead of SIGALRM.
    """

    def __init__(
        self,
        base_queue: str,
        connection: redis.Redis,
        *,
        functions: Mapping[str, Callable[..., Any]],
        callbacks: Mapping[str, Callable[..., Any]] | None = None,
        settings: ProcessorSettings | None = None,
        in_thread: bool = False,
        watch_parent: bool = False,
    ) -> None:
        self.settings = settings or ProcessorSettings()
        self.in_thread = in_thread
        self.watch_parent = watch_parent  # a worker process started by a processor: leave when it is gone
        self.death_penalty_class = TimerDeathPenalty if in_thread else UnixSignalDeathPenalty
        # RQ sizes the socket timeout from the worker ttl; ours must outlast a blocking wait.
        super().__init__(
            queues_by_priority(base_queue),
            connection=connection,
            serializer=JSONSerializer,
            worker_ttl=self.settings.idle_wait + 15,
            maintenance_interval=self.settings.maintenance_interval,
        )
        self.base_queue = base_queue
        self.functions = dict(functions)
        self.callbacks = dict(EVENT_CALLBACKS if callbacks is None else callbacks)
        self.line = RedisLine(connection)
        self._pristine_job = _OfferedJob(connection=connection, serializer=self.serializer)
        # RQ's scheduler, driven from our loop (no subprocess); named after us, so a sweep can free
        # the locks of a dead worker's scheduler.
        self.scheduler = RQScheduler(
            self.queues,
            connection=connection,
            serializer=JSONSerializer,
            name=self.name,
            logging_level=logging.getLogger("rq").level or logging.ERROR,
        )
        self._queues_by_name = {queue.name: queue for queue in self.queues}
        self._stopping = False
        self._in_job = False
        self._busy_since: float | None = None
        self._job_seconds: float | None = None  # recent pace (moving average), which sizes claims
        self._busy_timeout: float = 0.0
        self._held_back_for: str | None = None
        self._last_maintenance = 0.0
        self._last_scheduling = 0.0
        self._registered = False
        self._stop_event = threading.Event()  # wakes every wait of ours when a stop is requested
        self._stop_requested_at = 0.0
        self._parent_pid = os.getppid()
        self._steward = _Steward(self)

    # -- the loop ------------------------------------------------------------------------------

    def work(self, burst: bool = False, **_: Any) -> bool:  # type: ignore[override]
        """Claim, run and settle jobs until stopped (or, with `burst`, until the queues are empty).

        Redis going away anywhere here means: the not-connected line, a capped
        backoff, and carry on where it left off. Returns True if any job ran.
        """
        pending: Ran | None = None
        worked = False
        delays = backoff()
        self._steward.start()
        try:
            while True:
                try:
                    if not self._registered:
                        self.register_again()
                    if pending is not None and pending.exc_info is not None and not pending.recorded:
                        self._record_failure(pending)
                    self._maintain_when_due()
                    pending, next_job = self._advance(pending)
                    delays = backoff()
                    if next_job is None:
                        if pending is not None:
                            continue  # its settling needs another step (see _advance)
                        if self._stopping or burst:
                            break
                        self._wait_for_jobs()
                        continue
                    worked = True
                    pending = self._run(next_job)
                except REDIS_DOWN as error:
                    # Stopping with Redis away: a few seconds to settle the job in hand, then leave
                    # (what we still hold comes back to the queues when our lease lapses).
                    if self._stopping and (pending is None or time.monotonic() - self._stop_requested_at > 5):
                        break
                    not_connected(error)
                    self.line.reset()
                    self._stop_event.wait(next(delays))
        finally:
            self._end()
        return worked

    def _end(self) -> None:
        """Give back what was claimed and not started, and leave (quietly, even with Redis away)."""
        self._steward.stop()
        with contextlib.suppress(*REDIS_DOWN):
            self.line.run(processor_lua.GIVE_BACK, self.name)
            self.connection.srem(CLAIMERS, self.name)
            if self.scheduler.acquired_locks:
                self.scheduler.release_locks()
                self.scheduler.register_death()
            self.register_death()
        self.line.reset()
        if self.scheduler._connection is not None:  # RQScheduler opens its own client, and never closes it
            self.scheduler._connection.connection_pool.disconnect()

    def register_again(self) -> None:
        """Register as RQ does (the worker key is our lease), and as a holder of claims."""
        self.register_birth()
        self.connection.sadd(CLAIMERS, self.name)
        self._registered = True

    # -- 1 + 2 + 3: one round trip settles the last job, claims if needed, starts the next -------------

    def _advance(self, ran: Ran | None) -> tuple[Ran | None, Ran | None]:
        """Settle `ran`, claim, start the next job: one round trip.
        Returns (what is still unsettled, the job to run now, not yet run)."""
        now = _now()
        execution_id = uuid.uuid4().hex
        settle: list[Any] = ["", "", "", "", "", "", "", ""]
        if ran is not None:
            mode = "released" if ran.recorded else "finished"
            if mode == "finished" and not ran.event and ran.announce is None:
                ran.event = events.event_message(ran.job.id, events.JobEvent.COMPLETED)
            ended = ran.ended_at or now
            settle = [
                mode,
                ran.job.id,
                ran.execution_id,
                repr(ran.started_at.timestamp()),
                utcformat(ended),
                repr(ended.timestamp()),
                _encoded(ran.return_value) if mode == "finished" else "",
                ran.event,
            ]
        reply = self.line.run(
            processor_lua.ADVANCE,
            self.name,
            self.settings.lease,
            utcformat(now),
            repr(now.timestamp()),
            *settle,
            JOB_EVENTS_CHANNEL,
            0 if self._stopping else self._claim_size(),
            "0" if self._stopping else "1",
            execution_id,
            self.settings.default_timeout,
            *self.queue_names(),
        )
        settled = as_text(reply[0])
        if settled == "no worker":
            # Our key expired (a long outage, or we were frozen): register again. If no sweep has
            # taken our claims and job in hand yet, they are still ours and the next step settles them.
            self._registered = False
            return ran, None
        if settled == "rq":
            self._record_success_with_rq(ran)  # type: ignore[arg-type]
            return ran, None
        if settled == "ok" and ran is not None and ran.announce is not None:
            ran.announce()
        if settled == "lost" and ran is not None:
            log.warning(
                "Worker %s: job %s was taken over by a sweep (this worker was presumed dead)", self.name, ran.job.id
            )
        if reply[1] is None:
            return None, None
        job = copy.copy(self._pristine_job)  # RQ's Job() checks its serializer against a slow Protocol
        job.id, job.webhooks = as_text(reply[1]), []
        try:
            job.restore(dict(zip(reply[2][::2], reply[2][1::2], strict=True)))
        except Exception as error:  # a hash written by someone else, in a form RQ cannot read
            self._fail_unreadable(job.id, as_text(reply[3]), error)
            return None, None
        job.started_at = job.started_at or now
        return None, Ran(job=job, execution_id=as_text(reply[3]), started_at=job.started_at)

    def _fail_unreadable(self, job_id: str, execution_id: str, error: Exception) -> None:
        """A job RQ cannot even read cannot go through RQ's failure path: mark it failed here, once."""
        composite = f"{job_id}:{execution_id}"
        key = Job.key_for(job_id)
        origin = as_text(self.connection.hget(key, "origin") or b"")
        message = f"Job data cannot be read: {type(error).__name__}: {error}"
        with self.connection.pipeline() as pipeline:
            pipeline.hset(key, mapping={"status": JobStatus.FAILED.value, "ended_at": utcformat(_now())})
            pipeline.zadd(f"rq:failed:{origin}", {job_id: time.time() + 7 * 24 * 3600})
            pipeline.zrem(f"rq:wip:{origin}", composite)
            pipeline.delete(f"rq:execution:{composite}")
            pipeline.srem(f"{self.key}:executions", composite)
            pipeline.delete(f"queuing:running:{self.name}")
            pipeline.publish(JOB_EVENTS_CHANNEL, events.event_message(job_id, events.JobEvent.FAILED, message))
            pipeline.execute()
        log.warning("Worker %s: %s", self.name, message)

    def _claim_size(self) -> int:
        """As many jobs as run in `claim_window` at the recent pace: slow jobs are claimed one at a time
        (so other workers share them), quick ones in batches. Before any job has run: one."""
        if self._job_seconds is None:
            return 1
        return max(1, min(self.settings.claim_max, int(self.settings.claim_window / max(self._job_seconds, 1e-6))))

    def _wait_for_jobs(self) -> None:
        """Block until a job lands on the main queue (moved straight into our claims), or idle_wait passes."""
        self.line.call(
            "BLMOVE",
            f"rq:queue:{self.base_queue}",
            f"queuing:claimed:{self.name}",
            "LEFT",
            "RIGHT",
            self.settings.idle_wait,
        )

    # -- 2. run ------------------------------------------------------------------------------------

    def _run(self, ran: Ran) -> Ran:
        job = ran.job
        timeout = job.timeout if job.timeout and job.timeout > 0 else self.settings.default_timeout
        self._busy_timeout = timeout
        self._busy_since = time.monotonic()
        token = events.progress_sink.set(self._send_progress)
        try:
            function = self._offered_function(job)
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                self._in_job = True
                started = time.perf_counter()
                try:
                    job.offered_function = function  # type: ignore[attr-defined]
                    ran.return_value = job.perform()
                finally:
                    self._in_job = False
                    took = time.perf_counter() - started
                    pace = self._job_seconds
                    self._job_seconds = took if pace is None else 0.8 * pace + 0.2 * took
        except BaseException as error:  # every way a job can end is an end to record
            if isinstance(error, (KeyboardInterrupt, SystemExit)):
                error = ProcessorStoppedError("Processor stopped before the job finished")
            ran.exc_info = (type(error), error, error.__traceback__)
        finally:
            events.progress_sink.reset(token)
            self._busy_since = None
            self._held_back_for = None
        ran.ended_at = _now()
        if ran.exc_info is None:
            ran.announce = self._custom_callback(job, "success", ran)
        return ran

    def _offered_function(self, job: Job) -> Callable[..., Any]:
        """What runs the job, if this processor offers it; nothing a job names is imported."""
        try:
            name = job.func_name
        except DeserializationError:
            raise JobRefusedError(
                "Job data cannot be read as JSON (enqueued with RQ's default serializer, pickle?)"
            ) from None
        if name not in self.functions:
            raise JobRefusedError(f"Job function {name!r} is not offered by this processor")
        for callback in (job._success_callback_name, job._failure_callback_name):
            if callback and callback not in self.callbacks:
                raise JobRefusedError(f"Job callback {callback!r} is not offered by this processor")
        return self.functions[name]

    def _send_progress(self, job: Job, percent: int) -> None:
        """Progress without waiting: meta and the event go out now; the reply is read at settle time."""
        with contextlib.suppress(*REDIS_DOWN):  # progress is best effort; the end is not
            self.line.send(
                ("HSET", job.key, "meta", self.serializer.dumps(job.meta)),
                ("PUBLISH", JOB_EVENTS_CHANNEL, events.event_message(job.id, events.JobEvent.PROGRESS, percent)),
            )

    def _custom_callback(self, job: Job, kind: str, ran: Ran) -> Callable[[], None] | None:
        """An offered callback other than the job-event ones (which settling performs itself)."""
        name = job._success_callback_name if kind == "success" else job._failure_callback_name
        if not name or name in EVENT_CALLBACKS or name not in self.callbacks:
            return None
        callback = self.callbacks[name]
        if kind == "success":
            return lambda: _quietly(callback, job, self.connection, ran.return_value)
        exc_type, exc_value, tb = ran.exc_info  # type: ignore[misc]
        return lambda: _quietly(callback, job, self.connection, exc_type, exc_value, tb)

    # -- 3. settle what RQ records itself: failures (and retries), successes with dependents ------------

    def _record_failure(self, ran: Ran) -> None:
        """Store the failure through RQ (retry, dead letter, dependents), then say so; idempotent."""
        self.line.flush()  # progress first: it must reach the creator before `failed`
        job = ran.job
        exc_type, exc_value, _ = ran.exc_info  # type: ignore[misc]
        message = events.failure_message(exc_type, exc_value)
        if not self.line.run(processor_lua.STILL_MINE, self.name, self.settings.lease, ran.composite):
            ran.recorded, ran.event = True, ""  # a sweep took it over; the release below will say 'lost'
            return
        if job.get_status(refresh=True) == JobStatus.STARTED:
            job.meta["error"] = message  # for a creator that reconnects and missed the event
            job.save_meta()
            job.ended_at = ran.ended_at
            self.handle_exception(job, *ran.exc_info)  # RQ's log (the traceback), shown with --verbose
            self.handle_job_failure(
                job, queue=self._queue(job), exc_string=format_exc_info(ran.exc_info), execution=self._execution(ran)
            )
            if job.get_status(refresh=True) == JobStatus.STARTED:  # RQ logs, not raises, a failed write
                raise redis.exceptions.ConnectionError("the failure of the job could not be stored")
        ran.recorded = True
        ran.announce = self._custom_callback(job, "failure", ran)
        ran.event = "" if ran.announce else events.event_message(job.id, events.failed_event(job), message)

    def _record_success_with_rq(self, ran: Ran) -> None:
        """A success RQ must record (dependents to enqueue, or no result kept)."""
        self.line.flush()
        job = ran.job
        if job.get_status(refresh=True) == JobStatus.STARTED:
            job.ended_at = ran.ended_at
            job._result = ran.return_value
            self.handle_job_success(job, self._queue(job), job.started_job_registry, self._execution(ran))
        ran.recorded = True

    def _execution(self, ran: Ran) -> Execution:
        execution = Execution(ran.execution_id, ran.job.id, self.connection, worker_name=self.name)
        execution.created_at = ran.started_at
        return execution

    def _queue(self, job: Job) -> Queue:
        return self._queues_by_name.get(job.origin) or Queue(
            job.origin, connection=self.connection, serializer=self.serializer
        )

    # -- 4. recover, and the rest of the upkeep -----------------------------------------------------

    def _maintain_when_due(self) -> None:
        now = time.monotonic()
        if now - self._last_scheduling >= 1.0:
            self._last_scheduling = now
            if self.scheduler.acquired_locks:
                self.scheduler.heartbeat()
                self.scheduler.enqueue_scheduled_jobs()
        if now - self._last_maintenance < self.settings.maintenance_interval:
            return
        self._last_maintenance = now
        self.recover()
        if not self.scheduler.acquired_locks and self.scheduler.acquire_locks():
            self.scheduler.register_birth()
        for queue in self.queues:
            if queue.acquire_maintenance_lock():
                try:
                    _clean_registries(queue)
                finally:
                    queue.release_maintenance_lock()
        self.clean_group_registries()

    def recover(self) -> None:
        """Give back the claims of dead workers, and end the jobs they were running, through RQ.

        Also ends jobs RQ's started registry has given up on (a worker that died
        while running one and was never swept — e.g. not one of ours). RQ's own
        sweep would announce such a job before storing its failure; this stores first.
        """
        reply = self.line.run(processor_lua.RECOVER, *self.queue_names())
        for name, running in zip(reply[::2], reply[1::2], strict=True):
            log.warning("Worker %s: recovered the claims of dead worker %s", self.name, as_text(name))
            if running:
                self._end_abandoned(as_text(running))
        deadline = time.time()
        for queue in self.queues:
            for composite in self.connection.zrangebyscore(f"rq:wip:{queue.name}", 0, deadline):
                self._end_abandoned(as_text(composite))

    def _end_abandoned(self, composite: str) -> None:
        # One sweeper per job: two workers sweeping at once must not both retry it.
        if not self.connection.set(f"queuing:sweeping:{composite}", self.name, nx=True, ex=60):
            return
        job_id, execution_id = parse_composite_key(composite)
        try:
            job = Job.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            self.connection.zrem(f"rq:wip:{self._origin_of(composite)}", composite)
            return
        except Exception:  # a hash we cannot read: leave it to RQ's tools
            return
        still_started = self.connection.zscore(job.started_job_registry.key, composite) is not None
        if not still_started or job.get_status(refresh=False) != JobStatus.STARTED:
            return  # its worker settled it after all
        ran = Ran(job=job, execution_id=execution_id, started_at=job.started_at or _now(), ended_at=_now())
        error = AbandonedJobError(events.ABANDONED_MESSAGE)
        ran.exc_info = (AbandonedJobError, error, None)
        job.meta["error"] = events.ABANDONED_MESSAGE
        job.save_meta()
        job.ended_at = ran.ended_at
        self.handle_job_failure(
            job, queue=self._queue(job), exc_string=events.ABANDONED_MESSAGE, execution=self._execution(ran)
        )
        if job.get_status(refresh=True) == JobStatus.STARTED:
            return  # not stored: the next sweep tries again, once the sweeping mark expires
        announce = None
        name = job._failure_callback_name
        if name and name not in EVENT_CALLBACKS and name in self.callbacks:
            announce = self.callbacks[name]
        if announce is not None:
            _quietly(announce, job, self.connection, AbandonedJobError, error, None)
        else:
            events.publish_event(self.connection, job.id, events.failed_event(job), events.ABANDONED_MESSAGE)

    def _origin_of(self, composite: str) -> str:
        return as_text(self.connection.hget(Job.key_for(parse_composite_key(composite)[0]), "origin") or b"")

    # -- stopping --------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:  # type: ignore[override]
        """First signal: finish the job in hand, give the other claims back at once, leave.
        A second one (a second or more later): hand the job in hand back too."""
        now = time.monotonic()
        if self._stopping:
            if now - self._stop_requested_at < 1.0:
                return  # the same Ctrl+C reaching us twice (from the terminal and from our parent)
            if self._in_job and not self.in_thread:
                raise ProcessorStoppedError("Processor stopped before the job finished")
            return
        self.request_stop_from_thread()

    def request_stop_from_thread(self) -> None:
        """A warm stop, safe from any thread: the job in hand is finished, the rest given back."""
        if not self._stopping:
            self._stop_requested_at = time.monotonic()
            self._stopping = True
        self._stop_event.set()
        self._steward.wake()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)


class _OfferedJob(Job):
    """A job whose function comes from its processor's offer (RQ's `Job.func` imports any dotted name),
    read from Redis faster than RQ reads it (the same values: tests/test_processor.py compares them)."""

    offered_function: Callable[..., Any] | None = None

    @property
    def func(self) -> Callable[..., Any] | None:
        return self.offered_function

    def restore(self, raw_data: Mapping[bytes, bytes]) -> None:
        """RQ's restore, with the five timestamps parsed by `fromisoformat` (RQ's strptime took a
        fifth of a worker's time)."""
        fields = dict(raw_data)
        stamps = {name: fields.pop(name, None) for name in _TIMESTAMPS}
        super().restore(fields)
        for name, value in stamps.items():
            if value:
                setattr(self, name.decode(), _timestamp(value))


_TIMESTAMPS = (b"created_at", b"enqueued_at", b"started_at", b"ended_at", b"last_heartbeat")


def _timestamp(value: bytes) -> datetime:
    """RQ's utcparse ('%Y-%m-%dT%H:%M:%S.%fZ', or without the fraction), in C."""
    text = value.decode()
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return utcparse(text)


def _encoded(value: Any) -> str:
    """A return value as RQ's Result stores it: base64 of the serialized value ('' for None)."""
    if value is None:
        return ""
    try:
        data = JSONSerializer.dumps(value)
    except Exception:  # RQ stores this placeholder too
        data = JSONSerializer.dumps("Unserializable return value")
    return base64.b64encode(data).decode()


def _quietly(callback: Callable[..., Any], *args: Any) -> None:
    """Run an announcing callback; its failure is logged (with --verbose), the job's end stands."""
    try:
        callback(*args)
    except Exception:
        log.exception("callback %s failed", getattr(callback, "__name__", callback))


def _clean_registries(queue: Queue) -> None:
    """RQ's clean_registries, minus the started registry: `Processor.recover` ends abandoned jobs,
    storing each failure before announcing it (RQ's sweep runs the callback first)."""
    for registry_class in (FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
        registry_class(
            queue.name, connection=queue.connection, job_class=queue.job_class, serializer=queue.serializer
        ).cleanup()
    clean_worker_registry(queue)


class _Steward(threading.Thread):
    """Beside the loop: keeps the lease while a job runs, gives claims back when a job is slow or a
    stop is requested, and stops the worker if the process that started it is gone."""

    def __init__(self, processor: Processor) -> None:
        super().__init__(name=f"steward-{processor.name[:8]}", daemon=True)
        self.processor = processor
        self._wake = threading.Event()
        self._done = threading.Event()
        self._last_keep_alive = time.monotonic()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._done.set()
        self._wake.set()
        self.join(5)

    def run(self) -> None:
        worker = self.processor
        tick = min(0.25, worker.settings.hold_limit / 2)
        while not self._done.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._done.is_set():
                return
            with contextlib.suppress(*REDIS_DOWN, ResponseError):
                self._look_after(worker)

    def _look_after(self, worker: Processor) -> None:
        now = time.monotonic()
        busy_since = worker._busy_since
        if worker._stopping or (
            busy_since is not None
            and now - busy_since > worker.settings.hold_limit
            and worker._held_back_for != str(busy_since)
        ):
            worker._held_back_for = str(busy_since)
            # The loop's RedisLine belongs to its thread; the pool client is safe to share.
            _run_script(worker.connection, processor_lua.GIVE_BACK, worker.name)
        # Keep the lease while the job in hand may legitimately run (its timeout, plus a lease of grace).
        may_run = busy_since is None or now - busy_since < worker._busy_timeout + worker.settings.lease
        if may_run and now - self._last_keep_alive >= worker.settings.lease / 3:
            self._last_keep_alive = now
            _run_script(worker.connection, processor_lua.KEEP_ALIVE, worker.name, worker.settings.lease)
        if worker.watch_parent and os.getppid() != worker._parent_pid and not worker._stopping:
            worker.request_stop()  # the processor that started us is gone: leave as on Ctrl+C


_SCRIPTS: dict[str, Any] = {}


def _run_script(client: redis.Redis, script: str, *args: Any) -> Any:
    if script not in _SCRIPTS:
        _SCRIPTS[script] = client.register_script(script)
    return _SCRIPTS[script](keys=[], args=list(args), client=client)
