"""Task 6 — a job creator.

Teaches: putting a job on a queue and hearing back how it went.
Run:     python 6_job_creator.py     (with python 6_job_processor.py running somewhere)
         Options beyond the curriculum: --phone-number, --message, --attempts N, --delay S, --priority high|low
Prints:  Notification job created: <id>
         then Notification job completed (or Notification job failed) when a processor is done with it.
"""

import argparse
import sys

from queuing_system.console import run_once, say
from queuing_system.events import JobEvent, JobEvents
from queuing_system.jobs import (
    JobSettings,
    add_job_options,
    create_or_explain,
    job_queue,
    job_settings,
    queue_connection,
)
from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.notifications import first_invalid

JOB_DATA = {
    "phoneNumber": "4153518780",
    "message": "This is the code to verify your account",
}


def create_job(data: dict, settings: JobSettings) -> None:
    connection = queue_connection()
    connection.ping()
    queue = job_queue(QUEUE_6, connection)

    # Listen first, then enqueue: no event can slip by.
    with JobEvents(connection, serializer=queue.serializer) as events:
        [job] = create_or_explain(queue, PROCESS_6, [data], settings)
        say(f"Notification job created: {job.id}")

        events.on(job.id, JobEvent.COMPLETED, lambda _: say("Notification job completed"))
        events.on(job.id, JobEvent.FAILED, lambda _: say("Notification job failed"))
        events.on(job.id, JobEvent.FAILED_ATTEMPT,
                  lambda error: say(f"Notification job {job.id} failed attempt: {error}"))
        events.wait_until_ended([job.id])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Create one push_notification_code job.")
    parser.add_argument("--phone-number", default=JOB_DATA["phoneNumber"])
    parser.add_argument("--message", default=JOB_DATA["message"])
    add_job_options(parser)
    args = parser.parse_args()
    settings = job_settings(args, parser)
    data = {"phoneNumber": args.phone_number, "message": args.message}

    # Bad data is refused here, before anything is enqueued.
    problem = first_invalid([data])
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)

    run_once(lambda: create_job(data, settings), interrupted_exit=0)  # Ctrl+C while waiting is a normal exit
