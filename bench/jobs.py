"""Jobs, side by side with the original: task 7 at scale, ours against Kue 0.11.6, and light-load latency;
then the common workload against BullMQ.

Run:  .venv/bin/python -m bench.jobs [--jobs 2000] [--rounds 3] [--latency-jobs 200] [--no-kue]
                                     [--common-jobs 5000] [--no-bullmq]

Task 7 at scale: a creator of --jobs notification jobs that hears every job's end (progress 0 and 50,
completed), and one processor running two jobs at a time: ours (7_job_processor.py, bench/creator.py)
and the original's (bench/kue/processor.js and creator.js on Kue 0.11.6), alternately, --rounds times
each, on one private Redis. Where node and npm are present, Kue is installed into a temporary folder
(nothing of it is kept); without them, ours runs alone. Then one job at a time into an idle processor:
p50/p99 from creating a job to hearing its end, ours against RQ's SimpleWorker (the processors before
this one) and Kue.

Last, the common workload of bench/peers.py (--common-jobs jobs of a function that returns its
argument; ours a processor with two workers, BullMQ 6.7 one Worker with concurrency 2, installed like
Kue), alternating, --rounds times each: enqueue, drain and end-to-end rates with ours ÷ BullMQ.

All processes print what the lessons print, to /dev/null. Timings exclude interpreter start-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import redis

from bench.common import bench_redis, node_packages, start_processor
from bench.peers import bullmq_installed, common_workload
from queuing_system.processes import ROOT
from queuing_system.settings import connect

KUE_DIR = Path(__file__).with_name("kue")
QUEUE = "push_notification_code_2"
SIMPLE_WORKER = (
    "import sys; from rq import SimpleWorker; from rq.serializers import JSONSerializer;"
    "from queuing_system.jobs import queue_connection, queues_by_priority;"
    "c = queue_connection(); SimpleWorker(queues_by_priority('push_notification_code_2'), connection=c,"
    " serializer=JSONSerializer).work(logging_level='ERROR')"
)


def blocked_clients(connection: redis.Redis, command: str) -> int:
    return sum(1 for client in connection.client_list() if client.get("cmd") == command)


class Implementation:
    """How to start one side's processor and creator."""

    def __init__(
        self, name: str, processor: list[str], creator: list[str], cwd: Path, waits_with: str, waiters: int
    ) -> None:
        self.name, self.processor, self.creator, self.cwd = name, processor, creator, cwd
        self.waits_with, self.waiters = waits_with, waiters

    def run(self, url: str, port: int, jobs: int, one_at_a_time: bool = False, enqueue_only: bool = False) -> dict:
        connection = connect(url, decode_responses=False)  # a plain Redis or a Sentinel group's primary
        connection.flushdb()
        env = {
            **os.environ,
            "REDIS_URL": url,
            "REDIS_PORT": str(port),
            "JOBS": str(jobs),
            "ONE_AT_A_TIME": "1" if one_at_a_time else "0",
            "ENQUEUE_ONLY": "1" if enqueue_only else "0",
            "PYTHONPATH": str(ROOT),
        }
        processor = None
        try:
            if not enqueue_only:
                processor = start_processor(  # its workers wait for jobs
                    self.name,
                    self.processor,
                    self.cwd,
                    env,
                    lambda: blocked_clients(connection, self.waits_with) >= self.waiters,
                    timeout=30,
                )
            creator = subprocess.run(
                self.creator,
                cwd=self.cwd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                timeout=600,
                check=True,
            )
            result = json.loads(creator.stderr.strip().splitlines()[-1])
        finally:
            if processor is not None:
                os.killpg(processor.pid, 15)
                processor.wait(30)
        connection.close()
        return result


def implementations(kue: Path | None) -> dict[str, Implementation]:
    python = sys.executable
    found = {
        "ours": Implementation(
            "ours", [python, "7_job_processor.py"], [python, "-m", "bench.creator"], ROOT, "blmove", 2
        ),
        "RQ SimpleWorker": Implementation(
            "RQ SimpleWorker", [python, "-c", SIMPLE_WORKER], [python, "-m", "bench.creator"], ROOT, "blpop", 1
        ),
    }
    if kue is not None:
        found["Kue"] = Implementation("Kue 0.11.6", ["node", "processor.js"], ["node", "creator.js"], kue, "blpop", 1)
    return found


def rate(result: dict, key: str) -> float:
    return result["jobs"] / result[key] if result.get(key) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--no-kue", action="store_true", help="run ours alone")
    parser.add_argument("--common-jobs", type=int, default=5000, help="jobs of the common workload (0: skip it)")
    parser.add_argument("--no-bullmq", action="store_true", help="the common workload: ours alone")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        kue = None if args.no_kue else stack.enter_context(node_packages(["kue@0.11.6"], KUE_DIR))
        bullmq = None if args.no_bullmq or args.common_jobs <= 0 else bullmq_installed(stack)
        sides = implementations(kue)
        url = stack.enter_context(bench_redis())
        port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"] if kue else 0  # Kue's
        at_scale = [name for name in ("Kue", "ours") if name in sides]
        print(f"Task 7 at scale: {args.jobs} jobs, the creator hears every end, two at a time")
        print(f"{'round':<7}{'side':<12}{'enqueue/s':>11}{'end-to-end jobs/s':>19}{'p50 ms':>9}{'p99 ms':>9}")
        results: dict[str, list[dict]] = {name: [] for name in at_scale}
        for round_ in range(1, args.rounds + 1):
            for name in at_scale:
                result = sides[name].run(url, port, args.jobs)
                results[name].append(result)
                print(
                    f"{round_:<7}{name:<12}{rate(result, 'enqueue_s'):>11.0f}{rate(result, 'total_s'):>19.0f}"
                    f"{result['p50_ms']:>9.0f}{result['p99_ms']:>9.0f}",
                    flush=True,
                )
        for name in at_scale:
            runs = results[name]
            print(
                f"median {name:<5}{statistics.median(rate(r, 'enqueue_s') for r in runs):>13.0f}"
                f"{statistics.median(rate(r, 'total_s') for r in runs):>19.0f}"
            )
        if "Kue" in results:
            ours = statistics.median(rate(r, "total_s") for r in results["ours"])
            theirs = statistics.median(rate(r, "total_s") for r in results["Kue"])
            ours_enqueue = statistics.median(rate(r, "enqueue_s") for r in results["ours"])
            theirs_enqueue = statistics.median(rate(r, "enqueue_s") for r in results["Kue"])
            print(f"ours / Kue: end-to-end {ours / theirs:.2f}x, enqueue {ours_enqueue / theirs_enqueue:.2f}x")

        print(f"\nEnqueue only (no processor running): {args.jobs} jobs, median of {args.rounds}")
        enqueue_rates = {}
        for name in at_scale:
            runs = [sides[name].run(url, port, args.jobs, enqueue_only=True) for _ in range(args.rounds)]
            enqueue_rates[name] = statistics.median(rate(r, "enqueue_s") for r in runs)
            print(f"{name:<18}{enqueue_rates[name]:>9.0f} jobs/s", flush=True)
        if "Kue" in enqueue_rates:
            print(f"ours / Kue's save(): {enqueue_rates['ours'] / enqueue_rates['Kue']:.2f}x")

        print(f"\nOne job at a time into an idle processor ({args.latency_jobs} jobs): create -> end heard")
        print(f"{'side':<18}{'p50 ms':>9}{'p99 ms':>9}")
        for name in ("ours", "RQ SimpleWorker", "Kue"):
            if name in sides:
                result = sides[name].run(url, port, args.latency_jobs, one_at_a_time=True)
                print(f"{name:<18}{result['p50_ms']:>9.2f}{result['p99_ms']:>9.2f}", flush=True)

        if args.common_jobs > 0:
            print()
            common_workload(url, args.common_jobs, args.rounds, bullmq)
    print(f"(2-core machine, loopback Redis; cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
