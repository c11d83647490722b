"""Tasks 6 and 7 end to end on the real throwaway Redis: creators and processors as processes."""

import signal
from collections import Counter
from importlib import import_module

import pytest
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker_registration import get_keys

from queuing_system.events import ABANDONED_MESSAGE, JobEvent, JobEvents
from queuing_system.jobs import JobSettings, enqueue, job_queue
from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.processes import ScriptProcess
from tests.job_helpers import FAST, HOLDING_PROCESSOR, eventually, fetch
from tests.jobs_for_tests import HOLD, STARTED_KEY

JOBS_7 = import_module("7_job_creator").JOBS
BLACKLISTED = {"4153518780", "4153518781"}
SENDING_6 = "Sending notification to 4153518743, with message: This is the code 4321 to verify your account"


def test_6_two_creators_then_the_processor(redis_url) -> None:
    with ScriptProcess("6_job_creator.py") as first:
        first.wait_for_line("Notification job created: 1")
        with ScriptProcess("6_job_creator.py") as second:
            second.wait_for_line("Notification job created: 2")
            with ScriptProcess("6_job_processor.py") as processor:
                assert first.wait() == 0
                assert second.wait() == 0
                processor.wait_until(lambda: len(processor.lines) == 2, what="two Sending lines")
                processor.signal(signal.SIGTERM)
                assert processor.wait() == 0
    assert first.lines == ["Notification job created: 1", "Notification job completed"]
    assert second.lines == ["Notification job created: 2", "Notification job completed"]
    assert processor.lines == [SENDING_6, SENDING_6]
    assert first.stderr == second.stderr == processor.stderr == ""


def test_6_creator_hears_a_failure(redis_url) -> None:
    with ScriptProcess("6_job_creator.py") as creator:
        creator.wait_for_line("Notification job created: 1")
        with ScriptProcess("tests/failing_processor.py") as processor:
            assert creator.wait() == 0
            processor.signal(signal.SIGINT)
            assert processor.wait() == 0
    assert creator.lines == ["Notification job created: 1", "Notification job failed"]
    assert processor.lines == []
    assert processor.stderr == ""  # the failure's traceback is RQ's log: only with --verbose


def test_6_creator_ctrl_c_before_the_job_ends_is_quiet(redis_url, rq_connection) -> None:
    with ScriptProcess("6_job_creator.py") as creator:
        creator.wait_for_line("Notification job created: 1")
        creator.signal(signal.SIGINT)
        assert creator.wait() == 0
    assert creator.stderr == ""
    assert job_queue(QUEUE_6, rq_connection).job_ids == ["1"]  # the job is still there for a processor


def creator_lines_by_job(lines: list[str]) -> dict[str, list[str]]:
    by_job: dict[str, list[str]] = {}
    for line in lines:
        job_id = line.split()[2].rstrip(":") if not line.startswith("Notification job created") else line.split()[-1]
        by_job.setdefault(job_id, []).append(line)
    return by_job


def test_7_processor_first_then_creator(redis_url, rq_connection) -> None:
    # 100 ms per send: long enough that two workers visibly overlap, short enough for a quick test.
    with ScriptProcess("7_job_processor.py", env={"NOTIFICATION_SEND_MS": "100"}) as processor:
        # "Processor first": both its workers are up (registered with RQ) before any job exists;
        # otherwise, on a loaded machine, the first worker may take all 11 before the second starts.
        eventually(lambda: len(get_keys(connection=rq_connection)) == 2, timeout=30)
        with ScriptProcess("7_job_creator.py") as creator:
            assert creator.wait() == 0
        processor.wait_until(lambda: len(processor.lines) == 9, what="nine Sending lines")
        processor.signal(signal.SIGTERM)
        assert processor.wait() == 0

    assert creator.lines[:11] == [f"Notification job created: {n}" for n in range(1, 12)]
    by_job = creator_lines_by_job(creator.lines[11:])
    expected = {}
    for number, data in enumerate(JOBS_7, start=1):
        phone = data["phoneNumber"]
        if phone in BLACKLISTED:
            expected[str(number)] = [
                f"Notification job {number} 0% complete",
                f"Notification job {number} failed: Phone number {phone} is blacklisted",
            ]
        else:
            expected[str(number)] = [
                f"Notification job {number} 0% complete",
                f"Notification job {number} 50% complete",
                f"Notification job {number} completed",
            ]
    assert by_job == expected
    assert Counter(processor.lines) == Counter(
        f"Sending notification to {d['phoneNumber']}, with message: {d['message']}"
        for d in JOBS_7
        if d["phoneNumber"] not in BLACKLISTED
    )

    # Two at a time: two workers ran jobs, and some two jobs' run times overlapped.
    jobs = [fetch(rq_connection, str(n)) for n in range(1, 12)]
    assert len({job.worker_name for job in jobs}) == 2
    assert any(
        a.worker_name != b.worker_name and a.started_at < b.ended_at and b.started_at < a.ended_at
        for a in jobs
        for b in jobs
    ), [(job.id, job.worker_name, job.started_at, job.ended_at) for job in jobs]
    assert processor.stderr == creator.stderr == ""


def test_processor_sigterm_mid_job_finishes_it(redis_url, rq_connection, r) -> None:
    job = enqueue(job_queue(QUEUE_6, rq_connection), HOLD, 1.0)
    with ScriptProcess(HOLDING_PROCESSOR) as processor:
        processor.wait_until(lambda: r.llen(STARTED_KEY) == 1, what="the job to start")
        processor.signal(signal.SIGTERM)
        assert processor.wait() == 0
    assert fetch(rq_connection, job.id).get_status() == JobStatus.FINISHED
    assert processor.stderr == ""


def test_processor_killed_mid_job_loses_no_job(redis_url, rq_connection, r) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        job = enqueue(queue, HOLD, 60, JobSettings(timeout=2))
        failures = []
        events.on(job.id, JobEvent.FAILED, failures.append)
        with ScriptProcess(HOLDING_PROCESSOR, env=FAST) as doomed:
            doomed.wait_until(lambda: r.llen(STARTED_KEY) == 1, what="the job to start")
            doomed.kill()  # SIGKILL: no chance to clean up
        assert fetch(rq_connection, job.id).get_status() == JobStatus.STARTED
        with ScriptProcess(HOLDING_PROCESSOR, env=FAST) as survivor:
            events.wait_until_ended([job.id])  # the survivor's sweep finds it (lease 2 s + sweep 1 s)
            # The failure is stored before it is announced.
            assert fetch(rq_connection, job.id).get_status() == JobStatus.FAILED
            survivor.stop()
    assert failures == [ABANDONED_MESSAGE]
    assert FailedJobRegistry(QUEUE_6, connection=rq_connection).get_job_ids() == [job.id]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"phoneNumber": "4153518780"}, "Invalid job data: missing message"),
        ({"phoneNumber": "4153518780", "message": 42}, "Invalid job data: message must be a non-empty string, got 42"),
        ({"phoneNumber": "1", "message": "hi", "junk": True}, "Invalid job data: unexpected field junk"),
        ("not an object", "Invalid job data: expected an object with phoneNumber and message, got 'not an object'"),
    ],
)
def test_bad_job_data_fails_the_job_and_the_processor_goes_on(data, error, redis_url, rq_connection) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        bad = enqueue(queue, PROCESS_6, data)
        good = enqueue(queue, PROCESS_6, {"phoneNumber": "4153518743", "message": "hello"})
        seen = []
        events.on(bad.id, JobEvent.FAILED, seen.append)
        events.on(good.id, JobEvent.COMPLETED, lambda _: seen.append("completed"))
        with ScriptProcess("6_job_processor.py") as processor:
            events.wait_until_ended([bad.id, good.id])
            assert processor.stop() == 0
    assert seen == [error, "completed"]
    assert processor.lines == ["Sending notification to 4153518743, with message: hello"]
    assert processor.stderr == ""


def test_processor_rides_out_redis_going_away(own_redis) -> None:
    env = {"REDIS_URL": own_redis.url, **FAST}
    with ScriptProcess("6_job_processor.py", env=env) as processor:
        own_redis.kill()
        processor.wait_until(
            lambda: any(x.startswith("Redis client not connected to the server: ") for x in processor.lines),
            what="the not-connected line",
        )
        own_redis.start()
        with ScriptProcess("6_job_creator.py", env=env) as creator:
            assert creator.wait() == 0
        assert creator.lines == ["Notification job created: 1", "Notification job completed"]
        assert processor.stop() == 0
    assert processor.lines[-1] == SENDING_6
    assert all(x.startswith("Redis client not connected") for x in processor.lines[:-1])
    assert "Traceback" not in processor.stderr


def test_creator_rides_out_redis_going_away(own_redis) -> None:
    env = {"REDIS_URL": own_redis.url}
    with ScriptProcess("6_job_creator.py", env=env) as creator:
        creator.wait_for_line("Notification job created: 1")
        own_redis.kill()
        creator.wait_until(lambda: len(creator.lines) >= 2, what="the not-connected line")
        own_redis.start()  # persistence is off: the job went down with the server
        assert creator.wait() == 0
    assert creator.lines[0] == "Notification job created: 1"
    assert all(x.startswith("Redis client not connected to the server: ") for x in creator.lines[1:-1])
    assert creator.lines[-1] == "Notification job failed"
    assert creator.stderr == ""


# -- creators that keep their word: the not-started hint, other creators' jobs, a busy channel ------


def test_6_creator_with_no_processor_says_once_which_to_start(redis_url) -> None:
    import subprocess
    import sys
    import threading

    from queuing_system.processes import ROOT

    creator = subprocess.Popen(
        [sys.executable, str(ROOT / "6_job_creator.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first_complaint: list[str] = []
    reader = threading.Thread(target=lambda: first_complaint.append(creator.stderr.readline()), daemon=True)
    reader.start()
    try:
        reader.join(30)  # the hint comes after 5 s without news of the job
        assert first_complaint == [
            "Job 1 has not started after 5 s: waiting on queue push_notification_code, which no processor "
            "serves; start one: python 6_job_processor.py\n"
        ]
        with ScriptProcess("6_job_processor.py") as processor:
            out, rest = creator.communicate(timeout=30)
            assert processor.stop() == 0
    finally:
        creator.kill()
    assert out.splitlines() == ["Notification job created: 1", "Notification job completed"]  # stdout unchanged
    assert rest == ""  # once
    assert creator.returncode == 0


def test_after_data_loss_a_creator_hears_no_end_of_another_creators_job(redis_url, r, tmp_path) -> None:
    """Redis emptied under creator A: creator B's jobs get A's ids. A prints no line about B's jobs."""
    import json

    def jobs_file(name: str, phones: range) -> str:
        path = tmp_path / name
        path.write_text(json.dumps([{"phoneNumber": f"{n:010d}", "message": name} for n in phones]))
        return str(path)

    with ScriptProcess("7_job_creator.py", ["--jobs-file", jobs_file("a.json", range(1, 6))]) as first:
        first.wait_for_line("Notification job created: 5")
        r.flushdb()  # the data loss: A's jobs and the id counter are gone
        with ScriptProcess("7_job_processor.py") as processor:
            with ScriptProcess("7_job_creator.py", ["--jobs-file", jobs_file("b.json", range(1, 6))]) as second:
                assert second.wait() == 0
            assert first.wait() == 0
            processor.stop()
    assert second.lines[:5] == [f"Notification job created: {n}" for n in range(1, 6)]
    assert sorted(creator_lines_by_job(second.lines[5:]).items()) == [
        (
            str(n),
            [
                f"Notification job {n} 0% complete",
                f"Notification job {n} 50% complete",
                f"Notification job {n} completed",
            ],
        )
        for n in range(1, 6)
    ]
    # A heard nothing of B's jobs (same ids): its own are gone, and it says so.
    assert first.lines == [f"Notification job created: {n}" for n in range(1, 6)] + [
        f"Notification job {n} failed: Job {n} no longer exists in Redis" for n in range(1, 6)
    ]
    assert "Traceback" not in first.stderr + second.stderr


def test_a_missed_end_is_caught_up_on_however_busy_the_channel(redis_url, rq_connection) -> None:
    """Another creator's events keep the channel busy; an end this creator missed is still found."""
    import threading

    from queuing_system.events import publish_event

    job = enqueue(job_queue(QUEUE_6, rq_connection), PROCESS_6, {"phoneNumber": "1", "message": "m"})
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            publish_event(rq_connection, "someone else's", JobEvent.PROGRESS, 1)
            stop.wait(0.01)

    seen: list[str] = []
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        events.on(job, JobEvent.COMPLETED, lambda _: seen.append("completed"))
        rq_connection.hset(job.key, "status", JobStatus.FINISHED.value)  # ended, and its event was lost
        noise = threading.Thread(target=chatter, daemon=True)
        noise.start()
        try:
            waiter = threading.Thread(target=events.wait_until_ended, args=([job.id], 0.5), daemon=True)
            waiter.start()
            waiter.join(10)
        finally:
            stop.set()
            noise.join()
    assert seen == ["completed"]


def test_a_creator_whose_connection_is_cut_catches_up_at_once(redis_url, rq_connection, r) -> None:
    """Its subscription killed while the job ends (the event is lost), the channel busy with another
    creator's events: it resubscribes and asks Redis, without waiting for a quiet spell."""
    import threading

    from queuing_system.events import publish_event

    job = enqueue(job_queue(QUEUE_6, rq_connection), PROCESS_6, {"phoneNumber": "1", "message": "m"})
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            publish_event(rq_connection, "someone else's", JobEvent.PROGRESS, 1)
            stop.wait(0.01)

    seen: list[str] = []
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        events.on(job, JobEvent.COMPLETED, lambda _: seen.append("completed"))
        noise = threading.Thread(target=chatter, daemon=True)
        noise.start()
        waiter = threading.Thread(target=events.wait_until_ended, args=([job.id], 3600), daemon=True)
        waiter.start()
        try:
            eventually(lambda: r.pubsub_numsub("queuing:job_events")[0][1] == 1)
            r.hset(f"rq:job:{job.id}", "status", JobStatus.FINISHED.value)  # it ends while we are cut off
            r.client_kill_filter(_type="pubsub")
            waiter.join(10)
        finally:
            stop.set()
            noise.join()
    assert seen == ["completed"]


def _follow(events: JobEvents, job, seen: list[str]) -> None:
    events.on(job, JobEvent.COMPLETED, lambda _: seen.append(f"{job.id} completed"))
    events.on(job, JobEvent.FAILED, lambda error: seen.append(f"{job.id} failed: {error}"))


def test_a_job_key_of_the_wrong_type_is_reported_once_and_the_others_go_on(redis_url, rq_connection, r) -> None:
    """Someone SETs rq:job:<id> to a string: that job is reported once, its key named; the other
    jobs' ends are still found (one bad key does not stop the creator)."""
    queue = job_queue(QUEUE_6, rq_connection)
    jobs = [enqueue(queue, PROCESS_6, {"phoneNumber": str(n), "message": "m"}) for n in range(3)]
    seen: list[str] = []
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        for job in jobs:
            _follow(events, job, seen)
        r.set(jobs[1].key, "garbage")
        for job in (jobs[0], jobs[2]):
            r.hset(job.key, "status", JobStatus.FINISHED.value)  # their events were missed
        ids = [job.id for job in jobs]
        events.catch_up(ids)
        events.catch_up(ids)  # asked again: nothing is said twice
        # An event for it without a token (its stored token is looked up) changes nothing either.
        rq_connection.publish("queuing:job_events", f'{{"id": "{jobs[1].id}", "event": "completed"}}')
        events.pump(timeout=0.5)
    assert seen == [
        f"{jobs[0].id} completed",
        f"{jobs[1].id} failed: Redis key rq:job:{jobs[1].id} holds a string, not a hash",
        f"{jobs[2].id} completed",
    ]


def test_7_creator_with_a_job_key_overwritten_reports_it_and_hears_the_rest(redis_url, r, tmp_path) -> None:
    """The attack's reproduction: rq:job:2 SET to a string before a processor starts. The creator
    names that key once, hears jobs 1 and 3 end, and exits 0 (it used to die saying it was not
    connected)."""
    import json

    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"phoneNumber": f"415555010{n}", "message": "m"} for n in range(3)]))
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(path)]) as creator:
        creator.wait_for_line("Notification job created: 3")
        r.set("rq:job:2", "garbage")
        with ScriptProcess("7_job_processor.py") as processor:
            assert creator.wait() == 0
            processor.stop()
    assert creator.lines[:3] == [f"Notification job created: {n}" for n in range(1, 4)]
    assert creator_lines_by_job(creator.lines[3:]) == {
        "1": [f"Notification job 1 {line}" for line in ("0% complete", "50% complete", "completed")],
        "2": ["Notification job 2 failed: Redis key rq:job:2 holds a string, not a hash"],
        "3": [f"Notification job 3 {line}" for line in ("0% complete", "50% complete", "completed")],
    }
    assert creator.stderr == ""


def test_a_job_whose_meta_is_unreadable_is_followed_by_its_id(redis_url, rq_connection, r, capsys) -> None:
    """Its meta overwritten with something that is not JSON: the creator cannot check its creation
    token, says so once (stderr), and reports how it really ended, never "no longer exists"."""
    queue = job_queue(QUEUE_6, rq_connection)
    failed, finished = (enqueue(queue, PROCESS_6, {"phoneNumber": str(n), "message": "m"}) for n in range(2))
    seen: list[str] = []
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        for job in (failed, finished):
            _follow(events, job, seen)
            r.hset(job.key, "meta", "not json")
        r.hset(failed.key, "status", JobStatus.FAILED.value)
        events.catch_up([failed.id, finished.id])  # the finished one is not finished yet: still waited for
        # Its end event, published by a processor that could not read the meta either (no token).
        rq_connection.publish("queuing:job_events", f'{{"id": "{finished.id}", "event": "completed"}}')
        events.pump(timeout=0.5)
    assert seen == [f"{failed.id} failed: Job failed", f"{finished.id} completed"]
    assert capsys.readouterr().err.splitlines() == [
        f"Job {job.id}: its meta in Redis key rq:job:{job.id} is not readable, so whose job it is cannot be "
        "checked: followed by its id"
        for job in (failed, finished)
    ]


def test_6_creator_with_no_processor_and_its_job_key_overwritten(redis_url, r) -> None:
    """No processor, and rq:job:1 SET to a string: the "not started" hint, looking at that job, does
    not kill the creator (it died saying it was not connected); the job's end is reported once, in
    task 6's own words (task 7's name the key: see above)."""
    with ScriptProcess("6_job_creator.py") as creator:
        creator.wait_for_line("Notification job created: 1")
        r.set("rq:job:1", "garbage")
        assert creator.wait(30) == 0
    assert creator.lines == [
        "Notification job created: 1",
        "Notification job failed",
    ]
    assert creator.stderr == ""
