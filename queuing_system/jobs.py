"""Creating jobs the Kue way on RQ: JSON payloads, numeric ids, events, and Kue's job options.

Every queue uses RQ's JSON serializer: the default (pickle) would let anyone
who can write to Redis run code inside the workers.

Kue's options, the RQ way:
- attempts + exponential backoff -> `rq.Retry(max, interval=[b, 2b, 4b, …])` (needs a worker's scheduler);
- delay -> `Queue.schedule_job` (the scheduled registry; a worker's scheduler enqueues it when due);
- priority -> sibling queues `<name>:high` and `<name>:low`, which processors serve high, normal, low;
- ttl -> the job timeout.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import redis
from rq import Callback, Queue, Retry, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import get_call_string, now, utcformat

from queuing_system.console import REDIS_DOWN, backoff, not_connected
from queuing_system.keys import JOB_ID_COUNTER
from queuing_system.settings import connect, env_int

# The job-event callbacks every job carries (RQ's own workers and sweeps call them; ours settle
# them in the same atomic step that stores the end).
ON_SUCCESS = "queuing_system.events.on_success"
ON_FAILURE = "queuing_system.events.on_failure"


class Priority(str, Enum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


def priority_queue_name(name: str, priority: Priority) -> str:
    """`push_notification_code` stays the normal queue, so the curriculum's names are unchanged."""
    return name if priority is Priority.NORMAL else f"{name}:{priority.value}"


def queues_by_priority(name: str) -> list[str]:
    """What a processor listens on, first served first."""
    return [priority_queue_name(name, priority) for priority in Priority]


@dataclass(frozen=True)
class JobSettings:
    """Kue's job options. The defaults reproduce the curriculum exactly (one attempt, no delay)."""

    timeout: int = field(default_factory=lambda: env_int("QUEUING_JOB_TIMEOUT", 20, 1, 86400))  # Kue's ttl
    attempts: int = 1
    backoff: int = field(default_factory=lambda: env_int("QUEUING_RETRY_BACKOFF", 1, 1, 3600))  # 1st retry after, s
    delay: int = 0
    priority: Priority = Priority.NORMAL
    result_ttl: int = 24 * 3600  # finished jobs stay inspectable for a day
    failure_ttl: int = 7 * 24 * 3600  # failed jobs (the dead letters) for a week

    def retry(self) -> Retry | None:
        if self.attempts <= 1:
            return None
        return Retry(
            max=self.attempts - 1, interval=[min(self.backoff * 2**n, MAX_BACKOFF) for n in range(self.attempts - 1)]
        )


def queue_connection(url: str | None = None) -> redis.Redis:
    """A client RQ can use: RQ reads raw bytes, so no decoding. A silent server is an error after 10 s
    (a processor raises that above its blocking wait)."""
    return connect(url, decode_responses=False, socket_timeout=10.0)


def job_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


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


def _queue_for(queue: Queue, settings: JobSettings) -> Queue:
    if settings.priority is Priority.NORMAL:
        return queue
    return job_queue(priority_queue_name(queue.name, settings.priority), queue.connection)


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
    queue = _queue_for(queue, settings)
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
    queue = _queue_for(queue, settings)
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


def create_or_explain(
    queue: Queue,
    function: str,
    datas: Sequence[Any],
    settings: JobSettings,
    created: Callable[[Job], None] = lambda job: None,
) -> list[Job]:
    """`enqueue_many` for a creator script: the not-connected line on each failed attempt and,
    if Redis stays away, one line saying which jobs were created, then exit 1."""
    patience = env_int("QUEUING_ENQUEUE_PATIENCE", 30, 1, 3600)
    try:
        return enqueue_many(
            queue, function, datas, settings, created=created, retrying=not_connected, give_up_after=patience
        )
    except EnqueueInterruptedError as stop:
        ids = [job.id for job in stop.created]
        which = f" (ids {ids[0]}-{ids[-1]})" if ids else ""
        print(
            f"Gave up: Redis stayed away ({stop.error}); created {len(ids)} of {stop.wanted} jobs{which}, "
            f"not the other {stop.wanted - len(ids)}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


def no_retry(error: Exception) -> Exception:
    """Mark the running job's failure as permanent (no further attempts): `raise no_retry(Error(...))`."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    return error


# -- the creators' command line ----------------------------------------------------------------


MAX_ATTEMPTS = 20
MAX_DELAY = 30 * 24 * 3600  # thirty days
MAX_BACKOFF = 3600  # no wait between two attempts is longer than an hour


def bounded(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number within bounds (argparse turns the ValueError into one line)."""

    def number(raw: str) -> int:
        if not raw.strip().lstrip("-").isdigit() or not minimum <= int(raw) <= maximum:
            raise argparse.ArgumentTypeError(f"expected a whole number from {minimum} to {maximum}, got {raw!r}")
        return int(raw)

    return number


def add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attempts",
        type=bounded(1, MAX_ATTEMPTS),
        default=1,
        metavar="N",
        help=f"try a failing job up to N times (1 to {MAX_ATTEMPTS}), waiting QUEUING_RETRY_BACKOFF "
        f"seconds before the first retry, then twice as long each time, at most an hour "
        f"(default 1)",
    )
    parser.add_argument(
        "--delay",
        type=bounded(0, MAX_DELAY),
        default=0,
        metavar="SECONDS",
        help=f"hold the jobs back this long before they may run (0 to {MAX_DELAY}, thirty days; default 0)",
    )
    parser.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default=Priority.NORMAL.value,
        help="high jobs are served before normal, normal before low (default normal)",
    )


def job_settings(args: argparse.Namespace) -> JobSettings:
    """The options as JobSettings (a bad QUEUING_JOB_TIMEOUT or QUEUING_RETRY_BACKOFF: ConfigError)."""
    return JobSettings(attempts=args.attempts, delay=args.delay, priority=Priority(args.priority))
