"""Queue lengths, job states and live workers at a glance (the curriculum's 'queue length' snippet, complete).

    python -m queuing_system.monitor                 redrawn in place every second until Ctrl+C
    python -m queuing_system.monitor --once          one snapshot (for scripts)
    python -m queuing_system.monitor --interval 5    every 5 seconds

It only reads: unlike RQ's own registry counts, it never runs RQ's sweeps (which
would fail abandoned jobs and run their callbacks from here). On a terminal the
snapshot is redrawn in place; piped, each snapshot is printed after the last.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import redis
from rq.utils import as_text

from queuing_system.console import arguments, clean, run_lesson, say
from queuing_system.jobs import queue_connection
from queuing_system.keys import running_key
from queuing_system.reconnect import REDIS_FAULTS, Reconnection
from queuing_system.rq_keys import RQ

COLUMNS = ("queued", "started", "scheduled", "deferred", "finished", "failed")


def _queue_names(connection: redis.Redis) -> list[str]:
    return sorted(as_text(key).removeprefix(RQ.queue_prefix) for key in connection.smembers(RQ.queues))


def queue_counts(connection: redis.Redis, names: list[str]) -> dict[str, dict[str, int]]:
    """Each queue's counts, read without cleaning anything (finished/failed: entries not expired yet)."""
    now = time.time()
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.llen(RQ.queue(name))
            pipeline.zcard(RQ.wip(name))
            pipeline.zcard(RQ.scheduled(name))
            pipeline.zcard(RQ.deferred(name))
            pipeline.zcount(RQ.finished(name), now, "+inf")
            pipeline.zcount(RQ.failed(name), now, "+inf")
        counts = pipeline.execute()
    return {name: dict(zip(COLUMNS, counts[i * 6 : i * 6 + 6], strict=True)) for i, name in enumerate(names)}


def live_workers(connection: redis.Redis) -> list[dict[str, str]]:
    """Workers whose key still exists (their lease holds) and that have not announced their death."""
    keys = sorted(as_text(key) for key in connection.smembers(RQ.workers))
    with connection.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.hgetall(key)
            pipeline.get(running_key(key.removeprefix(RQ.worker_prefix)))
            pipeline.smembers(f"{key}:executions")
        replies = pipeline.execute()
    workers = []
    for index, key in enumerate(keys):
        data, running, executions = replies[index * 3 : index * 3 + 3]
        fields = {as_text(k): as_text(v) for k, v in data.items()}
        if not fields or "death" in fields:
            continue
        in_hand = as_text(running) if running else next((as_text(e) for e in executions), "")
        fields["name"] = key.removeprefix(RQ.worker_prefix)
        fields["job"] = in_hand.split(":")[0] if in_hand else ""
        workers.append(fields)
    return workers


def snapshot(connection: redis.Redis) -> list[str]:
    """The lines of one snapshot: a table of queues, then the live workers."""
    names = _queue_names(connection)
    counts = queue_counts(connection, names)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [stamp, f"{'queue':<32}" + "".join(f"{column:>10}" for column in COLUMNS)]
    for name in names:
        lines.append(f"{clean(name):<32}" + "".join(f"{counts[name][column]:>10}" for column in COLUMNS))
    if not names:
        lines.append("(no queues yet)")
    workers = live_workers(connection)
    lines.append(f"workers: {len(workers)}")
    for worker in workers:
        doing = f"job {clean(worker['job'])}" if worker["job"] else "-"
        lines.append(
            f"  {worker['name'][:12]}  pid {worker.get('pid', '?'):<7} {worker.get('state', '?'):<6} "
            f"{doing:<12} on {clean(worker.get('queues', '').replace(',', ', '))}"
        )
    return lines


def watch(interval: float) -> None:
    """A snapshot every `interval` seconds, ridden through Redis going away."""
    in_place = sys.stdout.isatty()
    drawn = 0
    reconnection = Reconnection()
    connection = queue_connection()
    while True:
        try:
            lines = snapshot(connection)
            reconnection.succeeded()
        except REDIS_FAULTS as error:
            reconnection.failed(error)
            drawn = 0  # the error line broke the picture: draw afresh below it
            continue
        if in_place and drawn:
            sys.stdout.write(f"\033[{drawn}F\033[J")  # back to the top of the last snapshot, erase below
        say("\n".join(lines) + ("" if in_place else "\n"))
        drawn = len(lines)
        time.sleep(interval)


def interval(raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0.1 to 3600, got {raw!r}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.prog = "python -m queuing_system.monitor"
        parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
        parser.add_argument(
            "--interval", type=interval, default=1.0, help="seconds between snapshots (0.1 to 3600, default 1)"
        )

    args = arguments(__doc__, options, argv)
    if args.once:
        run_lesson(lambda: say("\n".join(snapshot(queue_connection()))))
    run_lesson(lambda: watch(args.interval), interrupted_exit=0)


if __name__ == "__main__":
    main()
