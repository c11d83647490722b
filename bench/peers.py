"""The common workload, side by side with BullMQ: enqueue, drain a full queue, end to end, CPU per job.

Run:  .venv/bin/python -m bench.peers [--jobs 5000] [--rounds 3] [--no-bullmq]

Workload: --jobs jobs of a function that returns its argument, on one private Redis; ours is a
processor with two workers (`python -m bench.echo worker`), BullMQ one Worker with concurrency 2
(BullMQ 6.7 installed with npm into a temporary folder for this run, nothing kept). The sides
alternate, --rounds times each (who goes first alternates too); medians are printed with ours ÷ BullMQ.

- enqueue: the producer's own clock around its bulk enqueue (no worker running);
- drain: the queue full, then a worker; from the first job started to the last job ended, read from
  the jobs themselves (RQ's started_at/ended_at, BullMQ's processedOn/finishedOn);
- end to end: a worker waiting, then the producer; from the producer's first enqueue to the last end;
- worker CPU and Redis CPU per job during the end-to-end run (the worker's whole process tree from
  /proc, Redis's INFO cpu, which includes the enqueue); start-up is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis

from bench.common import bench_redis, node_packages
from queuing_system.processes import ROOT

BULLMQ_DIR = Path(__file__).with_name("bullmq")
TICKS = os.sysconf("SC_CLK_TCK")


def session_cpu_seconds(session: int) -> float:
    """User + system CPU of every live process in `session` (a worker and the processes it forked)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == session:  # field 6 of stat: the session id
                total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def redis_cpu_seconds(connection: redis.Redis) -> float:
    info = connection.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


@dataclass
class Side:
    """How to run one side's worker and producer, and read its jobs' times back."""

    name: str
    worker: list[str]
    producer: list[str]
    cwd: Path
    completed_key: str
    waits_with: str
    waiters: int
    spans: Callable[[redis.Redis], tuple[float, float]]  # (first start, last end), epoch seconds

    def env(self, url: str, jobs: int, mode: str) -> dict[str, str]:
        port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
        return {**os.environ, "REDIS_URL": url, "REDIS_PORT": str(port), "JOBS": str(jobs), "MODE": mode}

    def produce(self, url: str, jobs: int) -> dict[str, float]:
        done = subprocess.run(
            self.producer,
            cwd=self.cwd,
            env=self.env(url, jobs, "enqueue"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=600,
            check=True,
        )
        return json.loads(done.stderr.strip().splitlines()[-1])

    @contextlib.contextmanager
    def working(self, url: str, connection: redis.Redis, wait_ready: bool) -> Iterator[subprocess.Popen[bytes]]:
        worker = subprocess.Popen(
            self.worker,
            cwd=self.cwd,
            env=self.env(url, 0, "worker"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            if wait_ready:
                wait_until(lambda: blocked(connection, self.waits_with) >= self.waiters, f"{self.name}'s worker")
            yield worker
        finally:
            os.killpg(worker.pid, 15)
            worker.wait(30)

    def wait_all_done(self, connection: redis.Redis, jobs: int) -> None:
        wait_until(lambda: connection.zcard(self.completed_key) >= jobs, f"{self.name}: {jobs} jobs done", 0.005)


def blocked(connection: redis.Redis, command: str) -> int:
    return sum(1 for client in connection.client_list() if client.get("cmd") == command)


def wait_until(condition: Callable[[], bool], what: str, every: float = 0.02, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(every)


def _rq_spans(connection: redis.Redis) -> tuple[float, float]:
    starts, ends = [], []
    for key in connection.scan_iter("rq:job:*", count=1000):
        started, ended = connection.hmget(key, "started_at", "ended_at")
        if started and ended:
            starts.append(datetime.fromisoformat(started.decode().replace("Z", "+00:00")).timestamp())
            ends.append(datetime.fromisoformat(ended.decode().replace("Z", "+00:00")).timestamp())
    return min(starts), max(ends)


def _bullmq_spans(connection: redis.Redis) -> tuple[float, float]:
    starts, ends = [], []
    for key in connection.scan_iter("bull:bench:[0-9]*", count=1000):
        processed, finished = connection.hmget(key, "processedOn", "finishedOn")
        if processed and finished:
            starts.append(int(processed) / 1000)
            ends.append(int(finished) / 1000)
    return min(starts), max(ends)


def sides(bullmq: Path | None) -> list[Side]:
    python = sys.executable
    found = [
        Side(
            "ours",
            [python, "-m", "bench.echo", "worker"],
            [python, "-m", "bench.echo", "enqueue"],
            ROOT,
            "rq:finished:bench",
            "blmove",
            2,
            _rq_spans,
        )
    ]
    if bullmq is not None:
        found.append(
            Side(
                "BullMQ",
                ["node", "peer.js"],
                ["node", "peer.js"],
                bullmq,
                "bull:bench:completed",
                "bzpopmin",
                1,
                _bullmq_spans,
            )
        )
    return found


def one_round(side: Side, url: str, jobs: int) -> dict[str, float]:
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    enqueue_s = side.produce(url, jobs)["enqueue_s"]
    # Drain: the queue is full; CPU counted from the moment the worker's processes exist.
    with side.working(url, connection, wait_ready=False) as worker:
        wait_until(lambda: session_cpu_seconds(worker.pid) > 0 or worker.poll() is not None, "worker start")
        side.wait_all_done(connection, jobs)
        first, last = side.spans(connection)
    drain_s = last - first
    # End to end, with the CPU each side spends on it: a worker waiting, then the producer.
    connection.flushdb()
    with side.working(url, connection, wait_ready=True) as worker:
        cpu0, redis0 = session_cpu_seconds(worker.pid), redis_cpu_seconds(connection)
        start = side.produce(url, jobs)["start_ms"] / 1000
        side.wait_all_done(connection, jobs)
        worker_cpu = session_cpu_seconds(worker.pid) - cpu0
        redis_cpu = redis_cpu_seconds(connection) - redis0
        _, last = side.spans(connection)
    connection.close()
    return {
        "enqueue": jobs / enqueue_s,
        "drain": jobs / drain_s,
        "end to end": jobs / (last - start),
        "worker µs/job": worker_cpu / jobs * 1e6,
        "redis µs/job": redis_cpu / jobs * 1e6,
    }


def common_workload(url: str, jobs: int, rounds: int, bullmq: Path | None) -> dict[str, dict[str, float]]:
    """Both sides (ours alone without `bullmq`), alternating, `rounds` each; prints every round and
    the medians with ours ÷ BullMQ, and returns the medians by side. bench.jobs runs this too."""
    found = sides(bullmq)
    results: dict[str, list[dict[str, float]]] = {side.name: [] for side in found}
    print(f"The common workload: {jobs} jobs that return their argument, two at a time")
    for round_ in range(rounds):
        for side in found if round_ % 2 == 0 else reversed(found):
            result = one_round(side, url, jobs)
            results[side.name].append(result)
            shown = ", ".join(f"{key} {value:,.0f}" for key, value in result.items())
            print(f"round {round_ + 1} {side.name:<7} {shown}", flush=True)
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()
    }
    for name, values in medians.items():
        print(f"median {name:<7} " + ", ".join(f"{key} {value:,.0f}" for key, value in values.items()))
    if "BullMQ" in medians:
        ours, theirs = medians["ours"], medians["BullMQ"]
        rates = ("enqueue", "drain", "end to end")
        costs = ("worker µs/job", "redis µs/job")
        print(
            "ours / BullMQ: "
            + ", ".join(f"{key} {ours[key] / theirs[key]:.2f}x" for key in rates)
            + "; cost BullMQ / ours: "
            + ", ".join(f"{key.split(' ')[0]} {theirs[key] / ours[key]:.2f}x" for key in costs),
            flush=True,
        )
    return medians


def bullmq_installed(stack: contextlib.ExitStack) -> Path | None:
    """BullMQ 6.7 (and its ioredis) installed by npm into a temporary folder for this run; None without node."""
    return stack.enter_context(node_packages(["bullmq@6.7.0", "ioredis@6.0.0"], BULLMQ_DIR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-bullmq", action="store_true", help="run ours alone")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        bullmq = None if args.no_bullmq else bullmq_installed(stack)
        url = stack.enter_context(bench_redis())
        common_workload(url, args.jobs, args.rounds, bullmq)
    print(f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, loopback Redis)")


if __name__ == "__main__":
    main()
