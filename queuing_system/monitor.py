"""Queue lengths and job states at a glance, every second (the curriculum's 'queue length' snippet, complete).

    python -m queuing_system.monitor            a snapshot every second until Ctrl+C
    python -m queuing_system.monitor --once     one snapshot (for scripts)
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from queuing_system.console import REDIS_DOWN, backoff, not_connected, run_once, say, sigterm_as_interrupt
from queuing_system.jobs import queue_connection

COLUMNS = ("queued", "started", "scheduled", "deferred", "finished", "failed")


def queue_counts(queue: Queue) -> dict[str, int]:
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.count,
        "scheduled": queue.scheduled_job_registry.count,
        "deferred": queue.deferred_job_registry.count,
        "finished": queue.finished_job_registry.count,
        "failed": queue.failed_job_registry.count,
    }


def snapshot(connection: redis.Redis) -> list[str]:
    """The lines of one snapshot: a table of queues, then the live workers."""
    queues = sorted(Queue.all(connection=connection, serializer=JSONSerializer), key=lambda q: q.name)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [stamp, f"{'queue':<32}" + "".join(f"{name:>10}" for name in COLUMNS)]
    for queue in queues:
        counts = queue_counts(queue)
        lines.append(f"{queue.name:<32}" + "".join(f"{counts[name]:>10}" for name in COLUMNS))
    if not queues:
        lines.append("(no queues yet)")
    workers = sorted(Worker.all(connection=connection, serializer=JSONSerializer), key=lambda w: w.name)
    lines.append(f"workers: {len(workers)}")
    for worker in workers:
        job_id = worker.get_current_job_id()
        doing = f"job {job_id}" if job_id else "idle"
        lines.append(f"  {worker.name[:12]}  pid {worker.pid}  {worker.get_state():<9} {doing:<12} "
                     f"on {', '.join(worker.queue_names())}")
    return lines


def watch(interval: float) -> None:
    """A snapshot every `interval` seconds, ridden through Redis going away. No screen clearing."""
    sigterm_as_interrupt()
    delays = backoff()
    connection = queue_connection()
    while True:
        try:
            say("\n".join(snapshot(connection)) + "\n")
            delays = backoff()
            time.sleep(interval)
        except REDIS_DOWN as error:
            not_connected(error)
            time.sleep(next(delays))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m queuing_system.monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots (default 1)")
    args = parser.parse_args(argv)
    if args.once:
        run_once(lambda: say("\n".join(snapshot(queue_connection()))))
        return
    try:
        watch(args.interval)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
