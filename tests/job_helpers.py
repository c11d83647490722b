"""What the job tests share: fast settings for processors, fetching jobs, waiting on a condition."""

import time

import redis
from rq.job import Job
from rq.serializers import JSONSerializer

# Fast sweeps and retries, so tests need not wait RQ's minutes.
FAST = {
    "QUEUING_DEQUEUE_TIMEOUT": "1",
    "QUEUING_MAINTENANCE_INTERVAL": "1",
    "QUEUING_WORKER_LEASE": "2",
    "QUEUING_RETRY_BACKOFF": "1",
}
# 6_job_processor.py that also offers the tests' slow job (tests.jobs_for_tests.hold).
HOLDING_PROCESSOR = "tests/holding_processor.py"


def fetch(connection: redis.Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=connection, serializer=JSONSerializer)


def eventually(condition, timeout: float = 10.0) -> None:
    """Poll `condition` until it holds (for state RQ writes a moment after an event)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)
