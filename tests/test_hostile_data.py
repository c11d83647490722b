"""Jobs and keys written into Redis by someone else: a job that cannot be used fails with its reason (or
is skipped) and never takes good jobs with it; a key of the wrong type is named in one line, left
alone, and the processor serves what it can and carries on once it is fixed. The Lua steps read and
check before they write: an error half-way never leaves half a step behind."""

from __future__ import annotations

import json
import re
import threading

import pytest
import redis
from rq.job import JobStatus

from queuing_system.jobs import enqueue_many, job_queue
from queuing_system.keys import JOB_EVENTS_CHANNEL, QUEUE_7
from queuing_system.processes import ScriptProcess, run_script
from queuing_system.processor import Processor, ProcessorSettings
from queuing_system.steps import GiveBack, Problem, Recover, Recovered
from tests.job_helpers import FAST, eventually
from tests.jobs_for_tests import HOLD, STARTED_KEY, hold
from tests.test_faults import Ends, assert_nothing_left_behind, jobs_file, sent_numbers
from tests.test_processor import QUEUE, advance

SENDING = re.compile(r"^Sending notification to \d+, with message: ")


def plant(connection: redis.Redis, key: str, kind: str) -> None:
    """Replace `key` by a value of type `kind`, as someone else might."""
    connection.delete(key)
    if kind == "string":
        connection.set(key, "not what you think")
    elif kind == "hash":
        connection.hset(key, "field", "value")
    else:
        raise ValueError(kind)


def test_two_bad_job_keys_in_a_claim_do_not_take_good_jobs_with_them(rq_connection) -> None:
    """GIVE_BACK (and RECOVER, which shares it) reads and checks every claimed job before writing:
    the good ones go back in order, once; the bad ones are dropped and named; the claim list is gone."""
    rq_connection.hset("rq:worker:w", "state", "idle")
    queue = job_queue(QUEUE, rq_connection)
    ids = [job.id for job in enqueue_many(queue, "tests.jobs_for_tests.record", [{"n": n} for n in range(40)])]
    advance(rq_connection, "w", claim=50, start=False)  # all 40 claimed, none started
    for bad in ("7", "23"):
        plant(rq_connection, f"rq:job:{bad}", "string")
    given, problems = GiveBack("w").run(rq_connection.execute_command)
    assert given == 38
    assert problems == [Problem("rq:job:7", "string", "hash"), Problem("rq:job:23", "string", "hash")]
    assert queue.job_ids == [job_id for job_id in ids if job_id not in ("7", "23")]
    assert not rq_connection.exists("queuing:claimed:w")
    assert GiveBack("w").run(rq_connection.execute_command) == (0, [])  # nothing left to push twice


def test_the_sweep_keeps_claims_whose_queue_is_broken_and_gives_them_back_once_fixed(rq_connection) -> None:
    rq_connection.hset("rq:worker:w", "state", "idle")
    rq_connection.sadd("queuing:claimers", "w")
    queue = job_queue(QUEUE, rq_connection)
    enqueue_many(queue, "tests.jobs_for_tests.record", [{"n": n} for n in range(3)])
    advance(rq_connection, "w", claim=3, start=False)
    rq_connection.delete("rq:worker:w")  # it died
    plant(rq_connection, f"rq:queue:{QUEUE}", "hash")
    recover = Recover([QUEUE])
    dead, problems = recover.run(rq_connection.execute_command)
    assert (dead, problems) == ([Recovered("w", "")], [Problem(f"rq:queue:{QUEUE}", "hash", "list")])
    assert rq_connection.lrange("queuing:claimed:w", 0, -1) == [b"1", b"2", b"3"]  # kept, not lost
    assert rq_connection.sismember("queuing:claimers", "w")  # so the next sweep tries again
    rq_connection.delete(f"rq:queue:{QUEUE}")  # fixed
    assert recover.run(rq_connection.execute_command) == ([Recovered("w", "")], [])
    assert queue.job_ids == ["1", "2", "3"]
    assert not rq_connection.exists("queuing:claimed:w") and not rq_connection.smembers("queuing:claimers")


def test_a_bad_job_key_in_the_claim_is_skipped_and_the_next_job_starts(rq_connection) -> None:
    rq_connection.hset("rq:worker:w", "state", "idle")
    enqueue_many(job_queue(QUEUE, rq_connection), "tests.jobs_for_tests.record", [{"n": n} for n in range(3)])
    plant(rq_connection, "rq:job:1", "hash")  # a hash, but no job: no origin
    plant(rq_connection, "rq:job:2", "string")
    reply = advance(rq_connection, "w", claim=3)
    assert reply.started is not None and reply.started.job_id == "3"
    assert reply.problems == [Problem("rq:job:2", "string", "hash")]


@pytest.mark.slow
@pytest.mark.parametrize("timeout", ["1.5", "1e400", "99999999999999999999", "-7"])
def test_a_job_with_an_absurd_timeout_fails_with_its_reason_and_good_jobs_run(
    redis_url, rq_connection, tmp_path, timeout
) -> None:
    count = 6
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=FAST) as creator:
        creator.wait_for_line(f"Notification job created: {count}")
        rq_connection.hset("rq:job:3", "timeout", timeout)
        with ScriptProcess("7_job_processor.py", env=FAST) as processor:
            assert creator.wait(60) == 0
            assert processor.stop() == 0
    ends = Ends(creator).by_job()
    reason = f"its timeout {timeout!r} is not a whole number of seconds from -1 to 1000000000"
    assert ends.pop("3") == [f"failed: Job data cannot be read: {reason}"]
    assert ends == {str(n): ["completed"] for n in (1, 2, 4, 5, 6)}
    assert rq_connection.hget("rq:job:3", "status") == JobStatus.FAILED.value.encode()  # (RQ cannot read it)
    assert sorted(sent_numbers([processor])) == [f"{n:010d}" for n in (1, 2, 4, 5, 6)]  # the bad one never ran
    assert processor.stderr == creator.stderr == ""
    assert_nothing_left_behind(rq_connection)


@pytest.mark.slow
@pytest.mark.parametrize(
    "key, kind",
    [
        (f"rq:queue:{QUEUE_7}", "string"),
        (f"rq:queue:{QUEUE_7}:high", "hash"),
        ("queuing:claimers", "string"),
        (f"rq:workers:{QUEUE_7}", "string"),
    ],
    ids=["queue", "high sibling", "claimers", "workers of the queue"],
)
def test_a_key_of_the_wrong_type_is_named_and_ridden_out(redis_url, rq_connection, tmp_path, key, kind) -> None:
    plant(rq_connection, key, kind)
    named = f"Redis key {key} holds a {kind}, not a "
    main_queue = key == f"rq:queue:{QUEUE_7}"
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        processor.wait_until(lambda: any(line.startswith(named) for line in processor.lines), what="the key named")
        if main_queue:
            rq_connection.delete(key)  # no job can be created there until it is fixed
        first = tmp_path / "first.json"
        first.write_text(json.dumps([{"phoneNumber": f"{n:010d}", "message": "m"} for n in range(1, 6)]))
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(first)], env=FAST) as creator:
            assert creator.wait(60) == 0  # served while the key is wrong (or once the queue is fixed)
        rq_connection.delete(key)  # fixed
        second = tmp_path / "second.json"
        second.write_text(json.dumps([{"phoneNumber": f"{n:010d}", "message": "m"} for n in range(6, 11)]))
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(second)], env=FAST) as again:
            assert again.wait(60) == 0
        assert processor.returncode is None
        assert processor.stop() == 0
    assert Ends(creator).by_job() == {str(n): ["completed"] for n in range(1, 6)}
    assert Ends(again).by_job() == {str(n): ["completed"] for n in range(6, 11)}
    assert sorted(sent_numbers([processor]).values()) == [1] * 10
    said = [line for line in processor.lines if line.startswith(named)]
    assert 1 <= len(said) <= 2  # the key and what is wrong, once per worker process
    # Nothing else, but Redis's own words when the key was fixed between a refusal and the look at it.
    others = [line for line in processor.lines if not SENDING.match(line) and not line.startswith(named)]
    assert all(
        line == "Redis refused a command: WRONGTYPE Operation against a key holding the wrong kind of value"
        for line in others
    )
    assert processor.stderr == ""
    assert_nothing_left_behind(rq_connection)


def run_burst(connection: redis.Redis, functions: dict, **changes) -> Processor:
    processor = Processor(
        QUEUE, connection, functions=functions, in_thread=True, settings=ProcessorSettings(maintenance_interval=600)
    )
    for name, value in changes.items():
        setattr(processor.records, name, value)
    processor.work(burst=True)
    return processor


def statuses(connection: redis.Redis, count: int) -> list[bytes | None]:
    return [connection.hget(f"rq:job:{n}", "status") for n in range(1, count + 1)]


@pytest.mark.parametrize(
    "meta, reason", [(b"not json", "its meta is not JSON"), (b"[1, 2]", "its meta is not a JSON object")]
)
def test_a_job_whose_meta_is_not_a_json_object_fails_with_its_reason(rq_connection, meta, reason) -> None:
    """RQ keeps meta it cannot read as a placeholder that cannot be written once a key is added (and
    every end adds one): the worker crashed and the job stayed started for good."""
    enqueue_many(job_queue(QUEUE, rq_connection), HOLD, [0, 0, 0])
    rq_connection.hset("rq:job:2", "meta", meta)
    events = rq_connection.pubsub(ignore_subscribe_messages=True)
    events.subscribe(JOB_EVENTS_CHANNEL)
    assert events.get_message(timeout=5) is None  # the confirmation (ignored): subscribed from here on
    run_burst(rq_connection, {HOLD: hold})
    assert statuses(rq_connection, 3) == [b"finished", b"failed", b"finished"]
    assert rq_connection.lrange(STARTED_KEY, 0, -1) == [b"1", b"3"]  # the bad one never ran
    said = [json.loads(message["data"]) for message in iter(lambda: events.get_message(timeout=0.1), None)]
    assert [entry for entry in said if entry["id"] == "2"] == [
        {"id": "2", "event": "failed", "value": f"Job data cannot be read: {reason}"}
    ]
    assert not rq_connection.zcard(f"rq:wip:{QUEUE}") and not rq_connection.keys("queuing:running:*")


def test_a_job_whose_end_cannot_be_stored_for_a_reason_other_than_redis_fails_with_it(rq_connection) -> None:
    """Anything but Redis going wrong while settling one job fails that job with the reason, instead of
    taking the worker down and leaving the job started for good."""
    enqueue_many(job_queue(QUEUE, rq_connection), HOLD, ["not a number", 0])

    def broken(run) -> None:
        raise TypeError("Object of type bytes is not JSON serializable")

    run_burst(rq_connection, {HOLD: hold}, record_failure=broken)
    assert statuses(rq_connection, 2) == [b"failed", b"finished"]
    assert not rq_connection.zcard(f"rq:wip:{QUEUE}") and not rq_connection.keys("queuing:running:*")


def test_the_monitor_names_a_wrong_type_queue_key_on_its_row_and_shows_the_rest(redis_url, rq_connection) -> None:
    """One queue key of the wrong type broke the whole snapshot (`--once`: the not-connected line,
    exit 1; live: a refusal every second and nothing shown)."""
    for name in ("a", "b", "c"):
        enqueue_many(job_queue(name, rq_connection), HOLD, [0])
    plant(rq_connection, "rq:queue:b", "string")
    plant(rq_connection, "rq:wip:c", "hash")
    code, lines, stderr = run_script("-m", ["queuing_system.monitor", "--once"])
    assert (code, stderr) == (0, "")
    assert lines[1:] == [
        f"{'queue':<32}    queued   started scheduled  deferred  finished    failed",
        f"{'a':<32}         1         0         0         0         0         0",
        f"{'b':<32}Redis key rq:queue:b holds a string, not a list",
        f"{'c':<32}Redis key rq:wip:c holds a hash, not a zset",
        "workers: 0",
    ]
    plant(rq_connection, "rq:workers", "string")
    code, lines, stderr = run_script("-m", ["queuing_system.monitor", "--once"])
    assert (code, stderr) == (0, "")
    assert lines[-1] == "workers: Redis key rq:workers holds a string, not a set"


def test_a_wrong_type_behind_a_bare_wrongtype_is_named_once(rq_connection, capsys) -> None:
    """A path that meets a key of the wrong type without naming it (here RQ's registration, on our own
    worker key) gets the line every step says, once, not `Redis refused a command: WRONGTYPE …` at
    each attempt; the processor carries on once the key is fixed."""
    processor = Processor(QUEUE, rq_connection, functions={}, in_thread=True)
    worker_key = f"rq:worker:{processor.name}"
    rq_connection.set(worker_key, "not a worker")
    thread = threading.Thread(target=processor.work, kwargs={"burst": True})
    thread.start()
    said: list[str] = []
    bad = f"Redis key {worker_key} holds a string, not a hash: left alone (what needs it waits until it is fixed)"
    eventually(lambda: said.extend(capsys.readouterr().out.splitlines()) or bad in said)
    rq_connection.delete(worker_key)
    thread.join(15)
    assert not thread.is_alive()
    said.extend(capsys.readouterr().out.splitlines())
    assert said == [bad]
