"""The enqueue steps on the real throwaway Redis: jobs as RQ writes them, each step safe to repeat,
ids reserved per chunk, RQ_KEY_PREFIX honoured."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone

import pytest
from rq import Callback
from rq.job import Job
from rq.serializers import JSONSerializer

from queuing_system.creation_lua import TOKEN_FIELD, Reserve
from queuing_system.enqueue import ON_FAILURE, ON_SUCCESS, _Batch, enqueue_many
from queuing_system.job_settings import JobSettings
from queuing_system.keys import JOB_CREATION_RECORD, JOB_ID_COUNTER, QUEUE_7
from queuing_system.processes import ScriptProcess
from queuing_system.queues import job_queue
from tests.jobs_for_tests import RECORD

PER_JOB = {b"data", b"created_at", b"enqueued_at", b"meta"}  # differ between any two jobs (or carry the token)


def stored(connection, job_id: str) -> tuple[dict, int]:
    key = f"rq:job:{job_id}"
    return {k: v for k, v in connection.hgetall(key).items() if k not in PER_JOB}, connection.ttl(key)


@pytest.mark.parametrize("delay", [0, 60])
def test_our_jobs_are_stored_as_rq_stores_them(rq_connection, delay) -> None:
    queue = job_queue("compat", rq_connection)
    settings = JobSettings(delay=delay, attempts=3)
    ours = enqueue_many(queue, RECORD, [{"n": 1}, {"n": 2}], settings)
    theirs = queue.create_job(
        RECORD,
        args=({"n": 2},),
        job_id="theirs",
        timeout=settings.timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        retry=settings.retry(),
        on_success=Callback(ON_SUCCESS),
        on_failure=Callback(ON_FAILURE),
    )
    if delay:
        queue.schedule_job(theirs, datetime.now(timezone.utc) + timedelta(seconds=delay))
    else:
        queue.enqueue_job(theirs)
    assert stored(rq_connection, "2") == stored(rq_connection, "theirs")
    assert rq_connection.hget("rq:job:2", "data") == rq_connection.hget("rq:job:theirs", "data")  # same call
    job = Job.fetch("2", connection=rq_connection, serializer=JSONSerializer)
    assert (job.args, job.func_name, job.origin) == ([{"n": 2}], RECORD, "compat")  # JSON: a list
    assert job.meta == {TOKEN_FIELD: ours[0].meta[TOKEN_FIELD]} and len(ours[0].meta[TOKEN_FIELD]) == 32
    if delay:
        scores = dict(rq_connection.zrange("rq:scheduled:compat", 0, -1, withscores=True))
        assert abs(scores[b"2"] - scores[b"theirs"]) <= 1 and queue.job_ids == []
    else:
        assert queue.job_ids == ["1", "2", "theirs"]


def test_a_chunk_written_again_is_written_once(rq_connection) -> None:
    """What a retry after a lost reply does: same token, same chunk -> same ids, nothing new."""
    queue = job_queue(QUEUE_7, rq_connection)
    batch = _Batch(queue, RECORD, JobSettings(), ON_SUCCESS, ON_FAILURE, token="t" * 32)
    first = batch.write([{"n": 1}, {"n": 2}])
    batch._chunks -= 1  # as if the reply had been lost: the same chunk once more
    again = batch.write([{"n": 1}, {"n": 2}])
    assert [job.id for job in first] == [job.id for job in again] == ["1", "2"]
    assert queue.job_ids == ["1", "2"]
    assert rq_connection.get(JOB_ID_COUNTER) == b"2"
    following = batch.write([{"n": 3}])
    assert [job.id for job in following] == ["3"] and queue.job_ids == ["1", "2", "3"]


def test_a_reservation_repeated_reserves_nothing_new(rq_connection) -> None:
    record = JOB_CREATION_RECORD.format(token="x")
    assert Reserve(JOB_ID_COUNTER, record, "0.0", 500).run(rq_connection)[::499] == ["1", "500"]
    assert Reserve(JOB_ID_COUNTER, record, "0.0", 500).run(rq_connection)[::499] == ["1", "500"]
    assert Reserve(JOB_ID_COUNTER, record, "1.0", 2).run(rq_connection) == ["501", "502"]
    assert rq_connection.get(JOB_ID_COUNTER) == b"502"
    assert 0 < rq_connection.ttl(record) <= 600  # long enough for a retry, not to clutter Redis


def test_ids_are_reserved_per_chunk(rq_connection) -> None:
    queue = job_queue(QUEUE_7, rq_connection)
    counters = []
    enqueue_many(
        queue,
        RECORD,
        [{"n": n} for n in range(5)],
        chunk_size=2,
        created=lambda job: counters.append(int(rq_connection.get(JOB_ID_COUNTER))),
    )
    assert counters == [2, 2, 4, 4, 5]  # the counter moves a chunk at a time, as each chunk is written


def test_a_counter_behind_the_jobs_overwrites_no_job(rq_connection) -> None:
    """After the counter is lost (its key deleted, an old snapshot), ids already taken are passed over:
    a chunk that meets one is written on fresh ids, whole and in order (id 4 is left unused)."""
    queue = job_queue(QUEUE_7, rq_connection)
    theirs = enqueue_many(queue, RECORD, [{"n": "theirs"}] * 3)
    rq_connection.delete(JOB_ID_COUNTER)
    ours = enqueue_many(queue, RECORD, [{"n": "ours 1"}, {"n": "ours 2"}])
    assert [job.id for job in ours] == ["5", "6"]
    assert [Job.fetch(str(n), rq_connection, JSONSerializer).args[0]["n"] for n in (1, 2, 3, 5, 6)] == [
        "theirs",
        "theirs",
        "theirs",
        "ours 1",
        "ours 2",
    ]
    assert queue.job_ids == ["1", "2", "3", "5", "6"]
    assert {job.meta[TOKEN_FIELD] for job in theirs} != {job.meta[TOKEN_FIELD] for job in ours}


@pytest.mark.parametrize("prefix", ["myq", "{rq}"])
def test_the_creator_honours_rq_key_prefix(redis_url, r, tmp_path, prefix) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"phoneNumber": "4153518743", "message": f"m{n}"} for n in range(3)]))
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs)], env={"RQ_KEY_PREFIX": prefix}) as creator:
        creator.wait_for_line("Notification job created: 3")
        creator.signal(signal.SIGINT)
        assert creator.wait() == 0
    assert r.keys("rq:*") == []
    assert r.lrange(f"{prefix}:queue:{QUEUE_7}", 0, -1) == ["1", "2", "3"]
    assert sorted(r.keys(f"{prefix}:job:*")) == [f"{prefix}:job:{n}" for n in (1, 2, 3)]
    assert r.smembers(f"{prefix}:queues") == {f"{prefix}:queue:{QUEUE_7}"}


def test_a_redis_that_forgot_the_scripts_is_taught_them_again(rq_connection) -> None:
    """A restarted Redis, or a newly promoted primary, has an empty script cache (NOSCRIPT)."""
    queue = job_queue(QUEUE_7, rq_connection)
    enqueue_many(queue, RECORD, [{"n": 1}])
    rq_connection.script_flush()
    assert [job.id for job in enqueue_many(queue, RECORD, [{"n": 2}])] == ["2"]
    assert queue.job_ids == ["1", "2"]


def test_an_enqueue_repeated_with_its_token_creates_one_job(rq_connection) -> None:
    """What a server does when it retries an enqueue whose reply was lost."""
    from queuing_system.enqueue import enqueue, new_token

    queue = job_queue(QUEUE_7, rq_connection)
    token = new_token()
    first = enqueue(queue, RECORD, {"n": 1}, token=token)
    again = enqueue(queue, RECORD, {"n": 1}, token=token)
    other = enqueue(queue, RECORD, {"n": 2})
    assert (first.id, again.id, other.id) == ("1", "1", "2")
    assert queue.job_ids == ["1", "2"]


@pytest.mark.parametrize(
    ("key", "wanted"), [(f"rq:queue:{QUEUE_7}", "list"), ("rq:queues", "set")], ids=["queue", "queues"]
)
def test_a_key_of_the_wrong_type_is_named_in_one_line(redis_url, r, tmp_path, key, wanted) -> None:
    """Someone SET the queue (or RQ's set of queues) to a string: the creator names the key and what
    is wrong, without redis-py's pipeline note nor the script's location."""
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"phoneNumber": "4153518743", "message": "m"}]))
    r.set(key, "garbage")
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs)]) as creator:
        assert creator.wait() == 1
    assert creator.lines == []
    assert creator.stderr.splitlines() == [
        f"Gave up: Redis key {key} holds a string, not a {wanted}; created 0 of 1 jobs, not the other 1"
    ]


def test_what_redis_said_comes_without_redis_pys_notes(rq_connection) -> None:
    """The words a user sees (refusals.said): Redis's answer alone, whatever the pipeline or script
    it came through."""
    import redis

    from queuing_system.refusals import said

    rq_connection.set("a string", "x")
    with rq_connection.pipeline(transaction=False) as pipeline:
        pipeline.eval("return redis.call('LPUSH', KEYS[1], 'v')", 1, "a string")
        with pytest.raises(redis.exceptions.ResponseError) as raised:
            pipeline.execute()
    assert str(raised.value).startswith("Command # 1 (EVAL")  # what redis-py says
    assert said(raised.value) == "WRONGTYPE Operation against a key holding the wrong kind of value"
