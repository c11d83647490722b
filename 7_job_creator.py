"""Task 7 — creating many jobs and following each one.

Teaches: one creator, many jobs, and the events each job sends back.
Run:     python 7_job_processor.py in one terminal, python 7_job_creator.py in another
Prints:  Notification job created: <id>                 for each of the 11 jobs
         Notification job <id> <n>% complete           as a processor reports progress
         Notification job <id> completed | failed: <error>
Beyond the curriculum: --jobs-file FILE (a JSON array), --attempts N, --delay SECONDS, --priority high|low.
"""

import argparse
import json
from typing import Any

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

from rq.job import Job

from queuing_system.console import arguments, clean, run_lesson, say
from queuing_system.creator_options import (
    HINT_AFTER,
    add_job_options,
    create_or_explain,
    job_settings,
    listen_for_events,
    not_started_hint,
)
from queuing_system.job_settings import JobSettings
from queuing_system.keys import PROCESS_7, QUEUE_7
from queuing_system.notifications import first_invalid, follow_notification_job
from queuing_system.queues import job_queue, queue_connection
from queuing_system.settings import ConfigError

JOBS = [
    {"phoneNumber": "4153518780", "message": "This is the code 1234 to verify your account"},
    {"phoneNumber": "4153518781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4153518743", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4153538781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4153118782", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4153718781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4159518782", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4158718781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4153818782", "message": "This is the code 4321 to verify your account"},
    {"phoneNumber": "4154318781", "message": "This is the code 4562 to verify your account"},
    {"phoneNumber": "4151218782", "message": "This is the code 4321 to verify your account"},
]


def create_jobs(jobs: list[dict[str, Any]], settings: JobSettings) -> None:
    connection = queue_connection()
    queue = job_queue(QUEUE_7, connection)

    # Listen first, then enqueue: no event can slip by.
    with listen_for_events(connection, queue.serializer) as events:

        def created(job: Job) -> None:
            say(f"Notification job created: {job.id}")
            follow_notification_job(events, job)

        # All the jobs in a few round trips (ids reserved at once); a Redis blip is ridden out.
        created_jobs = create_or_explain(queue, PROCESS_7, jobs, settings, created)
        # No processor running? After a few seconds, a hint on stderr says which one to start.
        hint = not_started_hint(queue, "7_job_processor.py", HINT_AFTER)
        events.wait_until_ended([job.id for job in created_jobs], not_started=hint, not_started_after=HINT_AFTER)


MAX_JOBS = 100_000


def load_jobs(path: str) -> list[Any]:
    """The jobs of a --jobs-file; anything wrong with it is one line (exit 2)."""
    try:
        with open(path, encoding="utf-8") as file:
            jobs = json.load(file)
    except (OSError, ValueError) as error:
        raise ConfigError(f"Cannot read jobs from {path}: {clean(error)}") from None
    if not isinstance(jobs, list) or not jobs:
        raise ConfigError(f"Cannot read jobs from {path}: expected a JSON array of jobs")
    if len(jobs) > MAX_JOBS:
        raise ConfigError(f"Cannot read jobs from {path}: {len(jobs)} jobs, at most {MAX_JOBS}")
    return jobs


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs-file",
        metavar="FILE",
        help=f"a JSON array of {{phoneNumber, message}} instead of the 11 (at most {MAX_JOBS})",
    )
    add_job_options(parser)


def main(args: argparse.Namespace) -> None:
    settings = job_settings(args)
    jobs = load_jobs(args.jobs_file) if args.jobs_file else JOBS
    problem = first_invalid(jobs)  # bad data is refused here, before anything is enqueued
    if problem:
        raise ConfigError(f"Cannot read jobs from {args.jobs_file}: {problem}" if args.jobs_file else problem)
    create_jobs(jobs, settings)


if __name__ == "__main__":
    args = arguments(__doc__, options)
    run_lesson(lambda: main(args), interrupted_exit=0)  # Ctrl+C while waiting for the jobs is a normal exit
