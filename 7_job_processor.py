"""Task 7 — a processor with progress, failures and two jobs at a time.

Teaches: reporting progress, failing a job on purpose, processing concurrently.
Run:     python 7_job_processor.py [--concurrency N] [--processes P] [--verbose]    (Ctrl+C to stop;
         NOTIFICATION_SEND_MS=100 makes each send take 100 ms, so you can watch two run at once, or
         fifty with --concurrency 50)
Prints:  Sending notification to <phone>, with message: <message>   for each number not blacklisted
"""

import argparse
import sys
from typing import Any

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

from rq import get_current_job
from rq.job import Job

from queuing_system.console import arguments, run_lesson, say
from queuing_system.events import report_progress
from queuing_system.jobs import no_retry
from queuing_system.keys import PROCESS_7, QUEUE_7
from queuing_system.notifications import send_latency, simulate_sending, validate_notification
from queuing_system.worker import processing_options, run_processor

BLACKLISTED_NUMBERS = ["4153518780", "4153518781"]


class BlacklistedNumberError(Exception):
    """A permanent failure: retrying will not un-blacklist the number."""


def send_notification(phone_number: str, message: str, job: Job) -> None:
    report_progress(job, 0)
    if phone_number in BLACKLISTED_NUMBERS:
        raise no_retry(BlacklistedNumberError(f"Phone number {phone_number} is blacklisted"))
    report_progress(job, 50)
    simulate_sending()
    say(f"Sending notification to {phone_number}, with message: {message}")


def process_job(data: Any = None) -> None:
    """What runs for each job on `push_notification_code_2` (Kue's `queue.process` handler)."""
    phone_number, message = validate_notification(data)
    job = get_current_job()  # the job RQ runs this call for
    if job is None:
        raise RuntimeError("process_job runs inside a job only")
    send_notification(phone_number, message, job)


def main(concurrency: int, processes: int, verbose: bool) -> int:
    send_latency()  # NOTIFICATION_SEND_MS checked before anything runs
    # Kue's `queue.process(name, 2, fn)`: two jobs at a time (by default in two worker processes);
    # only this function runs here.
    return run_processor(
        QUEUE_7, {PROCESS_7: process_job}, concurrency=concurrency, processes=processes, verbose=verbose
    )


if __name__ == "__main__":

    def options(parser: argparse.ArgumentParser) -> None:
        processing_options(parser, concurrency=2, processes=2)
        parser.add_argument(
            "--verbose", action="store_true", help="show RQ's worker log (and the tracebacks of failed jobs)"
        )

    args = arguments(__doc__, options)
    run_lesson(lambda: sys.exit(main(args.concurrency, args.processes, args.verbose)), interrupted_exit=0)
