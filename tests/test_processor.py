"""The processor's core, in process: RQ sees its jobs exactly as its own, steps survive lost replies,
claims are shared and given back. (The processes around it are tested in test_jobs and test_faults.)"""

from __future__ import annotations

import json
import signal
import threading
from datetime import datetime, timezone

import pytest
import redis
from rq import SimpleWorker
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from queuing_system.idle import QueueWatch
from queuing_system.job_run import OfferedJob
from queuing_system.jobs import JobSettings, enqueue, enqueue_many, job_queue, queues_by_priority
from queuing_system.ordered_connection import OrderedConnection
from queuing_system.processes import ScriptProcess, run_script
from queuing_system.processor import STOP_SETTLE_SECONDS, Processor, ProcessorSettings
from queuing_system.steps import Advance, AdvanceReply, GiveBack, Recover, Recovered, Settled
from tests.job_helpers import eventually, fetch
from tests.jobs_for_tests import HOLD, RECORD, SNAPSHOT_KEY, STARTED_KEY, hold, record_what_redis_holds, redis_picture
from tests.test_refusals import read_only

QUEUE = "compat"


def run_one_job(connection: redis.Redis, ours: bool) -> tuple[dict, dict]:
    """Enqueue one job, run it with our processor or RQ's SimpleWorker; Redis as the job saw it, and after."""
    enqueue(job_queue(QUEUE, connection), RECORD, settings=JobSettings(timeout=20))
    if ours:
        worker = Processor(
            QUEUE,
            connection,
            functions={RECORD: record_what_redis_holds},
            settings=ProcessorSettings(maintenance_interval=600),
        )
    else:
        worker = SimpleWorker([job_queue(QUEUE, connection)], connection=connection, serializer=JSONSerializer)
    worker.work(burst=True)
    during = json.loads(connection.get(SNAPSHOT_KEY))
    connection.delete(SNAPSHOT_KEY)
    return during, redis_picture(connection, worker.name)


def test_rq_sees_our_jobs_as_its_own(redis_url, rq_connection) -> None:
    """What processor_lua.ADVANCE writes when it starts and settles a job is what RQ 3.0 writes
    (key for key, field for field, TTLs to 10 s). Fails if RQ changes its data model."""
    rq_during, rq_after = run_one_job(rq_connection, ours=False)
    rq_connection.flushdb()
    our_during, our_after = run_one_job(rq_connection, ours=True)
    assert our_during == rq_during
    assert our_after == rq_after
    # …and the picture holds what matters (so this test cannot pass on two empty pictures).
    assert rq_during["rq:job:1"]["fields"]["status"] == "started"
    assert rq_during["rq:wip:compat"]["members"] == ["1:<id>"]
    assert rq_after["rq:job:1"]["fields"]["status"] == "finished"
    assert rq_after["rq:finished:compat"]["members"] == ["1"]
    assert "rq:results:1" in rq_after


def advance(
    connection: redis.Redis, worker: str, *, claim: int = 50, start: bool = True, execution: str = "e1"
) -> AdvanceReply:
    """One ADVANCE step with nothing to settle."""
    return Advance(
        worker=worker,
        lease=15,
        queues=queues_by_priority(QUEUE),
        now=datetime(2026, 1, 1, tzinfo=timezone.utc),
        execution_id=execution,
        default_timeout=20,
        claim=claim,
        start=start,
    ).run(connection.execute_command)


@pytest.fixture
def worker(rq_connection) -> str:
    rq_connection.hset("rq:worker:w", "state", "idle")
    rq_connection.sadd(f"rq:workers:{QUEUE}:high", "rq:worker:w", "rq:worker:other")
    return "w"


def test_a_step_whose_reply_is_lost_can_be_repeated(rq_connection, worker) -> None:
    queue = job_queue(QUEUE, rq_connection)
    for n in range(4):
        enqueue(queue, RECORD, {"n": n})
    first = advance(rq_connection, worker, execution="e1")
    again = advance(rq_connection, worker, execution="e2")  # as if the first reply never arrived
    assert first.started is not None and again.started is not None
    assert (first.started.job_id, first.started.execution_id) == ("1", "e1")
    assert (again.started.job_id, again.started.execution_id) == ("1", "e1")  # nothing started twice
    assert rq_connection.zrange(f"rq:wip:{QUEUE}", 0, -1) == [b"1:e1"]


def test_a_claim_is_a_fair_share_and_given_back_in_order(rq_connection, worker) -> None:
    queue = job_queue(QUEUE, rq_connection)
    high = job_queue(f"{QUEUE}:high", rq_connection)
    for n in range(6):
        enqueue(queue, RECORD, {"n": n})  # ids 1..6
    enqueue(high, RECORD, {"n": "urgent"})  # id 7
    reply = advance(rq_connection, worker, claim=50)
    # 7 queued, 2 workers: a share of 4, high first; the first is started, three stay claimed.
    assert reply.started is not None and reply.started.job_id == "7"
    assert rq_connection.lrange("queuing:claimed:w", 0, -1) == [b"1", b"2", b"3"]
    assert GiveBack("w").run(rq_connection.execute_command) == (3, [])
    assert queue.job_ids == ["1", "2", "3", "4", "5", "6"]  # back at the front, in order


def test_the_sweep_gives_a_dead_workers_claims_back_and_takes_its_job_in_hand(rq_connection, worker) -> None:
    queue = job_queue(QUEUE, rq_connection)
    for n in range(3):
        enqueue(queue, RECORD, {"n": n})
    rq_connection.sadd("queuing:claimers", "w")
    advance(rq_connection, worker, claim=3)  # job 1 in hand, 2 and 3 claimed
    rq_connection.set(f"rq:scheduler-lock:{QUEUE}", "w")
    recover = Recover([QUEUE])
    assert recover.run(rq_connection.execute_command) == ([], [])  # alive: nothing to do
    rq_connection.delete("rq:worker:w")  # its lease lapses
    assert recover.run(rq_connection.execute_command) == ([Recovered("w", "1:e1")], [])
    assert queue.job_ids == ["2", "3"]
    assert not rq_connection.exists(f"rq:scheduler-lock:{QUEUE}", "queuing:claimed:w", "queuing:running:w")
    assert recover.run(rq_connection.execute_command) == ([], [])  # once only


def test_no_worker_no_step(rq_connection) -> None:
    enqueue(job_queue(QUEUE, rq_connection), RECORD)
    assert advance(rq_connection, "ghost") == AdvanceReply(Settled.NO_WORKER, None)
    assert job_queue(QUEUE, rq_connection).job_ids == ["1"]


def slow_batch(connection: redis.Redis, hold_limit: float = 0.2) -> tuple[Processor, list[str], threading.Thread]:
    """A processor whose claim is [a 2 s job, two quick ones], running in a thread."""
    queue = job_queue(QUEUE, connection)
    ids = [enqueue(queue, HOLD, seconds).id for seconds in (2.0, 0, 0)]
    processor = Processor(
        QUEUE,
        connection,
        functions={HOLD: hold},
        in_thread=True,
        settings=ProcessorSettings(hold_limit=hold_limit, maintenance_interval=600),
    )
    processor.runner.pace = 0.001  # a quick pace so far: it claims all three at once
    thread = threading.Thread(target=processor.work, kwargs={"burst": True})
    thread.start()
    eventually(lambda: connection.llen(STARTED_KEY) == 1)
    return processor, ids, thread


def test_a_slow_job_gives_the_rest_of_its_claim_back(redis_url, rq_connection) -> None:
    _, (slow, *quick), thread = slow_batch(rq_connection)
    # The other two wait in the queue again (for any worker), not behind the slow one.
    eventually(lambda: job_queue(QUEUE, rq_connection).job_ids == quick, timeout=1.5)
    assert fetch(rq_connection, slow).get_status() == JobStatus.STARTED
    thread.join(10)
    assert [fetch(rq_connection, job_id).get_status() for job_id in (slow, *quick)] == [JobStatus.FINISHED] * 3


def test_a_warm_stop_gives_claims_back_at_once(redis_url, rq_connection) -> None:
    processor, (slow, *quick), thread = slow_batch(rq_connection, hold_limit=60.0)  # only the stop gives back
    processor.request_stop_from_thread()
    eventually(lambda: job_queue(QUEUE, rq_connection).job_ids == quick, timeout=1.0)
    thread.join(10)
    assert fetch(rq_connection, slow).get_status() == JobStatus.FINISHED  # the job in hand is finished
    assert job_queue(QUEUE, rq_connection).job_ids == quick  # the rest stay queued, in order


def test_bulk_enqueue_stores_jobs_as_rq_does(rq_connection) -> None:
    """enqueue_many writes all but the first job of a chunk itself (for speed): as RQ would have."""
    queue = job_queue(QUEUE, rq_connection)
    bulk = enqueue_many(queue, RECORD, [{"n": 1}, {"n": 2}])  # job 2: written from job 1's stored fields
    single = enqueue(queue, RECORD, {"n": 2})  # job 3: RQ's own enqueue_job
    assert [job.id for job in bulk] == ["1", "2"] and single.id == "3"
    picture = redis_picture(rq_connection)
    assert picture["rq:job:2"] == picture["rq:job:3"]
    assert rq_connection.hget("rq:job:2", "data") == rq_connection.hget("rq:job:3", "data")  # same call, same bytes
    assert queue.job_ids == ["1", "2", "3"]
    assert (bulk[1].args, bulk[1].func_name, bulk[1].origin) == (({"n": 2},), RECORD, QUEUE)


def rq_shaped_jobs(connection: redis.Redis) -> dict[str, dict]:
    """Stored jobs of every shape a processor may read: ours (plain, with attempts), RQ's own (with a
    dependency, a TTL, a result, webhooks-free retries), and some written over by someone else."""
    from rq import Queue, Retry

    ours = enqueue(job_queue(QUEUE, connection), RECORD, {"n": 1})
    retried = enqueue(job_queue(QUEUE, connection), RECORD, {"n": 2}, JobSettings(attempts=3))
    rq_queue = Queue(QUEUE, connection=connection, serializer=JSONSerializer)
    plain = rq_queue.enqueue(RECORD, ttl=600, description="by RQ", retry=Retry(max=2, interval=[1, 5]))
    after = rq_queue.enqueue(RECORD, depends_on=plain, at_front=True)
    started = {"started_at": "2026-01-02T03:04:05.678901Z", "last_heartbeat": "2026-01-02T03:04:05Z"}
    connection.hset(ours.key, mapping=started)
    connection.hset(retried.key, mapping={"meta": "{not json", "status": "started", "worker_name": "w"})
    connection.hset(plain.key, mapping={"result": "{}", **started})  # RQ's own restore reads this one
    raws = {
        name: connection.hgetall(job.key)
        for name, job in {"ours": ours, "attempts": retried, "rq": plain, "dependent": after}.items()
    }
    raws["bare"] = {b"data": raws["ours"][b"data"]}
    return raws


def test_the_processor_reads_a_job_as_rq_does(rq_connection) -> None:
    """OfferedJob.restore reads jobs its own (faster) way: to the same attributes as RQ."""
    from rq.job import Job

    for name, raw in rq_shaped_jobs(rq_connection).items():
        theirs, ours = Job("1", rq_connection, JSONSerializer), OfferedJob("1", rq_connection, JSONSerializer)
        theirs.restore(raw)
        ours.restore(raw)
        if name == "bare":  # no creation time stored: both take the time of reading
            theirs.created_at = ours.created_at
        assert vars(ours) == vars(theirs), name
    ours = OfferedJob("1", rq_connection, JSONSerializer)
    ours.restore(rq_connection.hgetall("rq:job:1"))
    assert ours.started_at.isoformat() == "2026-01-02T03:04:05.678901+00:00"


def test_a_processor_stamps_times_and_execution_ids_as_rq_does() -> None:
    from uuid import uuid4

    from rq.utils import utcformat

    from queuing_system.stamps import execution_id, utc_text

    for moment in (
        datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        datetime(1999, 12, 31, 23, 59, 59, 1),
    ):
        assert utc_text(moment) == utcformat(moment)
    ids = [execution_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(len(i) == len(uuid4().hex) and int(i, 16) >= 0 for i in ids)


@pytest.mark.parametrize("prefix", ["myq", "{rq}"])
def test_task_7_under_another_rq_key_prefix_writes_nothing_under_rq(redis_url, rq_connection, prefix) -> None:
    """RQ_KEY_PREFIX (set for creator, processor and monitor, as RQ reads it) moves every key of RQ's,
    including those our Lua steps write; a hash tag in it is fine."""
    env = {"RQ_KEY_PREFIX": prefix, "NOTIFICATION_SEND_MS": "0"}
    with ScriptProcess("7_job_processor.py", env=env) as processor:
        with ScriptProcess("7_job_creator.py", env=env) as creator:
            assert creator.wait(60) == 0
        processor.wait_until(lambda: len(processor.lines) == 9, what="nine Sending lines")
        code, monitor, _ = run_script("-m", ["queuing_system.monitor", "--once"], env=env)
        processor.signal(signal.SIGTERM)
        assert processor.wait() == 0
    ends = [line for line in creator.lines if line.endswith(("completed", "blacklisted"))]
    assert len(ends) == 11 and creator.stderr == processor.stderr == ""
    assert code == 0
    assert any(line.split()[:2] == ["push_notification_code_2", "0"] for line in monitor)  # found where it lives
    assert rq_connection.keys("rq:*") == []
    assert rq_connection.zcard(f"{prefix}:finished:push_notification_code_2") == 9
    assert rq_connection.zcard(f"{prefix}:failed:push_notification_code_2") == 2


def test_the_loops_connection_survives_any_number_of_faults(redis_url) -> None:
    """Each fault resets the loop's connection; it is connected again, never made anew (the pool
    counts what it makes against its max_connections, and a hundred faults left it with none)."""
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(redis_url, max_connections=2))
    line = OrderedConnection(client)
    for _ in range(5):
        assert line.call("PING") == b"PONG"
        line.reset()


@pytest.mark.slow
def test_a_stopping_processor_backs_off_while_redis_refuses(redis_url, rq_connection, capsys) -> None:
    """Stopped with a job in hand and Redis read-only: it tries to settle that job for a few seconds,
    a line per attempt with the usual growing waits (it was thousands of lines, then
    `Too many connections`)."""
    processor, _, thread = slow_batch(rq_connection, hold_limit=60.0)
    processor.request_stop_from_thread()
    eventually(lambda: processor.state.stopping)
    with read_only(rq_connection):
        thread.join(STOP_SETTLE_SECONDS + 5)
        assert not thread.is_alive()
    lines = capsys.readouterr().out.splitlines()
    assert all(
        line.startswith("Redis refused a command: READONLY You can't write against a read only") for line in lines
    )
    assert 2 <= len(lines) <= 8


def test_the_idle_watch_survives_any_number_of_refusals(redis_url, rq_connection) -> None:
    """Each refused wait drops its connection; it is connected again, never made anew."""
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(redis_url, max_connections=2))
    watch = QueueWatch(client, [f"rq:queue:{QUEUE}"], "queuing:claimed:w")
    with read_only(rq_connection):  # BLMOVE writes: refused
        for _ in range(5):
            with pytest.raises(redis.exceptions.ReadOnlyError):
                watch.wait(1, threading.Event())
    rq_connection.rpush(f"rq:queue:{QUEUE}", "1")
    assert watch.wait(1, threading.Event()) is True
    watch.close()


def test_the_events_of_a_job_carry_its_creation_token(rq_connection) -> None:
    """Progress and the end name the creator run whose job it is, so a creator of thousands of jobs
    never reads a job back from Redis to know whether an event is about its own."""
    import importlib

    from queuing_system.creation_lua import TOKEN_FIELD
    from queuing_system.keys import JOB_EVENTS_CHANNEL, PROCESS_7, QUEUE_7

    data = {"phoneNumber": "4153518743", "message": "This is the code 4321 to verify your account"}
    [job] = enqueue_many(job_queue(QUEUE_7, rq_connection), PROCESS_7, [data])
    events = rq_connection.pubsub(ignore_subscribe_messages=True)
    events.subscribe(JOB_EVENTS_CHANNEL)
    assert events.get_message(timeout=5) is None  # the confirmation (ignored): subscribed from here on
    lesson = importlib.import_module("7_job_processor")  # the lesson's own job function
    processor = Processor(
        QUEUE_7,
        rq_connection,
        functions={PROCESS_7: lesson.process_job},
        settings=ProcessorSettings(maintenance_interval=600),
    )
    processor.work(burst=True)
    said = [json.loads(message["data"]) for message in iter(lambda: events.get_message(timeout=0.5), None)]
    assert [(entry["event"], entry["value"]) for entry in said] == [
        ("progress", 0),
        ("progress", 50),
        ("completed", None),
    ]
    assert {entry["token"] for entry in said} == {job.meta[TOKEN_FIELD]}
    events.close()
