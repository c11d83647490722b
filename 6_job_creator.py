"""Task 6 — a job creator.

Teaches: putting a job on a queue and hearing back how it went.
Run:     python 6_job_creator.py     (with python 6_job_processor.py running somewhere)
Prints:  Notification job created: <id>
         then Notification job completed (or Notification job failed) when a processor is done with it.
Beyond the curriculum: --phone-number, --message, --attempts N, --delay SECONDS, --priority high|low.
"""

import argparse
from typing import Any

from queuing_system.console import arguments, clean, run_lesson, say
from queuing_system.creator_options import (
    HINT_AFTER,
    add_job_options,
    create_or_explain,
    job_settings,
    listen_for_events,
    not_started_hint,
)
from queuing_system.events import JobEvent
from queuing_system.job_settings import JobSettings
from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.notifications import first_invalid
from queuing_system.queues import job_queue, queue_connection
from queuing_system.settings import ConfigError

JOB_DATA = {
    "phoneNumber": "4153518743",
    "message": "This is the code 4321 to verify your account",
}


def create_job(data: dict[str, Any], settings: JobSettings) -> None:
    connection = queue_connection()
    queue = job_queue(QUEUE_6, connection)

    # Listen first, then enqueue: no event can slip by.
    with listen_for_events(connection, queue.serializer) as events:
        [job] = create_or_explain(queue, PROCESS_6, [data], settings)
        say(f"Notification job created: {job.id}")

        events.on(job, JobEvent.COMPLETED, lambda _: say("Notification job completed"))
        events.on(job, JobEvent.FAILED, lambda _: say("Notification job failed"))
        events.on(
            job,
            JobEvent.FAILED_ATTEMPT,
            lambda error: say(f"Notification job {job.id} failed attempt: {clean(error)}"),
        )
        # No processor running? After a few seconds, a hint on stderr says which one to start.
        hint = not_started_hint(queue, "6_job_processor.py", HINT_AFTER)
        events.wait_until_ended([job.id], not_started=hint, not_started_after=HINT_AFTER)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--phone-number", default=JOB_DATA["phoneNumber"])
    parser.add_argument("--message", default=JOB_DATA["message"])
    add_job_options(parser)


def main(args: argparse.Namespace) -> None:
    settings = job_settings(args)
    data = {"phoneNumber": args.phone_number, "message": args.message}
    problem = first_invalid([data], numbered=False)  # bad data is refused here, before anything is enqueued
    if problem:
        raise ConfigError(problem)
    create_job(data, settings)


if __name__ == "__main__":
    args = arguments(__doc__, options)
    run_lesson(lambda: main(args), interrupted_exit=0)  # Ctrl+C while waiting for the job is a normal exit
