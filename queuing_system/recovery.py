"""Recovering what dead workers left, and the rest of a processor's upkeep (RQ's scheduler, RQ's
registry sweeps). Any live processor does this for every other: a dead worker cannot clean up."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import cast

from redis.exceptions import ResponseError
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.registry import DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, ReadyJobRegistry
from rq.scheduler import RQScheduler
from rq.utils import as_text, parse_composite_key
from rq.worker_registration import clean_worker_registry

from queuing_system import events, keys
from queuing_system.bad_data import BadKeys, wrong_types
from queuing_system.job_run import JobRun, now, quietly
from queuing_system.rq_keys import RQ
from queuing_system.rq_records import RqRecords
from queuing_system.steps import Recover

log = logging.getLogger("rq.worker")


def recover(records: RqRecords, bad_keys: BadKeys) -> None:
    """Give back the claims of dead workers, and end the jobs they were running, through RQ.

    (`end_expired_runs` ends the jobs of workers that were never our claimers.)
    """
    found_dead, problems = Recover(records.rq_worker.queue_names(), records.name).run(records.line.call)
    bad_keys.report(problems)
    for dead in found_dead:
        log.warning("Worker %s: recovered the claims of dead worker %s", records.name, dead.worker)
        if dead.running:
            end_abandoned(records, dead.running)


def end_expired_runs(records: RqRecords) -> None:
    """End the jobs RQ's started registry has given up on (a worker that died while running one and
    was never swept — e.g. not one of ours). RQ's own sweep would announce such a job before storing
    its failure; this stores first."""
    queue_names = records.rq_worker.queue_names()
    deadline = time.time()
    for name in queue_names:
        refs = cast("list[bytes]", records.connection.zrangebyscore(RQ.wip(name), 0, deadline))
        for ref in refs:
            end_abandoned(records, as_text(ref))


def end_abandoned(records: RqRecords, execution_ref: str) -> None:
    """Fail or retry (through RQ) the job of a run whose worker is gone, then announce it; once."""
    connection = records.connection
    # One sweeper per job: two workers sweeping at once must not both retry it.
    if not connection.set(keys.sweeping_key(execution_ref), records.name, nx=True, ex=60):
        return
    job_id, execution_id = parse_composite_key(execution_ref)
    try:
        job = Job.fetch(job_id, connection=connection, serializer=records.rq_worker.serializer)
    except NoSuchJobError:
        origin = as_text(connection.hget(RQ.job(job_id), "origin") or b"")
        connection.zrem(RQ.wip(origin), execution_ref)
        return
    except Exception:  # a hash we cannot read: leave it to RQ's tools
        return
    still_started = connection.zscore(job.started_job_registry.key, execution_ref) is not None
    if not still_started or job.get_status(refresh=False) != JobStatus.STARTED:
        return  # its worker settled it after all
    run = JobRun(job=job, execution_id=execution_id, started_at=job.started_at or now(), ended_at=now())
    if not records.record_abandoned(run, events.ABANDONED_MESSAGE):
        return  # not stored: the next sweep tries again, once the sweeping mark expires
    callback = records.offer.custom_callback(job._failure_callback_name)
    if callback is not None:
        error = AbandonedJobError(events.ABANDONED_MESSAGE)
        quietly(callback, job, connection, AbandonedJobError, error, None)
    else:
        events.publish_event(connection, job.id, events.failed_event(job), events.ABANDONED_MESSAGE)


def _next_beat(last_due: float, moment: float, pace: float, idle: bool) -> float:
    """When a sweep is next due, `pace` seconds on. Idle, on its own beat (counted from when it was due,
    so sweeps half a beat apart stay apart and never pile up in one 10-second window); busy, from now."""
    if idle and last_due + pace > moment:
        return last_due + pace
    return moment + pace


def _registry_types(name: str) -> dict[str, str]:
    """The keys RQ's sweeps of queue `name` touch, with their types."""
    return {
        RQ.finished(name): "zset",
        RQ.failed(name): "zset",
        RQ.deferred(name): "zset",
        RQ.wip(name): "zset",
        RQ.workers_of(name): "set",
        RQ.queue(name): "list",
    }


def clean_registries(queue: Queue) -> None:
    """RQ's clean_registries, minus the started registry: `recover` ends abandoned jobs,
    storing each failure before announcing it (RQ's sweep runs the callback first)."""
    for registry_class in (FinishedJobRegistry, FailedJobRegistry, DeferredJobRegistry, ReadyJobRegistry):
        registry_class(
            queue.name, connection=queue.connection, job_class=queue.job_class, serializer=queue.serializer
        ).cleanup()
    clean_worker_registry(queue)


class Upkeep:
    """What a worker does between jobs, when due.

    Busy: scheduled jobs that are due are enqueued every second by the worker holding RQ's scheduler
    locks (re-armed every `HEARTBEAT` seconds; RQ makes them last 61; a dead holder's are freed by the
    recovery sweep); the recovery sweep and RQ's registry sweeps run every `interval` seconds.

    Idle (see idle.py), only the waiter looks after the others, at a pace that keeps Redis quiet: it
    looks for scheduled jobs every `IDLE_SCHEDULING` intervals (and wakes when the next one is due),
    holding the scheduler locks only while there are some; the recovery sweep (with the runs RQ gave
    up on) every `IDLE_RECOVERY` intervals, half a beat apart; RQ's registries every
    `IDLE_REGISTRIES` intervals (RQ's own workers: every 10 minutes). Other idle workers hand their
    scheduler locks back and say nothing.
    """

    IDLE_SCHEDULING, IDLE_RECOVERY, IDLE_REGISTRIES = 6, 6, 60
    HEARTBEAT = 30.0

    def __init__(self, records: RqRecords, interval: float, bad_keys: BadKeys) -> None:
        self.records, self.interval, self.bad_keys = records, interval, bad_keys
        # RQ's scheduler, driven from our loop (no subprocess); named after our worker, so a sweep
        # can free the locks of a dead worker's scheduler.
        worker = records.rq_worker
        self.scheduler = RQScheduler(
            worker.queues,
            connection=worker.connection,
            serializer=worker.serializer,
            name=worker.name,
            logging_level=logging.getLogger("rq").level or logging.ERROR,
        )
        self._next_scheduling = self._next_recovery = self._next_registries = self._next_heartbeat = 0.0
        self._recovery_held_until = 0.0
        self._hold_recovery = 0.0  # seconds to hold the sweep for, from the next look (see hold_recovery)
        self._idle = False
        self._queue_keys = {RQ.queue(q.name): "list" for q in records.rq_worker.queues}

    def when_due(self, *, idle: bool = False, sweep: bool = True) -> None:
        """Do what is due; `idle`: at the idle pace; `sweep`: this worker looks after the others."""
        moment = time.monotonic()
        if self._hold_recovery:
            self._recovery_held_until = max(self._recovery_held_until, moment + self._hold_recovery)
            self._hold_recovery = 0.0
        if idle != self._idle:
            self._pace(moment, idle)
        if not sweep:  # another worker looks after the others (idle: the waiter; busy: its process's lead)
            if self.scheduler.acquired_locks:
                self._surviving(self.scheduler.release_locks, {})
            return
        self._scheduling(moment)
        queues = self.records.rq_worker.queues
        if moment >= self._next_recovery and moment >= self._recovery_held_until:
            pace = self.interval * (self.IDLE_RECOVERY if idle else 1)
            self._next_recovery = _next_beat(self._next_recovery, moment, pace, idle)
            self._surviving(lambda: recover(self.records, self.bad_keys), {keys.CLAIMERS: "set"})
            # Runs RQ gave up on, and abandoned jobs a sweep could not fail the first time.
            self._surviving(lambda: end_expired_runs(self.records), {RQ.wip(q.name): "zset" for q in queues})
            if not idle and not self.scheduler.acquired_locks:  # a scheduler that died leaves its locks to lapse
                self._surviving(self._acquire_scheduling, {})
        if moment >= self._next_registries:
            self._next_registries = moment + self.interval * (self.IDLE_REGISTRIES if idle else 1)
            for queue in queues:
                self._surviving(functools.partial(self._sweep, queue), _registry_types(queue.name))
            self._surviving(self.records.rq_worker.clean_group_registries, {})

    def _pace(self, moment: float, idle: bool) -> None:
        """Going idle: scheduled jobs are looked at now, the recovery sweep half a beat later, the
        registries a full idle beat after their last sweep. Going busy: the busy pace, from now."""
        self._idle = idle
        if idle:
            self._next_scheduling = moment
            self._next_recovery = moment + self.interval * self.IDLE_RECOVERY / 2
            self._next_registries = max(self._next_registries, moment + self.interval * self.IDLE_REGISTRIES)
        else:
            self._next_scheduling = min(self._next_scheduling, moment)
            self._next_recovery = min(self._next_recovery, moment + self.interval)
            self._next_registries = min(self._next_registries, moment + self.interval)

    def _scheduling(self, moment: float) -> None:
        locks = self.scheduler.acquired_locks
        if locks and moment >= self._next_heartbeat:
            self._next_heartbeat = moment + self.HEARTBEAT
            self._surviving(self.scheduler.heartbeat, {})
        if moment < self._next_scheduling:
            return
        if not self._idle:
            self._next_scheduling = moment + 1.0
            if locks:
                self._surviving(self.scheduler.enqueue_scheduled_jobs, self._queue_keys)
            return
        self._next_scheduling = _next_beat(self._next_scheduling, moment, self.interval * self.IDLE_SCHEDULING, True)
        due = self._next_due()
        if due is None:
            if locks:  # nothing to schedule: no locks to keep alive
                self._surviving(self.scheduler.release_locks, {})
            return
        if not locks:
            self._surviving(self._acquire_scheduling, {})
            self._next_heartbeat = moment + self.HEARTBEAT
        if due <= time.time():
            if self.scheduler.acquired_locks:
                self._surviving(self.scheduler.enqueue_scheduled_jobs, self._queue_keys)
            self._next_scheduling = moment + 1.0  # more may be due
        else:
            self._next_scheduling = min(self._next_scheduling, moment + due - time.time())

    def _next_due(self) -> float | None:
        """When the earliest scheduled job of our queues is due (unix seconds), if any."""
        with self.records.connection.pipeline(transaction=False) as pipeline:
            for name in self.records.rq_worker.queue_names():
                pipeline.zrange(RQ.scheduled(name), 0, 0, withscores=True)
            firsts = pipeline.execute()
        scores = [float(score) for first in firsts for _, score in first]
        return min(scores) if scores else None

    def _acquire_scheduling(self) -> None:
        if self.scheduler.acquire_locks():
            self.scheduler.register_birth()

    def _sweep(self, queue: Queue) -> None:
        if queue.acquire_maintenance_lock():
            try:
                clean_registries(queue)
            finally:
                queue.release_maintenance_lock()

    def _surviving(self, task: Callable[[], object], keys_used: dict[str, str]) -> None:
        """Run one piece of upkeep; a key of the wrong type among `keys_used` is named and the rest of
        the upkeep goes on (the loop with it). Other errors are the loop's to say and ride out."""
        try:
            task()
        except ResponseError:
            problems = wrong_types(self.records.connection, keys_used)
            if not problems:
                raise
            self.bad_keys.report(problems)

    def hold_recovery(self, seconds: float) -> None:
        """No recovery sweep for `seconds` from the next look at what is due: Redis was away or refusing
        (or our own lease lapsed). Every worker that lived through it, ours and other processors', may
        have outlived its lease; each gets its next attempt (at most 5 s away) and a lease to come back
        and settle what it holds before a sweep takes it as dead. Called at every fault: the hold counts
        from the first look after the last one (Redis back and gone again starts it again)."""
        self._hold_recovery = seconds

    def leave(self) -> None:
        """Free the scheduler's locks (Redis may be away: the caller suppresses that)."""
        if self.scheduler.acquired_locks:
            self.scheduler.release_locks()
            self.scheduler.register_death()

    def close(self) -> None:
        if self.scheduler._connection is not None:  # RQScheduler opens its own client, and never closes it
            self.scheduler._connection.connection_pool.disconnect()
