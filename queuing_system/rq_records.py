"""The ends of jobs that RQ records itself, through the RQ worker the processor holds: failures (with
retries, dead letters, dependents), successes RQ must handle (dependents, no result kept), and jobs
RQ cannot even read."""

from __future__ import annotations

import logging
import time

import redis
from redis.exceptions import ResponseError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.job_lifecycle import format_exc_info
from rq.queue import Queue
from rq.utils import as_text, utcformat
from rq.worker import BaseWorker

from queuing_system import events, keys
from queuing_system.bad_data import BadKeys, wrong_types
from queuing_system.job_run import JobRun, Offer, now
from queuing_system.jobs import JobSettings
from queuing_system.keys import JOB_EVENTS_CHANNEL
from queuing_system.ordered_connection import OrderedConnection
from queuing_system.rq_keys import RQ
from queuing_system.steps import StillMine

log = logging.getLogger("rq.worker")


class RqRecords:
    """Records ends through `rq_worker` (held, not subclassed: we call only these of its methods)."""

    def __init__(self, rq_worker: BaseWorker, line: OrderedConnection, offer: Offer, lease: int) -> None:
        self.rq_worker = rq_worker
        self.connection: redis.Redis = rq_worker.connection
        self.line = line
        self.offer = offer
        self.lease = lease
        self._queues = {queue.name: queue for queue in rq_worker.queues}

    @property
    def name(self) -> str:
        return str(self.rq_worker.name)

    def register(self, bad_keys: BadKeys) -> None:
        """Register as RQ does, and as a holder of claims. RQ's registration is one transaction whose
        worker key (our lease) is written even when a set listing workers has the wrong type: then that
        set is named, left alone, and we go on (only RQ's tools and the fair share read it)."""
        listings = {RQ.workers: "set"} | {RQ.workers_of(name): "set" for name in self.rq_worker.queue_names()}
        try:
            self.rq_worker.register_birth()
        except ResponseError:
            self._name_wrong_types(listings, bad_keys)
            if self.connection.type(self.rq_worker.key) != b"hash":
                raise
        try:
            self.connection.sadd(keys.CLAIMERS, self.name)
        except ResponseError:  # then no sweep can recover our claims: it is said, and we go on serving
            self._name_wrong_types({keys.CLAIMERS: "set"}, bad_keys)

    def keys_used(self) -> dict[str, str]:
        """The keys the loop writes, with the type each must have (to name one behind a WRONGTYPE)."""
        names = self.rq_worker.queue_names()
        wanted = {RQ.queue(name): "list" for name in names} | {RQ.wip(name): "zset" for name in names}
        wanted |= {keys.claimed_key(self.name): "list", keys.CLAIMERS: "set", RQ.workers: "set"}
        return wanted | {RQ.workers_of(name): "set" for name in names} | {self.rq_worker.key: "hash"}

    def _name_wrong_types(self, wanted: dict[str, str], bad_keys: BadKeys) -> None:
        """Say which of `wanted` has the wrong type; re-raise the error in hand when none has."""
        problems = wrong_types(self.connection, wanted)
        if not problems:
            raise
        bad_keys.report(problems)

    def record_failure(self, run: JobRun) -> None:
        """Store the failure through RQ (retry, dead letter, dependents), then say so; idempotent."""
        assert run.exc_info is not None
        self.line.flush()  # progress first: it must reach the creator before `failed`
        job = run.job
        exc_type, exc_value, _ = run.exc_info
        message = events.failure_message(exc_type, exc_value)
        if not StillMine(self.name, self.lease, run.execution_ref).run(self.line.call):
            run.recorded, run.event = True, ""  # a sweep took it over; the release will say 'lost'
            return
        if job.get_status(refresh=True) == JobStatus.STARTED:
            job.meta["error"] = message  # for a creator that reconnects and missed the event
            job.save_meta()
            job.ended_at = run.ended_at
            self.rq_worker.handle_exception(job, *run.exc_info)  # RQ's log (the traceback), shown with --verbose
            self.rq_worker.handle_job_failure(
                job, queue=self.queue(job), exc_string=format_exc_info(run.exc_info), execution=self.execution(run)
            )
            if job.get_status(refresh=True) == JobStatus.STARTED:  # RQ logs, not raises, a failed write
                raise redis.exceptions.ConnectionError("the failure of the job could not be stored")
        run.recorded = True
        run.announce = self.offer.announcer(run)
        run.event = "" if run.announce else events.event_message(job, events.failed_event(job), message)

    def record_success(self, run: JobRun) -> None:
        """A success RQ must record (dependents to enqueue, or no result kept)."""
        self.line.flush()
        job = run.job
        if job.get_status(refresh=True) == JobStatus.STARTED:
            job.ended_at = run.ended_at
            job._result = run.return_value
            self.rq_worker.handle_job_success(job, self.queue(job), job.started_job_registry, self.execution(run))
        run.recorded = True

    def record_abandoned(self, run: JobRun, message: str) -> bool:
        """Fail (or retry) a job whose worker died while running it; True once stored."""
        job = run.job
        job.meta["error"] = message
        job.save_meta()
        job.ended_at = run.ended_at
        self.rq_worker.handle_job_failure(job, queue=self.queue(job), exc_string=message, execution=self.execution(run))
        return job.get_status(refresh=True) != JobStatus.STARTED

    def fail_unreadable(self, job_id: str, execution_id: str, reason: str) -> None:
        """A job RQ cannot even read cannot go through RQ's failure path: mark it failed here, once."""
        self._fail_here(job_id, execution_id, f"Job data cannot be read: {reason}")

    def fail_unsettleable(self, run: JobRun) -> None:
        """A job whose end could not be stored other than through Redis (`run.unsettleable`): failed
        here, as `fail_unreadable` does, unless a sweep took it over meanwhile."""
        if not StillMine(self.name, self.lease, run.execution_ref).run(self.line.call):
            return
        self._fail_here(run.job.id, run.execution_id, f"Job could not be settled: {run.unsettleable}")

    def _fail_here(self, job_id: str, execution_id: str, message: str) -> None:
        ref = f"{job_id}:{execution_id}"
        key = RQ.job(job_id)
        origin = as_text(self.connection.hget(key, "origin") or b"")
        with self.connection.pipeline() as pipeline:
            pipeline.hset(key, mapping={"status": JobStatus.FAILED.value, "ended_at": utcformat(now())})
            pipeline.zadd(RQ.failed(origin), {job_id: time.time() + JobSettings.failure_ttl})
            pipeline.zrem(RQ.wip(origin), ref)
            pipeline.delete(RQ.execution_prefix + ref)
            pipeline.srem(RQ.worker_executions(self.name), ref)
            pipeline.delete(keys.running_key(self.name))
            pipeline.publish(JOB_EVENTS_CHANNEL, events.event_message(job_id, events.JobEvent.FAILED, message))
            pipeline.execute()
        log.warning("Worker %s: %s", self.name, message)

    def execution(self, run: JobRun) -> Execution:
        execution = Execution(run.execution_id, run.job.id, self.connection, worker_name=self.name)
        execution.created_at = run.started_at
        return execution

    def queue(self, job: Job) -> Queue:
        return self._queues.get(job.origin) or Queue(
            job.origin, connection=self.connection, serializer=self.rq_worker.serializer
        )
