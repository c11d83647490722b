"""Dead letters: the jobs that failed for good, kept in RQ's failed registry (a week by default).

python -m queuing_system.dead_letters                  list them, every queue (the same as `list`)
python -m queuing_system.dead_letters list
python -m queuing_system.dead_letters requeue 12 15    put those back on their queue
python -m queuing_system.dead_letters requeue --all    put every one back
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import datetime, timezone

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer

from queuing_system.console import arguments, clean, run_lesson, say
from queuing_system.jobs import queue_connection


def failed_jobs(connection: redis.Redis) -> Iterator[tuple[FailedJobRegistry, str, Job | None]]:
    """Every (registry, job id, job or None when its data cannot be read) of every queue, oldest first."""
    for queue in sorted(Queue.all(connection=connection, serializer=JSONSerializer), key=lambda q: q.name):
        registry = FailedJobRegistry(queue=queue)
        for job_id in registry.get_job_ids():
            try:
                yield registry, job_id, Job.fetch(job_id, connection=connection, serializer=JSONSerializer)
            except Exception:  # gone, or written by someone else in a form RQ cannot read
                yield registry, job_id, None


def error_of(job: Job) -> str:
    """The one-line reason: what was recorded with the failure, else the traceback's last line."""
    if job.meta.get("error"):
        return str(job.meta["error"])
    lines = (job.exc_info or "").strip().splitlines()
    return lines[-1] if lines else "unknown error"


def failed_at(registry: FailedJobRegistry, job: Job) -> datetime | None:
    """When it failed: its end, else its last result, else when it entered the registry."""
    if job.ended_at:
        return job.ended_at
    latest = Result.fetch_latest(job, serializer=JSONSerializer)
    if latest is not None:
        return latest.created_at
    expires = registry.connection.zscore(registry.key, job.id)
    if expires is not None and job.failure_ttl:
        return datetime.fromtimestamp(expires - job.failure_ttl, tz=timezone.utc)
    return None


def describe(registry: FailedJobRegistry, job_id: str, job: Job | None) -> str:
    if job is None:
        return f"job {clean(job_id)} on {clean(registry.name)}: its data cannot be read"
    when = failed_at(registry, job)
    stamp = f", failed {when:%Y-%m-%d %H:%M:%S} UTC" if when else ""
    return f"job {clean(job.id)} on {clean(job.origin)}{stamp}: {clean(error_of(job))}"


def list_failed(connection: redis.Redis) -> int:
    found = 0
    for registry, job_id, job in failed_jobs(connection):
        say(describe(registry, job_id, job))
        found += 1
    if not found:
        say("No failed jobs.")
    return 0


def requeue(connection: redis.Redis, job_ids: list[str], every: bool) -> int:
    wanted = set(job_ids)
    for registry, job_id, job in failed_jobs(connection):
        if job is not None and (every or job_id in wanted):
            registry.requeue(job)
            say(f"Requeued job {clean(job.id)} on {clean(job.origin)}")
            wanted.discard(job_id)
    for job_id in sorted(wanted):
        print(f"No failed job {clean(job_id)}", file=sys.stderr)
    return 1 if wanted else 0


def main(argv: list[str] | None = None) -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.prog = "python -m queuing_system.dead_letters"
        commands = parser.add_subparsers(dest="command")
        commands.add_parser("list", help="list the failed jobs (the default)")
        again = commands.add_parser("requeue", help="put failed jobs back on their queue")
        again.add_argument("job_ids", nargs="*", metavar="JOB_ID")
        again.add_argument("--all", action="store_true", help="every failed job")
        parser.epilog = "requeue needs job ids or --all"

    args = arguments(__doc__, options, argv)
    if args.command == "requeue" and not (args.job_ids or args.all):
        print("python -m queuing_system.dead_letters requeue: give job ids, or --all", file=sys.stderr)
        sys.exit(2)

    def run() -> None:
        connection = queue_connection()
        connection.ping()
        if args.command == "requeue":
            sys.exit(requeue(connection, args.job_ids, args.all))
        sys.exit(list_failed(connection))

    run_lesson(run)


if __name__ == "__main__":
    main()
