"""6_job_processor with a flaky SMS gateway. Used by tests only.

GATEWAY_FAILURES=N: each job's first N sends fail (default: every send fails).
"""

import importlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rq import get_current_job

from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.worker import run_processor

lesson = importlib.import_module("6_job_processor")
real_send = lesson.send_notification


def flaky_send(phone_number: str, message: str) -> None:
    job = get_current_job()
    job.connection.rpush(f"test:attempts:{job.id}", time.time())  # when each attempt ran
    failures = job.connection.incr(f"test:failures:{job.id}")
    limit = os.environ.get("GATEWAY_FAILURES")
    if limit is None or failures <= int(limit):
        raise ConnectionRefusedError("SMS gateway unreachable")
    real_send(phone_number, message)


lesson.send_notification = flaky_send  # what the lesson's process_job calls

if __name__ == "__main__":
    sys.exit(run_processor(QUEUE_6, {PROCESS_6: lesson.process_job}))
