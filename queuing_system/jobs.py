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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

import redis
from rq import Callback, Queue, Retry, get_current_job
from rq.job import Job
from rq.serializers import JSONSerializer

from queuing_system.events import on_failure, on_success
from queuing_system.keys import JOB_ID_COUNTER
from queuing_system.settings import connect, env_int


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

    timeout: int = field(default_factory=lambda: env_int("QUEUING_JOB_TIMEOUT", 20))  # Kue's ttl
    attempts: int = 1
    backoff: int = field(default_factory=lambda: env_int("QUEUING_RETRY_BACKOFF", 1))  # first retry after, s
    delay: int = 0
    priority: Priority = Priority.NORMAL
    result_ttl: int = 24 * 3600  # finished jobs stay inspectable for a day
    failure_ttl: int = 7 * 24 * 3600  # failed jobs (the dead letters) for a week

    def retry(self) -> Retry | None:
        if self.attempts <= 1:
            return None
        return Retry(max=self.attempts - 1, interval=[self.backoff * 2**n for n in range(self.attempts - 1)])


def queue_connection(url: str | None = None) -> redis.Redis:
    """A client RQ can use: RQ reads raw bytes, so no decoding."""
    return connect(url, decode_responses=False, socket_timeout=None)


def job_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def next_job_id(connection: redis.Redis) -> str:
    """Kue-style ids: 1, 2, 3, … across runs, from one counter."""
    return str(connection.incr(JOB_ID_COUNTER))


def enqueue(
    queue: Queue,
    function: str,
    data: Any = None,
    settings: JobSettings | None = None,
    *,
    on_success: str | Callable[..., Any] = on_success,
    on_failure: str | Callable[..., Any] = on_failure,
) -> Job:
    """Put a job for `function` (a dotted path the processor imports) on `queue`, `data` its argument.

    With a priority other than normal the job goes to the sibling queue; with a
    delay it waits in the scheduled registry. The callbacks default to the
    Kue-style event channel (`queuing_system.events`).
    """
    settings = settings or JobSettings()
    if settings.priority is not Priority.NORMAL:
        queue = job_queue(priority_queue_name(queue.name, settings.priority), queue.connection)
    job = queue.create_job(
        function,
        args=() if data is None else (data,),
        job_id=next_job_id(queue.connection),
        timeout=settings.timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        retry=settings.retry(),
        on_success=Callback(on_success),
        on_failure=Callback(on_failure),
    )
    if settings.delay > 0:
        return queue.schedule_job(job, datetime.now(timezone.utc) + timedelta(seconds=settings.delay))
    return queue.enqueue_job(job)


def no_retry(error: Exception) -> Exception:
    """Mark the running job's failure as permanent (no further attempts): `raise no_retry(Error(...))`."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    return error


# -- the creators' command line ----------------------------------------------------------------


def add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--attempts", type=int, default=1, metavar="N",
                        help="try a failing job up to N times, with exponential backoff (default 1)")
    parser.add_argument("--delay", type=int, default=0, metavar="SECONDS",
                        help="hold the job back this long before it may run (default 0)")
    parser.add_argument("--priority", choices=[p.value for p in Priority], default=Priority.NORMAL.value,
                        help="high jobs are served before normal, normal before low (default normal)")


def job_settings(args: argparse.Namespace, parser: argparse.ArgumentParser) -> JobSettings:
    if args.attempts < 1:
        parser.error("--attempts must be at least 1")
    if args.delay < 0:
        parser.error("--delay cannot be negative")
    return JobSettings(attempts=args.attempts, delay=args.delay, priority=Priority(args.priority))
