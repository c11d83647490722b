"""Job functions only the tests enqueue: a job that takes a while, so a test can act mid-job."""

import time

import redis
from rq import get_current_job

STARTED_KEY = "test:job_started"
HOLD = "tests.jobs_for_tests.hold"


def hold(seconds: float) -> str:
    """Mark that the job started (a test waits on this key), then take `seconds`, in short waits (as a job
    that talks to a gateway does: a processor's threads can stop it between two of them)."""
    job = get_current_job()
    connection: redis.Redis = job.connection
    connection.rpush(STARTED_KEY, job.id)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))
    return "held"


FINALIZE_SLOWLY = "tests.jobs_for_tests.finalize_slowly"


class _SlowToFinalize:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __del__(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            pass


def finalize_slowly(seconds: float) -> str:
    """An object's finalizer that takes `seconds` (the job's time limit rings in there), then 30 s more,
    in short waits (in a thread, a time limit lands between two of them)."""
    job = get_current_job()
    job.connection.rpush(STARTED_KEY, job.id)
    _SlowToFinalize(seconds)  # dropped at once: its __del__ runs now
    for _ in range(600):
        time.sleep(0.05)
    return "outlived its time limit"


RELEASE_KEY = "test:release"
HOLD_UNTIL_RELEASED = "tests.jobs_for_tests.hold_until_released"


def hold_until_released() -> str:
    """Mark that the job started, then wait until the test sets RELEASE_KEY (looked at every 20 ms)."""
    job = get_current_job()
    connection: redis.Redis = job.connection
    connection.rpush(STARTED_KEY, job.id)
    while not connection.exists(RELEASE_KEY):
        time.sleep(0.02)
    return "released"


SNAPSHOT_KEY = "test:snapshot"
RECORD = "tests.jobs_for_tests.record_what_redis_holds"


def redis_picture(connection: redis.Redis, worker_name: str = "") -> dict:
    """Every RQ key (jobs, executions, registries, results) with its type, fields and TTL, with the
    values that differ between runs (names, ids, times) replaced by what they are."""
    import re

    def normal(value: bytes | str) -> str:
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        if worker_name:
            text = text.replace(worker_name, "<worker>")
        text = re.sub(r"[0-9a-f]{32}", "<id>", text)
        text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", "<time>", text)
        return re.sub(r"^\d{9,}(\.\d+)?$", "<timestamp>", text)

    picture = {}
    for raw in sorted(connection.keys("rq:*")):
        key = normal(raw)
        if key.startswith(("rq:workers", "rq:queues", "rq:scheduler", "rq:clean_")):
            continue  # who is listening, and maintenance locks: not what a job looks like
        if key == "rq:worker:<worker>":
            continue  # the worker's own record differs by design (see processor.py)
        kind = connection.type(raw).decode()
        ttl = connection.ttl(raw)
        entry: dict = {"type": kind, "ttl": "none" if ttl < 0 else round(ttl, -1)}
        if kind == "hash":
            entry["fields"] = {
                normal(k): normal(v) for k, v in connection.hgetall(raw).items() if k not in (b"data", b"meta")
            }
        elif kind == "zset":
            entry["members"] = sorted(normal(m) for m in connection.zrange(raw, 0, -1))
        elif kind == "set":
            entry["members"] = sorted(normal(m) for m in connection.smembers(raw))
        elif kind == "list":
            entry["items"] = [normal(i) for i in connection.lrange(raw, 0, -1)]
        elif kind == "stream":
            entry["entries"] = [
                {normal(k): normal(v) for k, v in fields.items()} for _, fields in connection.xrange(raw)
            ]
        picture[key] = entry
    return picture


def record_what_redis_holds() -> str:
    """A job that photographs Redis while it runs (how its worker marked it started)."""
    import json

    job = get_current_job()
    picture = redis_picture(job.connection, job.worker_name or "")
    job.connection.set(SNAPSHOT_KEY, json.dumps(picture))
    return "recorded"
