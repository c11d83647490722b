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

    Also ends jobs RQ's started registry has given up on (a worker that died
    while running one and was never swept — e.g. not one of ours). RQ's own
    sweep would announce such a job before storing its failure; this stores first.
    """
    queue_names = records.rq_worker.queue_names()
    found_dead, problems = Recover(queue_names).run(records.line.call)
    bad_keys.report(problems)
    for dead in found_dead:
        log.warning("Worker %s: recovered the claims of dead worker %s", records.name, dead.worker)
        if dead.running:
            end_abandoned(records, dead.running)
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
    """What a worker does between jobs when due: RQ's scheduler every second (when it holds the
    locks), and every `interval` seconds the recovery sweep and RQ's registry sweeps."""

    def __init__(self, records: RqRecords, scheduler: RQScheduler, interval: float, bad_keys: BadKeys) -> None:
        self.records, self.scheduler, self.interval, self.bad_keys = records, scheduler, interval, bad_keys
        self._last_maintenance = 0.0
        self._last_scheduling = 0.0

    def when_due(self) -> None:
        moment = time.monotonic()
        queues = self.records.rq_worker.queues
        if moment - self._last_scheduling >= 1.0:
            self._last_scheduling = moment
            if self.scheduler.acquired_locks:
                self._surviving(self._schedule, {RQ.queue(q.name): "list" for q in queues})
        if moment - self._last_maintenance < self.interval:
            return
        self._last_maintenance = moment
        self._surviving(lambda: recover(self.records, self.bad_keys), {keys.CLAIMERS: "set"})
        for queue in queues:
            self._surviving(functools.partial(self._sweep, queue), _registry_types(queue.name))
        self._surviving(self.records.rq_worker.clean_group_registries, {})

    def _schedule(self) -> None:
        self.scheduler.heartbeat()
        self.scheduler.enqueue_scheduled_jobs()

    def _sweep(self, queue: Queue) -> None:
        if not self.scheduler.acquired_locks and self.scheduler.acquire_locks():
            self.scheduler.register_birth()
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

    def leave(self) -> None:
        """Free the scheduler's locks (Redis may be away: the caller suppresses that)."""
        if self.scheduler.acquired_locks:
            self.scheduler.release_locks()
            self.scheduler.register_death()

    def close(self) -> None:
        if self.scheduler._connection is not None:  # RQScheduler opens its own client, and never closes it
            self.scheduler._connection.connection_pool.disconnect()
