"""Creating jobs the Kue way on RQ: JSON payloads, numeric ids, event callbacks.

Every queue uses RQ's JSON serializer: the default (pickle) would let anyone
who can write to Redis run code inside the workers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Callback, Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from queuing_system.events import on_failure, on_success
from queuing_system.keys import JOB_ID_COUNTER
from queuing_system.settings import connect


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass(frozen=True)
class JobSettings:
    """How long a job may run, how long finished/failed jobs are kept."""

    timeout: int = field(default_factory=lambda: _env_int("QUEUING_JOB_TIMEOUT", 30))
    result_ttl: int = 24 * 3600  # finished jobs stay inspectable for a day
    failure_ttl: int = 7 * 24 * 3600  # failed jobs (the dead letters) for a week


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
    """Put a job for `function` (a dotted path the processor imports) on `queue`, with `data` as its argument.

    The callbacks default to the Kue-style event channel (`queuing_system.events`).
    """
    settings = settings or JobSettings()
    return queue.enqueue_call(
        function,
        args=() if data is None else (data,),
        job_id=next_job_id(queue.connection),
        timeout=settings.timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        on_success=Callback(on_success),
        on_failure=Callback(on_failure),
    )
