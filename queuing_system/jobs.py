"""Creating jobs the Kue way on RQ: the names the scripts and tests import, from where they live.

- `queuing_system.queues`: which queue (priorities are sibling queues) and the connection RQ reads;
- `queuing_system.job_settings`: Kue's job options (attempts, backoff, delay, priority, ttl);
- `queuing_system.enqueue`: putting one job or many on a queue, each at most once;
- `queuing_system.creator_options`: the creators' command line.
"""

from queuing_system.creator_options import add_job_options, bounded, create_or_explain, job_settings
from queuing_system.enqueue import (
    ON_FAILURE,
    ON_SUCCESS,
    EnqueueInterruptedError,
    enqueue,
    enqueue_many,
    next_job_id,
)
from queuing_system.job_settings import MAX_ATTEMPTS, MAX_BACKOFF, MAX_DELAY, JobSettings, no_retry
from queuing_system.queues import Priority, job_queue, priority_queue_name, queue_connection, queues_by_priority

__all__ = [
    "MAX_ATTEMPTS",
    "MAX_BACKOFF",
    "MAX_DELAY",
    "ON_FAILURE",
    "ON_SUCCESS",
    "EnqueueInterruptedError",
    "JobSettings",
    "Priority",
    "add_job_options",
    "bounded",
    "create_or_explain",
    "enqueue",
    "enqueue_many",
    "job_queue",
    "job_settings",
    "next_job_id",
    "no_retry",
    "priority_queue_name",
    "queue_connection",
    "queues_by_priority",
]
