"""Dead letters: the jobs that failed for good, kept in RQ's failed registry (a week by default).

    python -m queuing_system.dead_letters                  list them, every queue
    python -m queuing_system.dead_letters requeue 12 15    put those back on their queue
    python -m queuing_system.dead_letters requeue --all    put every one back
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from queuing_system.console import run_once, say
from queuing_system.jobs import queue_connection


def failed_jobs(connection: redis.Redis) -> Iterator[tuple[FailedJobRegistry, Job]]:
    """Every (registry, job) in the failed registries of every queue, oldest first."""
    for queue in sorted(Queue.all(connection=connection, serializer=JSONSerializer), key=lambda q: q.name):
        registry = FailedJobRegistry(queue=queue)
        ids = registry.get_job_ids()
        for job in Job.fetch_many(ids, connection=connection, serializer=JSONSerializer):
            if job is not None:
                yield registry, job


def error_of(job: Job) -> str:
    """The one-line reason: what the failure callback recorded, else the traceback's last line."""
    if job.meta.get("error"):
        return job.meta["error"]
    lines = (job.exc_info or "").strip().splitlines()
    return lines[-1] if lines else "unknown error"


def describe(job: Job) -> str:
    when = job.ended_at.strftime("%Y-%m-%d %H:%M:%S") if job.ended_at else "?"
    return f"job {job.id} on {job.origin}, failed {when} UTC: {error_of(job)}"


def list_failed(connection: redis.Redis) -> int:
    found = 0
    for _, job in failed_jobs(connection):
        say(describe(job))
        found += 1
    if not found:
        say("No failed jobs.")
    return 0


def requeue(connection: redis.Redis, job_ids: list[str], every: bool) -> int:
    wanted = set(job_ids)
    for registry, job in failed_jobs(connection):
        if every or job.id in wanted:
            registry.requeue(job.id)
            say(f"Requeued job {job.id} on {job.origin}")
            wanted.discard(job.id)
    for job_id in sorted(wanted):
        print(f"No failed job {job_id}", file=sys.stderr)
    return 1 if wanted else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m queuing_system.dead_letters", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command")
    again = commands.add_parser("requeue", help="put failed jobs back on their queue")
    again.add_argument("job_ids", nargs="*")
    again.add_argument("--all", action="store_true", help="every failed job")
    args = parser.parse_args(argv)
    if args.command == "requeue" and not (args.job_ids or args.all):
        parser.error("requeue needs job ids or --all")

    def run() -> None:
        connection = queue_connection()
        connection.ping()
        if args.command == "requeue":
            sys.exit(requeue(connection, args.job_ids, args.all))
        sys.exit(list_failed(connection))

    run_once(run)


if __name__ == "__main__":
    main()
