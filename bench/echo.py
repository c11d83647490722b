"""Our side of bench/peers.py: the common workload (a job that returns its argument).

`python -m bench.echo worker` runs a processor with two workers on queue `bench`, in two worker
processes (as task 7's processor does by default; two threads of one process would share one core
for their Python); `python -m bench.echo enqueue` creates JOBS jobs ({"n": i}) in bulk and prints
{"start_ms", "enqueue_s"} as JSON on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from queuing_system.jobs import enqueue_many, job_queue, queue_connection
from queuing_system.worker import run_processor

QUEUE = "bench"
FUNCTION = "bench.echo.echo"


def echo(data: Any = None) -> Any:
    return data


def enqueue(count: int) -> None:
    queue = job_queue(QUEUE, queue_connection())
    datas = [{"n": i} for i in range(count)]
    start_ms = time.time() * 1000
    start = time.perf_counter()
    enqueue_many(queue, FUNCTION, datas)
    print(json.dumps({"start_ms": start_ms, "enqueue_s": time.perf_counter() - start}), file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["enqueue"]:
        enqueue(int(os.environ["JOBS"]))
    else:
        sys.exit(run_processor(QUEUE, {FUNCTION: echo}, concurrency=2, processes=2))
