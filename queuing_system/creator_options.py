"""The creators' command line: Kue's job options as flags, and a bulk enqueue that explains itself."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.exceptions import ResponseError
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.utils import as_text

from queuing_system.console import REDIS_DOWN, backoff
from queuing_system.enqueue import EnqueueInterruptedError, enqueue_many
from queuing_system.events import JobEvents
from queuing_system.job_settings import MAX_ATTEMPTS, MAX_DELAY, JobSettings
from queuing_system.queues import Priority, job_queue
from queuing_system.refusals import code_of, refusal, say_why_not_yet
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
        print(
            f"Gave up: {stop.why}; created {made} of {stop.wanted} jobs{which}, not the other {stop.wanted - made}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)


# Seconds a creator waits, hearing nothing of its jobs, before it suggests starting a processor.
HINT_AFTER = 5.0


def not_started_hint(queue: Queue, processor: str, after: float) -> Callable[[list[str]], None]:
    """For `JobEvents.wait_until_ended(not_started=…)`: when the first job still waiting is queued
    and no processor serves its queue, say once (on stderr: stdout keeps the curriculum's lines)
    where it waits and what to start."""

    def hint(waiting: list[str]) -> None:
        try:
            status, origin_field = queue.connection.hmget(Job.key_for(waiting[0]), "status", "origin")
        except ResponseError as error:
            if code_of(error) == "WRONGTYPE":
                return  # not a job any more: the creator's catch-up reports it, naming the key
            raise
        if status is None or as_text(status) != JobStatus.QUEUED.value:
            return  # started, scheduled for later, or gone: nothing a processor start would change
        origin = as_text(origin_field or queue.name.encode())
        if Worker.count(connection=queue.connection, queue=job_queue(origin, queue.connection)) > 0:
            return  # served: it waits its turn
        jobs = f"Job {waiting[0]} has" if len(waiting) == 1 else f"{len(waiting)} jobs have"
        print(
            f"{jobs} not started after {after:g} s: waiting on queue {origin}, which no processor serves; "
            f"start one: python {processor}",
            file=sys.stderr,
            flush=True,
        )

    return hint


def listen_for_events(connection: redis.Redis, serializer: Any) -> JobEvents:
    """A creator's first steps: reach Redis and subscribe to job events (before enqueueing, so no
    event is missed). Redis away: the error goes up (the not-connected line, exit 1). Redis
    refusing for now (busy with a script, loading its data): said on stderr and waited out for
    QUEUING_ENQUEUE_PATIENCE seconds, then one line and exit 1."""
    deadline = time.monotonic() + env_int("QUEUING_ENQUEUE_PATIENCE", 30, 1, 3600)
    delays = backoff()
    while True:
        try:
            connection.ping()
            return JobEvents(connection, serializer=serializer)
        except (*REDIS_DOWN, ResponseError) as error:
            said = refusal(error)
            if said is None:
                raise
            if time.monotonic() >= deadline:
                print(f"Gave up: Redis kept refusing ({said}); created no job", file=sys.stderr, flush=True)
                sys.exit(1)
            say_why_not_yet(error, refused="the connection")
            time.sleep(next(delays))
