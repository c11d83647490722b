"""Putting jobs on their queues: one job, or many at a time.

Jobs are written exactly as RQ writes them (tests check it field for field), with
Kue-style numeric ids from one counter and the job-event callbacks.
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from rq import Callback, Queue
from rq.job import Job
from rq.utils import get_call_string, now, utcformat

from queuing_system.console import REDIS_DOWN, backoff
from queuing_system.job_settings import JobSettings
from queuing_system.keys import JOB_ID_COUNTER
from queuing_system.queues import queue_for_priority

# The job-event callbacks every job carries (RQ's own workers and sweeps call them; ours settle
# them in the same atomic step that stores the end).
ON_SUCCESS = "queuing_system.events.on_success"
ON_FAILURE = "queuing_system.events.on_failure"


def next_job_id(connection: redis.Redis) -> str:
    """Kue-style ids: 1, 2, 3, … across runs, from one counter."""
    return str(connection.incr(JOB_ID_COUNTER))


def _create(
    queue: Queue, function: str, data: Any, job_id: str, settings: JobSettings, on_success: str, on_failure: str
) -> Job:
    return queue.create_job(
        function,
        args=() if data is None else (data,),
        job_id=job_id,
        timeout=settings.timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        retry=settings.retry(),
        on_success=Callback(on_success),
        on_failure=Callback(on_failure),
    )


def _put(queue: Queue, job: Job, settings: JobSettings, pipeline: redis.client.Pipeline | None = None) -> Job:
    """On its queue, or (with a delay) in the scheduled registry."""
    if settings.delay > 0:
        return queue.schedule_job(
            job, datetime.now(timezone.utc) + timedelta(seconds=settings.delay), pipeline=pipeline
        )
    return queue.enqueue_job(job, pipeline=pipeline)


def enqueue(
    queue: Queue,
    function: str,
    data: Any = None,
    settings: JobSettings | None = None,
    *,
    on_success: str = ON_SUCCESS,
    on_failure: str = ON_FAILURE,
) -> Job:
    """Put a job for `function` (a name a processor offers) on `queue`, `data` its argument.

    With a priority other than normal the job goes to the sibling queue; with a
    delay it waits in the scheduled registry. The callbacks default to the
    Kue-style event channel (`queuing_system.events`).
    """
    settings = settings or JobSettings()
    queue = queue_for_priority(queue, settings.priority)
    job = _create(queue, function, data, next_job_id(queue.connection), settings, on_success, on_failure)
    return _put(queue, job, settings)


def _write_chunk(
    queue: Queue,
    function: str,
    datas: Sequence[Any],
    ids: list[str],
    settings: JobSettings,
    pipeline: redis.client.Pipeline,
) -> list[Job]:
    """Queue commands that store jobs `ids` exactly as RQ stores them, cheaply: RQ enqueues the first
    itself; the others are written from its stored fields, changing only what differs between them
    (id, data, description, times). tests/test_processor.py checks the result against RQ's own."""
    first = _create(queue, function, datas[0], ids[0], settings, ON_SUCCESS, ON_FAILURE)
    _put(queue, first, settings, pipeline)
    if settings.delay > 0:  # the scheduled registry: RQ's path for every job (rarely many)
        jobs = [first] + [
            _create(queue, function, data, job_id, settings, ON_SUCCESS, ON_FAILURE)
            for job_id, data in zip(ids[1:], datas[1:], strict=True)
        ]
        for job in jobs[1:]:
            _put(queue, job, settings, pipeline)
        return jobs
    stored = first.to_dict()  # what RQ's save() wrote for the first job
    jobs = [first]
    for job_id, data in zip(ids[1:], datas[1:], strict=True):
        job = copy.copy(first)  # a Job like the first (RQ's constructor costs more than all the rest)
        job.id, job.args, job.meta = job_id, () if data is None else (data,), {}
        job.description = get_call_string(function, job.args, {}, max_length=75)
        job.created_at = job.enqueued_at = now()
        stamp = utcformat(job.created_at)
        pipeline.hset(
            job.key,
            mapping={
                **stored,
                "data": zlib.compress(job.data),
                "description": job.description,
                "created_at": stamp,
                "enqueued_at": stamp,
            },
        )
        jobs.append(job)
    if len(ids) > 1:
        pipeline.rpush(queue.key, *ids[1:])
    return jobs


class EnqueueInterruptedError(Exception):
    """Redis stayed away while jobs were being created: `created` landed, the rest did not."""

    def __init__(self, created: list[Job], wanted: int, error: BaseException) -> None:
        super().__init__(str(error))
        self.created = created
        self.wanted = wanted
        self.error = error


def enqueue_many(
    queue: Queue,
    function: str,
    datas: Sequence[Any],
    settings: JobSettings | None = None,
    *,
    created: Callable[[Job], None] = lambda job: None,
    chunk_size: int = 500,
    give_up_after: float = 30.0,
    retrying: Callable[[BaseException], None] = lambda error: None,
) -> list[Job]:
    """Create one job per item of `datas`, fast: consecutive ids reserved with one INCRBY, the jobs
    written `chunk_size` at a time, each chunk one transaction (all of it lands, or none).

    `created(job)` is called for each job, in order, once its chunk has landed. A Redis outage
    shorter than `give_up_after` seconds is ridden out (`retrying(error)` on each failed attempt):
    after reconnecting, a chunk that did land is not written again, so no job is duplicated or
    skipped. Past that, EnqueueInterruptedError says which jobs were created.
    """
    settings = settings or JobSettings()
    queue = queue_for_priority(queue, settings.priority)
    if not datas:
        return []
    done: list[Job] = []
    deadline: float | None = None
    delays = backoff()
    last_id: int | None = None
    while True:
        try:
            if last_id is None:
                last_id = int(queue.connection.incrby(JOB_ID_COUNTER, len(datas)))
            first_id = last_id - len(datas) + 1
            while len(done) < len(datas):
                start = len(done)
                chunk = datas[start : start + chunk_size]
                ids = [str(first_id + start + offset) for offset in range(len(chunk))]
                landed = deadline is not None and queue.connection.exists(Job.key_for(ids[0]))  # before an outage?
                with queue.connection.pipeline(transaction=True) as pipeline:
                    jobs = _write_chunk(queue, function, chunk, ids, settings, pipeline)
                    if not landed:
                        pipeline.execute()
                for job in jobs:
                    done.append(job)
                    created(job)
            return done
        except REDIS_DOWN as error:
            now = time.monotonic()
            deadline = deadline or now + give_up_after
            if now >= deadline:
                raise EnqueueInterruptedError(done, len(datas), error) from None
            retrying(error)
            time.sleep(min(next(delays), max(0.0, deadline - now)))
