"""The creators' command line: Kue's job options as flags, and a bulk enqueue that explains itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rq import Queue
from rq.job import Job

from queuing_system.console import not_connected
from queuing_system.enqueue import EnqueueInterruptedError, enqueue_many, refusal
from queuing_system.job_settings import MAX_ATTEMPTS, MAX_DELAY, JobSettings
from queuing_system.queues import Priority
from queuing_system.settings import env_int


def bounded(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: a whole number within bounds (argparse turns the ValueError into one line)."""

    def number(raw: str) -> int:
        if not raw.strip().lstrip("-").isdigit() or not minimum <= int(raw) <= maximum:
            raise argparse.ArgumentTypeError(f"expected a whole number from {minimum} to {maximum}, got {raw!r}")
        return int(raw)

    return number


def add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--attempts",
        type=bounded(1, MAX_ATTEMPTS),
        default=1,
        metavar="N",
        help=f"try a failing job up to N times (1 to {MAX_ATTEMPTS}), waiting QUEUING_RETRY_BACKOFF "
        f"seconds before the first retry, then twice as long each time, at most an hour "
        f"(default 1)",
    )
    parser.add_argument(
        "--delay",
        type=bounded(0, MAX_DELAY),
        default=0,
        metavar="SECONDS",
        help=f"hold the jobs back this long before they may run (0 to {MAX_DELAY}, thirty days; default 0)",
    )
    parser.add_argument(
        "--priority",
        choices=[p.value for p in Priority],
        default=Priority.NORMAL.value,
        help="high jobs are served before normal, normal before low (default normal)",
    )


def job_settings(args: argparse.Namespace) -> JobSettings:
    """The options as JobSettings (a bad QUEUING_JOB_TIMEOUT or QUEUING_RETRY_BACKOFF: ConfigError)."""
    return JobSettings(attempts=args.attempts, delay=args.delay, priority=Priority(args.priority))


def id_ranges(ids: Sequence[str]) -> str:
    """`1-500, 503` for ids 1 to 500 and 503."""
    numbers = sorted(int(job_id) for job_id in ids)
    ranges: list[list[int]] = []
    for number in numbers:
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def say_why_not_yet(error: BaseException) -> None:
    """A failed attempt: what Redis refused (on stderr: it is not a lost connection), or the
    not-connected line (on stdout, as the original prints it)."""
    said = refusal(error)
    if said is None:
        not_connected(error)
    else:
        print(f"Redis refused the write: {said}", file=sys.stderr, flush=True)


def create_or_explain(
    queue: Queue,
    function: str,
    datas: Sequence[Any],
    settings: JobSettings,
    created: Callable[[Job], None] = lambda job: None,
) -> list[Job]:
    """`enqueue_many` for a creator script: on each failed attempt, the not-connected line (stdout, as
    the original prints it) or what Redis refused (stderr); if that lasts, one line saying which jobs
    were created and which were not, then exit 1."""
    patience = env_int("QUEUING_ENQUEUE_PATIENCE", 30, 1, 3600)
    try:
        return enqueue_many(
            queue,
            function,
            datas,
            settings,
            created=created,
            retrying=say_why_not_yet,
            give_up_after=patience,
        )
    except EnqueueInterruptedError as stop:
        made = len(stop.created)
        which = f" (ids {id_ranges([job.id for job in stop.created])})" if made else ""
        rest = f"jobs {made + 1}-{stop.wanted}" if stop.wanted - made > 1 else f"job {stop.wanted}"
        print(
            f"Gave up: {stop.why}; created {made} of {stop.wanted} jobs{which}; not created: {rest} of the list",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
