"""Task 8 — a job-creation function, and its tests (tests/test_8_job.py).

Teaches: putting queue logic in a function that a test can drive.
Use:     from importlib import import_module
         create_push_notifications_jobs = import_module("8_job").create_push_notifications_jobs
Test:    pytest tests/test_8_job.py -s   (no Redis server needed: the queue lives on fakeredis;
                                          -s shows the lines it prints)
"""

from __future__ import annotations

from typing import Any

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

from rq import Queue
from rq.job import Job

from queuing_system.console import say
from queuing_system.enqueue import enqueue_many
from queuing_system.events import JobEvents
from queuing_system.keys import PROCESS_7, QUEUE_8
from queuing_system.notifications import follow_notification_job
from queuing_system.queues import job_queue


def create_push_notifications_jobs(
    jobs: list[dict[str, Any]], queue: Queue, events: JobEvents | None = None
) -> list[Job]:
    """Create one `push_notification_code_3` job per item of `jobs`; return them.

    `queue` plays Kue's queue object: the broker the jobs go to (its
    connection); the jobs' own queue is always `push_notification_code_3`.
    Only a real `list` is accepted — like the original's `Array.isArray`, which
    also refuses other iterables (tuples, generators, dicts, strings).
    With `events` (opened before this call), each job's progress / completed /
    failed lines are printed as those events arrive.
    """
    if not isinstance(jobs, list):
        raise TypeError("Jobs is not an array")

    def created(job: Job) -> None:
        say(f"Notification job created: {job.id}")
        if events is not None:
            follow_notification_job(events, job)

    # Consecutive ids reserved at once, the jobs written in a few round trips.
    return enqueue_many(job_queue(QUEUE_8, queue.connection), PROCESS_7, jobs, created=created)


if __name__ == "__main__":
    from queuing_system.console import arguments

    arguments(__doc__)
    say("8_job.py holds create_push_notifications_jobs(); it is not run by itself. Its tests are the lesson:")
    say("    pytest tests/test_8_job.py -s      (-s shows the lines it prints: Notification job created: 1, …)")
