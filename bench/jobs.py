"""Job throughput: enqueue N notification jobs, process them with two concurrent workers.

Run:  .venv/bin/python -m bench.jobs [--jobs 2000]
Reports, for RQ's forking worker and the non-forking one the processors use:
enqueue jobs/s, processed jobs/s (first start -> last finish), p50/p99 enqueue->finish latency.
Uses a private embedded Redis unless REDIS_URL is set (its queues are emptied first).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import sys
import time

from rq import Worker
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.common import bench_redis, percentile
from queuing_system.jobs import enqueue, job_queue, queue_connection
from queuing_system.keys import PROCESS_6
from queuing_system.worker import LessonWorker, configure_logging

QUEUE = "bench_notifications"
DATA = {"phoneNumber": "4153518743", "message": "This is the code 4321 to verify your account"}


def _worker(url: str, forking: bool) -> None:
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - printing off: we measure the queue, not the terminal
    configure_logging(verbose=False)
    connection = queue_connection(url)
    worker_class = Worker if forking else LessonWorker
    worker = worker_class([job_queue(QUEUE, connection)], connection=connection, serializer=JSONSerializer,
                          worker_ttl=16)
    with contextlib.suppress(KeyboardInterrupt):
        worker.work(logging_level=None)


def run(url: str, count: int, forking: bool) -> dict[str, float]:
    connection = queue_connection(url)
    queue = job_queue(QUEUE, connection)
    queue.empty()
    finished = FinishedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    failed = FailedJobRegistry(QUEUE, connection=connection, serializer=JSONSerializer)
    for registry in (finished, failed):
        for job_id in registry.get_job_ids():
            registry.remove(job_id, delete_job=True)

    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(url, forking)) for _ in range(2)]
    for process in workers:
        process.start()
    time.sleep(0.5)  # let both workers block on the queue before the first job lands

    started = time.perf_counter()
    job_ids = [enqueue(queue, PROCESS_6, DATA).id for _ in range(count)]
    enqueue_seconds = time.perf_counter() - started

    deadline = time.monotonic() + 600
    while finished.count + failed.count < count and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in workers:
        os.kill(process.pid, signal.SIGTERM)
        process.join()

    jobs = [job for job in queue.job_class.fetch_many(job_ids, connection=connection, serializer=JSONSerializer) if job]
    done = [job for job in jobs if job.ended_at and job.started_at and job.enqueued_at]
    first_start = min(job.started_at for job in done)
    last_end = max(job.ended_at for job in done)
    latencies = [(job.ended_at - job.enqueued_at).total_seconds() * 1000 for job in done]
    connection.close()
    return {
        "jobs": count,
        "finished": len(done),
        "failed": failed.count,
        "enqueue_per_s": count / enqueue_seconds,
        "processed_per_s": len(done) / (last_end - first_start).total_seconds(),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    with bench_redis() as url:
        print(f"{'worker':<28}{'jobs':>6}{'enqueue/s':>11}{'processed/s':>13}{'p50 ms':>9}{'p99 ms':>9}")
        for label, forking in (("non-forking (LessonWorker)", False), ("forking (rq.Worker)", True)):
            result = run(url, args.jobs, forking)
            print(
                f"{label:<28}{result['finished']:>6}{result['enqueue_per_s']:>11.0f}"
                f"{result['processed_per_s']:>13.0f}{result['p50_ms']:>9.1f}{result['p99_ms']:>9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
