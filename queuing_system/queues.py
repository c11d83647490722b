"""Which queue a job goes to, and the connection RQ reads it with.

Every queue uses RQ's JSON serializer: the default (pickle) would let anyone
who can write to Redis run code inside the workers. Kue's priorities are
sibling queues `<name>:high` and `<name>:low`, which processors serve high,
normal, low. Key names come from RQ (`Queue.key`, `Job.key_for`), so
`RQ_KEY_PREFIX` is honoured as RQ honours it.
"""

from __future__ import annotations

from enum import Enum

import redis
from rq import Queue
from rq.serializers import JSONSerializer

from queuing_system.settings import connect


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


def queue_connection(url: str | None = None) -> redis.Redis:
    """A client RQ can use: RQ reads raw bytes, so no decoding. A silent server is an error after 10 s
    (a processor raises that above its blocking wait)."""
    return connect(url, decode_responses=False, socket_timeout=10.0)


def job_queue(name: str, connection: redis.Redis) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def queue_for_priority(queue: Queue, priority: Priority) -> Queue:
    """The sibling of `queue` that holds jobs of `priority`."""
    if priority is Priority.NORMAL:
        return queue
    return job_queue(priority_queue_name(queue.name, priority), queue.connection)
