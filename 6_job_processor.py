"""Task 6 — a job processor.

Teaches: a worker that takes jobs off a queue and does them.
Run:     python 6_job_processor.py [--concurrency N] [--processes P] [--verbose]    (Ctrl+C to stop; the
         jobs in hand are finished first)
Prints:  Sending notification to <phone>, with message: <message>   for each job
"""

import argparse
import sys
from typing import Any

from queuing_system.console import arguments, run_lesson, say
from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.notifications import validate_notification
from queuing_system.worker import processing_options, run_processor


def send_notification(phone_number: str, message: str) -> None:
    say(f"Sending notification to {phone_number}, with message: {message}")


def process_job(data: Any = None) -> None:
    """What runs for each job on `push_notification_code` (Kue's `queue.process` handler)."""
    phone_number, message = validate_notification(data)
    send_notification(phone_number, message)


if __name__ == "__main__":

    def options(parser: argparse.ArgumentParser) -> None:
        processing_options(parser, concurrency=1, processes=1)
        parser.add_argument(
            "--verbose", action="store_true", help="show RQ's worker log (and the tracebacks of failed jobs)"
        )

    args = arguments(__doc__, options)
    # Only this function runs here: a job naming anything else fails without running.
    run_lesson(
        lambda: sys.exit(
            run_processor(
                QUEUE_6,
                {PROCESS_6: process_job},
                concurrency=args.concurrency,
                processes=args.processes,
                verbose=args.verbose,
            )
        ),
        interrupted_exit=0,
    )
