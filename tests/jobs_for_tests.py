"""Job functions only the tests enqueue: a job that takes a while, so a test can act mid-job."""

import time

import redis
from rq import get_current_job

STARTED_KEY = "test:job_started"
HOLD = "tests.jobs_for_tests.hold"


def hold(seconds: float) -> str:
    """Mark that the job started (a test waits on this key), then take `seconds`."""
    job = get_current_job()
    connection: redis.Redis = job.connection
    connection.rpush(STARTED_KEY, job.id)
    time.sleep(seconds)
    return "held"
