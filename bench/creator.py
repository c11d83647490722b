"""7_job_creator.py at scale, timed: what bench/kue/creator.js does for Kue, the same way.

JOBS jobs on push_notification_code_2 (the lesson's enqueue_many and JobEvents), every event line
printed as the lesson prints it; ONE_AT_A_TIME=1 creates each job once the previous one has ended;
ENQUEUE_ONLY=1 stops once all are created.
Prints its timings as JSON on stderr: enqueue_s, total_s (first job created -> last end heard),
p50_ms/p99_ms (a job's creation -> its end heard).
"""

from __future__ import annotations

import json
import os
import sys
import time

from rq.job import Job

from bench.common import percentile
from queuing_system.console import say
from queuing_system.enqueue import enqueue_many
from queuing_system.events import JobEvent, JobEvents
from queuing_system.keys import PROCESS_7, QUEUE_7
from queuing_system.notifications import follow_notification_job
from queuing_system.queues import job_queue, queue_connection

DATA = {"phoneNumber": "4153518743", "message": "This is the code 4321 to verify your account"}


def main() -> None:
    count = int(os.environ.get("JOBS", "2000"))
    one_at_a_time = os.environ.get("ONE_AT_A_TIME") == "1"
    connection = queue_connection()
    queue = job_queue(QUEUE_7, connection)
    created_at: dict[str, float] = {}
    latencies: list[float] = []

    with JobEvents(connection, serializer=queue.serializer) as events:

        def created(job: Job) -> None:
            created_at[job.id] = time.perf_counter()
            say(f"Notification job created: {job.id}")
            follow_notification_job(events, job)

            def ended(_: object, job_id: str = job.id) -> None:
                latencies.append((time.perf_counter() - created_at[job_id]) * 1000)

            events.follow(job, {JobEvent.COMPLETED: ended, JobEvent.FAILED: ended})

        start = time.perf_counter()
        if one_at_a_time:
            for _ in range(count):
                [job] = enqueue_many(queue, PROCESS_7, [DATA], created=created)
                events.wait_until_ended([job.id])
            enqueue_s = None
        else:
            jobs = enqueue_many(queue, PROCESS_7, [DATA] * count, created=created)
            enqueue_s = time.perf_counter() - start
            if os.environ.get("ENQUEUE_ONLY") != "1":
                events.wait_until_ended([job.id for job in jobs])
        total_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "jobs": count,
                "enqueue_s": enqueue_s,
                "total_s": total_s,
                "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99),
            }
        ),
        file=sys.stderr,
        flush=True,
    )


if __name__ == "__main__":
    main()
