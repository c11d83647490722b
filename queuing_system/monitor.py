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
from typing import Any

import redis
from redis.exceptions import ResponseError
from rq.utils import as_text

from queuing_system.console import arguments, clean, run_lesson, say
from queuing_system.jobs import queue_connection
from queuing_system.keys import running_key
from queuing_system.reconnect import REDIS_FAULTS, Reconnection
from queuing_system.refusals import said
from queuing_system.rq_keys import RQ

COLUMNS = ("queued", "started", "scheduled", "deferred", "finished", "failed")


# The type each key of a queue's row holds (RQ's queue is a list, its registries sorted sets).
_KINDS = ("list", "zset", "zset", "zset", "zset", "zset")


def _queue_names(connection: redis.Redis) -> list[str]:
    return sorted(as_text(key).removeprefix(RQ.queue_prefix) for key in connection.smembers(RQ.queues))


def _row_keys(name: str) -> tuple[str, ...]:
    return (RQ.queue(name), RQ.wip(name), RQ.scheduled(name), RQ.deferred(name), RQ.finished(name), RQ.failed(name))


def _wrong_type(error: object) -> bool:
    return isinstance(error, ResponseError) and said(error).startswith("WRONGTYPE")


def _checked(replies: list[Any]) -> list[Any]:
    """Replies read with raise_on_error=False: a key of the wrong type stays in its place (its row
    says so); any other error (Redis busy, …) is raised, for the whole snapshot."""
    for reply in replies:
        if isinstance(reply, Exception) and not _wrong_type(reply):
            raise reply
    return replies


def _holds(connection: redis.Redis, key: str, wanted: str) -> str:
    return f"Redis key {clean(key)} holds a {as_text(connection.type(key))}, not a {wanted}"


def queue_counts(connection: redis.Redis, names: list[str]) -> dict[str, dict[str, int] | str]:
    """Each queue's counts, read without cleaning anything (finished/failed: entries not expired yet);
    for a queue with a key of the wrong type, the line naming it instead."""
    now = time.time()
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            queue, wip, scheduled, deferred, finished, failed = _row_keys(name)
            pipeline.llen(queue)
            pipeline.zcard(wip)
            pipeline.zcard(scheduled)
            pipeline.zcard(deferred)
            pipeline.zcount(finished, now, "+inf")
            pipeline.zcount(failed, now, "+inf")
        counts = _checked(pipeline.execute(raise_on_error=False))
    rows: dict[str, dict[str, int] | str] = {}
    for i, name in enumerate(names):
        row = counts[i * 6 : i * 6 + 6]
        bad = next((column for column, count in enumerate(row) if isinstance(count, Exception)), None)
        if bad is None:
            rows[name] = dict(zip(COLUMNS, row, strict=True))
        else:
            rows[name] = _holds(connection, _row_keys(name)[bad], _KINDS[bad])
    return rows


def live_workers(connection: redis.Redis) -> list[dict[str, str]]:
    """Workers whose key still exists (their lease holds) and that have not announced their death
    (a worker key of the wrong type is no live worker of ours)."""
    keys = sorted(as_text(key) for key in connection.smembers(RQ.workers))
    with connection.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.hgetall(key)
            pipeline.get(running_key(key.removeprefix(RQ.worker_prefix)))
            pipeline.smembers(f"{key}:executions")
        replies = _checked(pipeline.execute(raise_on_error=False))
    workers = []
    for index, key in enumerate(keys):
        data, running, executions = replies[index * 3 : index * 3 + 3]
        if any(isinstance(reply, Exception) for reply in (data, running, executions)):
            continue
        fields = {as_text(k): as_text(v) for k, v in data.items()}
        if not fields or "death" in fields:
            continue
        in_hand = as_text(running) if running else next((as_text(e) for e in executions), "")
        fields["name"] = key.removeprefix(RQ.worker_prefix)
        fields["job"] = in_hand.split(":")[0] if in_hand else ""
        workers.append(fields)
    return workers


def _queue_lines(connection: redis.Redis) -> list[str]:
    try:
        names = _queue_names(connection)
    except ResponseError as error:
        if not _wrong_type(error):
            raise
        return [_holds(connection, RQ.queues, "set")]
    if not names:
        return ["(no queues yet)"]
    lines = []
    for name, row in queue_counts(connection, names).items():
        shown = row if isinstance(row, str) else "".join(f"{row[column]:>10}" for column in COLUMNS)
        lines.append(f"{clean(name):<32}{shown}")
    return lines


def _worker_lines(connection: redis.Redis) -> list[str]:
    try:
        workers = live_workers(connection)
    except ResponseError as error:
        if not _wrong_type(error):
            raise
        return [f"workers: {_holds(connection, RQ.workers, 'set')}"]
    lines = [f"workers: {len(workers)}"]
    for worker in workers:
        doing = f"job {clean(worker['job'])}" if worker["job"] else "-"
        lines.append(
            f"  {worker['name'][:12]}  pid {worker.get('pid', '?'):<7} {worker.get('state', '?'):<6} "
            f"{doing:<12} on {clean(worker.get('queues', '').replace(',', ', '))}"
        )
    return lines


def snapshot(connection: redis.Redis) -> list[str]:
    """The lines of one snapshot: a table of queues, then the live workers (a key of the wrong type
    is named on its row; the rest is shown as usual)."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [stamp, f"{'queue':<32}" + "".join(f"{column:>10}" for column in COLUMNS)]
    return lines + _queue_lines(connection) + _worker_lines(connection)


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
