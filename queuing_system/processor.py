"""A processor: one worker that claims, runs, settles and recovers jobs, on RQ's data model.

Read it top to bottom; the loop is `Processor.work()`. Where each part lives:

    processor.py          the loop: claim, run, settle, stop (`Processor`, which holds an RQ worker)
    steps.py              one typed contract per Lua step (arguments built, replies parsed)
    processor_lua.py      the Lua steps themselves (KEYS/ARGV/reply at the top of each)
    job_run.py            what is offered to run, how a job is read, one run of a job (`JobRun`)
    runner.py             running one job (timeouts, progress, the second stop signal)
    watchdog.py           job time limits for workers in threads (`--concurrency`: one per process)
    announcements.py      when an end reaches its creator (with replicas: once they confirmed it)
    rq_records.py         ends RQ records itself (failures, retries, dependents), through the held RQ worker
    recovery.py           the sweep for dead workers' claims and jobs; RQ's scheduler and registry upkeep
    steward.py            the thread beside the loop (lease, slow jobs, stop) and the state they share
    idle.py               waiting for work quietly: one waiter per processor, on all its queues at once
    bad_data.py           jobs and keys someone else wrote that cannot be used (named, failed, left alone)
    reconnect.py          riding out Redis away or refusing: one line per attempt, capped backoff
    ordered_connection.py the loop's one connection, used strictly in order

1. Claim.   Jobs move from their queue into this worker's claim list
            (`queuing:claimed:<worker>`) in one atomic Lua step, never through a
            client's hands: a processor killed at any instant cannot lose a job.
            The claim is the worker's fair share of the backlog (at most
            `claim_max`), so a short queue is still shared between workers.
            Idle, one worker of the processor blocks on all its queues with
            BLMOVE, which moves a job straight into its claim list, and rings
            for the others (idle.py); a busy worker that leaves jobs queued
            rings too. With `--concurrency`, each thread is a worker (worker.py).
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
            jobs (and while idle, for its process's lead worker: the others hold
            nothing then, and register again when work comes). When a worker
            dies, its key expires; the next recovery sweep (by a lead worker)
            gives its claims back to the front of their queues (they were never
            started: they do not fail) and fails or retries the one job it was
            running, through RQ. So a job can only run twice if its processor
            died while running it (at-least-once).

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
  (`rq:worker:<name>`, its `:executions` set), as `processor_lua.ADVANCE` writes them
  (every key name from RQ itself: `rq_keys.RQ`, so `RQ_KEY_PREFIX` moves them);
- `Job.perform()` calls `job.func` (we answer it from the processor's offer,
  instead of RQ importing any dotted name) and sets RQ's current job;
- the callback names a job stores (`Job._success_callback_name`, `_failure_callback_name`);
- `BaseWorker.handle_job_failure` / `handle_job_success` record an end (and
  retries, dependents) in one transaction, without running callbacks;
- `RQScheduler.acquire_locks` / `heartbeat` / `enqueue_scheduled_jobs` work
  without RQ's scheduler process (we call them from our loop: no subprocess).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis
from redis.exceptions import ResponseError
from rq.serializers import JSONSerializer
from rq.timeouts import UnixSignalDeathPenalty
from rq.worker import BaseWorker

from queuing_system import keys
from queuing_system.announcements import Announcer
from queuing_system.bad_data import BadKeys
from queuing_system.console import BACKOFF_CAP, in_finalizer, ready_to_send_again, send_again
from queuing_system.idle import IdleTurns, IdleWait, QueueWatch
from queuing_system.job_run import EVENT_CALLBACKS, JobRun, Offer, OfferedJob, now, restored
from queuing_system.job_settings import job_timeout
from queuing_system.jobs import queues_by_priority
from queuing_system.ordered_connection import OrderedConnection
from queuing_system.reconnect import REDIS_FAULTS, Reconnection, Voice
from queuing_system.recovery import Upkeep
from queuing_system.rq_keys import RQ
from queuing_system.rq_records import RqRecords
from queuing_system.runner import JobRunner, ProcessorStoppedError, settlement
from queuing_system.settings import env_float, env_int
from queuing_system.stamps import execution_id
from queuing_system.steps import Advance, GiveBack, Settled
from queuing_system.steward import LoopState, Steward

log = logging.getLogger("rq.worker")

# Seconds a stopping processor keeps trying to settle the job in hand while Redis is away or refusing.
STOP_SETTLE_SECONDS = 5.0


@dataclass(frozen=True)
class ProcessorSettings:
    # Seconds an idle processor's waiter blocks on its queues at a time (it wakes at once for a job on
    # any of them, or a stop): longer is quieter on Redis (the steward keeps the lease meanwhile).
    idle_wait: int = field(default_factory=lambda: env_int("QUEUING_DEQUEUE_TIMEOUT", 30, 1, 60))
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
    default_timeout: int = field(default_factory=job_timeout)


class Processor:
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
        turns: IdleTurns | None = None,
        lead: bool = True,
        voice: Voice | None = None,
    ) -> None:
        self.settings = settings or ProcessorSettings()
        self.in_thread = in_thread
        # The lead worker of its process does the upkeep (sweeps, RQ's scheduler) and may wait on Redis
        # for the others when idle; the other workers of a process (`--concurrency`) only run jobs.
        self.lead = lead
        self.voice = voice  # shared by the workers of one process: they say each fault once between them
        # RQ's worker, held for its registration and its bookkeeping of ends (never its loop or sweeps).
        # RQ sizes the socket timeout from the worker ttl; ours must outlast a blocking wait.
        self.rq_worker = BaseWorker(
            queues_by_priority(base_queue),
            connection=connection,
            serializer=JSONSerializer,
            worker_ttl=self.settings.idle_wait + 15,
            maintenance_interval=self.settings.maintenance_interval,
        )
        self.name: str = self.rq_worker.name
        self.connection = connection
        self.base_queue = base_queue
        self.offer = Offer(functions, dict(EVENT_CALLBACKS if callbacks is None else callbacks))
        self.line = OrderedConnection(connection)
        self.announcer = Announcer(connection, self.line)  # with a Sentinel group: ends heard once replicated
        self.records = RqRecords(self.rq_worker, self.line, self.offer, self.settings.lease)
        self.bad_keys = BadKeys()
        self.upkeep = Upkeep(self.records, self.settings.maintenance_interval, self.bad_keys)
        self._pristine_job = OfferedJob(connection=connection, serializer=JSONSerializer)
        self._registered = False
        self._look_again = False  # a step left claims we must look at before going idle
        self.state = LoopState()
        queue_keys = [RQ.queue(name) for name in self.rq_worker.queue_names()]
        watch = QueueWatch(connection, queue_keys, keys.claimed_key(self.name))
        # Idle, one worker of the processor waits on Redis for all (`turns`, shared by its processes).
        self.idle = IdleWait(
            turns or IdleTurns(), watch, self.upkeep, self.bad_keys, self.state, self.settings.idle_wait, lead
        )
        self.runner = JobRunner(
            self.offer,
            self.line,
            self.state,
            None if in_thread else UnixSignalDeathPenalty,  # in a thread: the process's watchdog
            self.settings.default_timeout,
        )
        self._steward = Steward(
            connection,
            self.name,
            self.state,
            self.bad_keys,
            lease=self.settings.lease,
            hold_limit=self.settings.hold_limit,
            on_orphaned=self.request_stop_from_thread if watch_parent else None,
            keeps_idle_lease=lead,
        )

    # -- the loop ------------------------------------------------------------------------------

    def work(self, burst: bool = False) -> bool:
        """Claim, run and settle jobs until stopped (or, with `burst`, until the queues are empty).

        Redis going away or refusing a command anywhere here means: one line saying so, a capped
        backoff, and carry on where it left off. Returns True if any job ran.
        """
        pending: JobRun | None = None
        worked = False
        reconnection = Reconnection(self.state.stop_event, self.voice)
        self._steward.start()
        try:
            while True:
                try:
                    if not self._registered:
                        self.register()
                    pending = self._record_ahead(pending)
                    self.upkeep.when_due(sweep=self.lead)
                    pending, next_job = self._advance(pending)
                    reconnection.succeeded()
                    if next_job is None:
                        if pending is not None or self._look_again:
                            self._look_again = False
                            continue  # its settling needs another step, or our claims another look
                        if self.state.stopping or burst:
                            break
                        self.idle.until_work()
                        continue
                    worked = True
                    pending = self.runner.run(next_job)
                except REDIS_FAULTS as error:
                    # Redis away or refusing (out of memory, busy, read-only, …): every step can be
                    # repeated, so say it, back off, and repeat. Stopping meanwhile: a few seconds to
                    # settle the job in hand, then leave (what we still hold comes back to the queues
                    # when our lease lapses).
                    deadline = None
                    if self.state.stopping:
                        deadline = self.state.stop_requested_at + STOP_SETTLE_SECONDS
                        if pending is None or time.monotonic() >= deadline:
                            break
                    self.line.reset()
                    if self.bad_keys.named(self.connection, error, self.records.keys_used()):
                        reconnection.wait(deadline)  # said: a key to fix, not Redis refusing
                    else:
                        # Others lived through it too: each gets its next attempt and a lease before a sweep.
                        self.upkeep.hold_recovery(BACKOFF_CAP + self.settings.lease)
                        reconnection.failed(error, deadline)
                except Exception as error:
                    # Not Redis: something in the job in hand that settling cannot handle (data someone
                    # else wrote, a result RQ cannot store…). It fails with that reason instead of
                    # taking the worker down with it and staying started for good.
                    if pending is None or pending.unsettleable:
                        raise
                    self.line.reset()
                    pending.unsettleable = f"{type(error).__name__}: {error}"
        finally:
            self._end()
        return worked

    def _record_ahead(self, run: JobRun | None) -> JobRun | None:
        """What settling `run` needs before the step: its failure stored through RQ; or, when that
        could not be done (not for Redis), the job failed as it stands. Returns what the step settles."""
        if run is not None and run.unsettleable:
            self.records.fail_unsettleable(run)
            return None
        if run is not None and run.exc_info is not None and not run.recorded:
            self.records.record_failure(run)
        return run

    def _end(self) -> None:
        """Give back what was claimed and not started, and leave (quietly, even with Redis away)."""
        self._steward.stop()
        with contextlib.suppress(*REDIS_FAULTS):
            GiveBack(self.name).run(self.line.call)
            with contextlib.suppress(ResponseError):  # a claimers key of the wrong type (said already)
                self.connection.srem(keys.CLAIMERS, self.name)
            self.upkeep.leave()
            self.rq_worker.register_death()
        self.line.reset()
        self.idle.close()
        self.upkeep.close()

    def register(self) -> None:
        """Register as RQ does (the worker key is our lease), and as a holder of claims; again after
        our key expired (a long outage, or we were frozen)."""
        self.records.register(self.bad_keys)
        self._registered = True

    # -- 1 + 2 + 3: one round trip settles the last job, claims if needed, starts the next -------------

    def _advance(self, run: JobRun | None) -> tuple[JobRun | None, JobRun | None]:
        """Settle `run`, claim, start the next job: one round trip.
        Returns (what is still unsettled, the job to run now, not yet run)."""
        moment = now()
        stopping = self.state.stopping
        step = Advance(
            worker=self.name,
            lease=self.settings.lease,
            queues=self.rq_worker.queue_names(),
            now=moment,
            execution_id=execution_id(),
            default_timeout=self.settings.default_timeout,
            claim=0 if stopping else self.runner.claim_size(self.settings.claim_window, self.settings.claim_max),
            start=not stopping,
            settle=self.announcer.held_back(None if run is None else settlement(run, moment)),
        )
        reply = step.run(self.line.call)
        if reply.settled is Settled.NO_WORKER:
            # Our key expired: register again. If no sweep has taken our claims and job in hand yet,
            # they are still ours and the next step settles them. (Whatever froze us may have let the
            # others' leases lapse too: our sweep waits a lease for them.)
            self._registered, self._look_again = False, True
            self.upkeep.hold_recovery(BACKOFF_CAP + self.settings.lease)
            return run, None
        if run is not None and reply.settled is Settled.RQ:
            self.records.record_success(run)
            return run, None
        if run is not None and reply.settled is Settled.OK:
            self.announcer.announce(run, step.settle)
        if run is not None and reply.settled is Settled.LOST:
            log.warning(
                "Worker %s: job %s was taken over by a sweep (this worker was presumed dead)", self.name, run.job.id
            )
        self.bad_keys.report(reply.problems)
        if reply.left > 0:
            self.idle.more_waiting()  # the processor's idle workers (if any) take their share
        started = reply.started
        if started is None:
            return None, None
        job, reason = restored(self._pristine_job, started.job_id, started.fields)
        if reason is not None:
            self.records.fail_unreadable(job.id, started.execution_id, reason)
            self._look_again = True  # the rest of our claims
            return None, None
        job.started_at = job.started_at or moment
        return None, JobRun(job=job, execution_id=started.execution_id, started_at=job.started_at)

    # -- stopping --------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """First signal: finish the job in hand, give the other claims back at once, leave.
        A second one (a second or more later): hand the job in hand back too."""
        if self.state.stopping:
            if time.monotonic() - self.state.stop_requested_at < 1.0:
                return  # the same Ctrl+C reaching us twice (from the terminal and from our parent)
            if self.state.in_job and not self.in_thread:
                if in_finalizer(frame):  # raised there, it would be dropped: once the finalizer returns
                    send_again(signum if signum is not None else signal.SIGTERM)
                    return
                raise ProcessorStoppedError()
            return
        self.state.note_stop()  # no job starts from now on
        # The waits are woken from a thread: this handler may have interrupted this very thread inside
        # a wait on the stop event (or inside the lock of a wait), and setting it here would deadlock.
        threading.Thread(target=self.request_stop_from_thread, name="stop", daemon=True).start()

    def request_stop_from_thread(self) -> None:
        """A warm stop, safe from any thread: the job in hand is finished, the rest given back."""
        self.state.request_stop()
        self._steward.wake()
        self.idle.wake()

    def hand_back_job_in_hand(self) -> bool:
        """A second stop for a worker in a thread (`--concurrency`): the job in hand fails as stopped,
        at its next Python step (False when no job code is running). Called in a thread of its own."""
        while self.state.job_in_finalizer():  # raised there, it would be dropped: once the finalizer returns
            time.sleep(0.01)
        return self.state.interrupt_job(ProcessorStoppedError)

    def install_signal_handlers(self) -> None:
        ready_to_send_again()
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGTERM, self.request_stop)
