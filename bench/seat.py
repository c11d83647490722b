"""End-to-end seat reservations: request -> job completed, reservations/s and p50/p99 latency.

Run:  .venv/bin/python -m bench.seat [--reservations 2000]
Servers: `100_seat.py` (Flask's development server) and `100_seat.py --workers 2` (granian), each
processing the queue in its own processes after /process. Loopback only, bounded. A private
embedded Redis per server unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry
from rq.serializers import JSONSerializer

from bench.common import bench_redis, percentile
from queuing_system.embedded import free_port
from queuing_system.http_requests import request, wait_until_serving
from queuing_system.jobs import queue_connection
from queuing_system.keys import SEAT_QUEUE
from queuing_system.processes import ScriptProcess
from queuing_system.settings import connect

SEATS = 10**9  # enough that none runs out: we measure the pipeline, not the sell-out


def server_command(name: str, port: int) -> tuple[str, list[str]]:
    if name == "development server":
        return "100_seat.py", ["--reset"]
    return "100_seat.py", ["--reset", "--workers", "2"]


def run(name: str, count: int, clients: int) -> dict[str, float]:
    with bench_redis() as url:
        port = free_port()
        script, args = server_command(name, port)
        text = connect(url)  # a plain Redis or a Sentinel group's primary
        with ScriptProcess(script, args, env={"REDIS_URL": url, "PORT": str(port)}) as server:
            wait_until_serving(port, "/available_seats")
            text.set("available_seats", SEATS)
            for _ in range(4):
                request(port, "/process")  # with several server processes, reach (very likely) each
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=clients) as pool:
                answers = list(pool.map(lambda _: request(port, "/reserve_seat")[2], range(count)))
            accepted = answers.count({"status": "Reservation in process"})
            connection = queue_connection(url)
            finished = FinishedJobRegistry(SEAT_QUEUE, connection=connection, serializer=JSONSerializer)
            failed = FailedJobRegistry(SEAT_QUEUE, connection=connection, serializer=JSONSerializer)
            deadline = time.monotonic() + 300
            while finished.count + failed.count < accepted and time.monotonic() < deadline:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            jobs = [
                job
                for job in Job.fetch_many(finished.get_job_ids(), connection=connection, serializer=JSONSerializer)
                if job
            ]
            latencies = [(job.ended_at - job.enqueued_at).total_seconds() * 1000 for job in jobs]
            sold = SEATS - int(text.get("available_seats"))
            server.stop()
        return {
            "accepted": accepted,
            "completed": len(jobs),
            "sold": sold,
            "per_s": len(jobs) / elapsed,
            "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reservations", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    print(f"{'server':<28}{'accepted':>9}{'completed':>10}{'seats sold':>11}{'per s':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for name in ("development server", "--workers 2 (granian)"):
        result = run(name, args.reservations, args.clients)
        print(
            f"{name:<28}{result['accepted']:>9}{result['completed']:>10}{result['sold']:>11}"
            f"{result['per_s']:>8.0f}{result['p50']:>9.1f}{result['p99']:>9.1f}",
            flush=True,
        )
    print("(latency: job enqueued -> job finished, as RQ recorded them; per s: completed / wall time)")


if __name__ == "__main__":
    main()
