"""No job lost, no worker dead: processors killed again and again, stopped mid-run, Redis restarted
under load, jobs written by someone else. Slow (`-m slow`); `make test` runs them, `make quick` does not."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from queuing_system.embedded import EmbeddedRedis
from queuing_system.events import ABANDONED_MESSAGE
from queuing_system.job_settings import JobSettings
from queuing_system.jobs import enqueue, job_queue
from queuing_system.keys import PROCESS_6, PROCESS_7, QUEUE_6, QUEUE_7
from queuing_system.processes import ScriptProcess, run_script
from tests.job_helpers import FAST, HOLDING_PROCESSOR, eventually, fetch
from tests.jobs_for_tests import FINALIZE_SLOWLY, HOLD, STARTED_KEY

pytestmark = pytest.mark.slow

END = re.compile(r"^Notification job (\d+) (completed|failed: .*)$")
SENDING = re.compile(r"^Sending notification to (\d+), with message: ")


def jobs_file(tmp_path: Path, count: int) -> Path:
    """`count` jobs, each with its own phone number (job n: 00000000n), none blacklisted."""
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"phoneNumber": f"{n:010d}", "message": f"code {n}"} for n in range(1, count + 1)]))
    return path


@contextlib.contextmanager
def stopped_at_the_end(processors: list[ScriptProcess]):
    """Whatever happens in the block, no processor outlives the test."""
    try:
        yield
    finally:
        for processor in processors:
            processor.__exit__(None, None, None)


class Ends:
    """What a creator printed about its jobs' ends, parsed as it arrives."""

    def __init__(self, creator: ScriptProcess) -> None:
        self.creator = creator

    def by_job(self) -> dict[str, list[str]]:
        ends: dict[str, list[str]] = {}
        for line in list(self.creator.lines):
            match = END.match(line)
            if match:
                ends.setdefault(match.group(1), []).append(match.group(2))
        return ends

    def count(self) -> int:
        return sum(1 for line in list(self.creator.lines) if END.match(line))


def sent_numbers(processors: list[ScriptProcess]) -> Counter[str]:
    return Counter(match.group(1) for p in processors for line in p.lines if (match := SENDING.match(line)))


def assert_every_job_ended_once(ends: dict[str, list[str]], count: int) -> list[str]:
    """Every created job has exactly one end; returns the ids of those that failed."""
    assert sorted(ends, key=int) == [str(n) for n in range(1, count + 1)]
    assert all(len(outcomes) == 1 for outcomes in ends.values()), {k: v for k, v in ends.items() if len(v) > 1}
    return [job_id for job_id, (outcome,) in ends.items() if outcome != "completed"]


def assert_nothing_left_behind(connection: redis.Redis) -> None:
    assert connection.llen(f"rq:queue:{QUEUE_7}") == 0
    assert connection.keys("queuing:claimed:*") == []
    assert connection.keys("queuing:running:*") == []
    assert connection.zcard(f"rq:wip:{QUEUE_7}") == 0


def test_processors_killed_again_and_again_lose_no_job(redis_url, rq_connection, tmp_path) -> None:
    count, kills = 2000, 8
    env = {**FAST, "NOTIFICATION_SEND_MS": "10"}
    processors = [ScriptProcess("7_job_processor.py", env=env) for _ in range(3)]
    everyone = list(processors)
    with stopped_at_the_end(everyone):
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
            ends = Ends(creator)
            for round_ in range(kills):
                # Kill only while jobs are flowing: wait for progress since the last kill.
                target = ends.count() + 80
                creator.wait_until(lambda target=target: ends.count() >= target, timeout=60, what="progress")
                victim = processors[round_ % 3]
                victim.kill()  # SIGKILL, the processor and its two workers: no chance to clean up
                processors[round_ % 3] = ScriptProcess("7_job_processor.py", env=env)
                everyone.append(processors[round_ % 3])
            assert creator.wait(120) == 0
        for processor in processors:
            assert processor.stop() == 0

    failed = assert_every_job_ended_once(ends.by_job(), count)
    # Only jobs in a killed processor's hands (two per kill at most) may fail, as abandoned.
    assert len(failed) <= 2 * kills
    assert {ends.by_job()[job_id][0] for job_id in failed} <= {f"failed: {ABANDONED_MESSAGE}"}
    sent = sent_numbers(everyone)
    assert max(sent.values()) == 1  # one attempt each: nothing runs twice
    assert all(
        sent[f"{int(job_id):010d}"] == 1 for job_id, outcome in ends.by_job().items() if outcome == ["completed"]
    )
    assert all("Traceback" not in p.stderr for p in [*everyone, creator])
    assert_nothing_left_behind(rq_connection)


def test_one_processor_killed_the_other_stopped_mid_run(redis_url, rq_connection, tmp_path) -> None:
    count = 600
    env = {**FAST, "NOTIFICATION_SEND_MS": "10"}
    first, second = (ScriptProcess("7_job_processor.py", env=env) for _ in range(2))
    everyone = [first, second]
    with stopped_at_the_end(everyone):
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
            ends = Ends(creator)
            creator.wait_until(lambda: ends.count() >= 100, timeout=60, what="100 jobs ended")
            first.kill()
            restarted = ScriptProcess("7_job_processor.py", env=env)
            everyone.append(restarted)
            creator.wait_until(lambda: ends.count() >= 250, timeout=60, what="250 jobs ended")
            second.signal(signal.SIGTERM)  # warm: finishes its jobs in hand, gives its claims back
            assert second.wait(20) == 0
            assert creator.wait(120) == 0
        assert restarted.stop() == 0

    failed = assert_every_job_ended_once(ends.by_job(), count)
    assert len(failed) <= 2  # the killed processor's jobs in hand
    assert max(sent_numbers(everyone).values()) == 1
    assert all("Traceback" not in p.stderr for p in [*everyone, creator])
    assert_nothing_left_behind(rq_connection)


@pytest.fixture
def aof_redis():
    """A private server with an append-only file: stopped and started again, it keeps everything."""
    with EmbeddedRedis(persistent=True) as server:
        yield server


def test_redis_restarted_under_load(aof_redis, tmp_path) -> None:
    count = 1500
    env = {**FAST, "REDIS_URL": aof_redis.url, "NOTIFICATION_SEND_MS": "5"}
    processors = [ScriptProcess("7_job_processor.py", env=env) for _ in range(2)]
    not_connected = "Redis client not connected to the server: "
    with stopped_at_the_end(processors):
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
            ends = Ends(creator)
            creator.wait_until(lambda: ends.count() >= 200, timeout=60, what="200 jobs ended")
            aof_redis.kill()  # SIGTERM: Redis writes its append-only file and stops
            for processor in processors:  # five failed attempts, 0.1 s doubling: about 3 s without Redis
                processor.wait_until(
                    lambda p=processor: sum(x.startswith(not_connected) for x in p.lines) >= 5,
                    what="five failed attempts",
                )
            aof_redis.start()
            assert creator.wait(120) == 0
        assert all(processor.returncode is None for processor in processors)  # both still alive

        # …and still working: 20 new jobs complete.
        more = tmp_path / "more.json"
        more.write_text(json.dumps([{"phoneNumber": f"{n:010d}", "message": "after"} for n in range(5001, 5021)]))
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(more)], env=env) as again:
            assert again.wait(60) == 0
        assert Ends(again).by_job() == {str(n): ["completed"] for n in range(count + 1, count + 21)}
        for processor in processors:
            assert processor.stop() == 0

    failed = assert_every_job_ended_once(ends.by_job(), count)
    assert len(failed) <= 4  # at most the jobs in hand when Redis went away
    assert all("Traceback" not in p.stderr for p in [*processors, creator, again])
    assert all(p.stderr == "" for p in processors)


def test_a_job_naming_anything_else_does_not_run(redis_url, rq_connection, tmp_path) -> None:
    marker = tmp_path / "pwned"
    attacker = Queue(QUEUE_7, connection=rq_connection, serializer=JSONSerializer)
    # What anyone who can write to Redis could do: RQ's own enqueue, any dotted name.
    by_function = attacker.enqueue("os.system", f"touch {marker}")
    by_callback = enqueue(job_queue(QUEUE_7, rq_connection), PROCESS_7, {"phoneNumber": "4153518743", "message": "hi"})
    by_callback.connection.hset(by_callback.key, "failure_callback_name", "os.system")
    attacker.enqueue_job(
        attacker.create_job(PROCESS_7, args=({"phoneNumber": "1", "message": "x"},), on_success=Callback("os.system"))
    )
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        eventually(
            lambda: all(
                fetch(rq_connection, job_id).get_status() == JobStatus.FAILED
                for job_id in (by_function.id, by_callback.id)
            )
        )
        processor.stop()
    assert not marker.exists()
    refused = "Job {} 'os.system' is not offered by this processor"
    assert fetch(rq_connection, by_function.id).meta["error"] == refused.format("function")
    assert fetch(rq_connection, by_callback.id).meta["error"] == refused.format("callback")
    assert processor.lines == []  # nothing of them ran
    assert processor.stderr == ""


def abandoned_job(connection: redis.Redis, failure_callback: str = "") -> Job:
    """A started job whose worker vanished long ago: RQ's started registry gave up on it."""
    job = job_queue(QUEUE_7, connection).create_job(
        PROCESS_7, args=({"phoneNumber": "1", "message": "hi"},), job_id="99"
    )
    job.origin = QUEUE_7
    job.set_status(JobStatus.STARTED, pipeline=None)
    job.save()
    if failure_callback:
        connection.hset(job.key, "failure_callback_name", failure_callback)
    connection.zadd(f"rq:wip:{QUEUE_7}", {f"{job.id}:gone": 1})  # expired long ago
    connection.sadd("rq:queues", f"rq:queue:{QUEUE_7}")  # a queue RQ's tools (and the monitor) list
    return job


def test_an_abandoned_job_is_failed_before_it_is_announced(redis_url, rq_connection) -> None:
    """A job whose worker vanished long ago (RQ's started registry gave up on it): ended through RQ,
    stored first, announced after, and only offered callbacks run (here: a hostile one is skipped)."""
    job = abandoned_job(rq_connection, failure_callback="os.system")
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        eventually(lambda: fetch(rq_connection, job.id).get_status() == JobStatus.FAILED)
        processor.stop()
    assert fetch(rq_connection, job.id).meta["error"] == ABANDONED_MESSAGE
    assert rq_connection.zcard(f"rq:wip:{QUEUE_7}") == 0
    assert processor.stderr == ""


def test_a_killed_seat_server_sells_no_seat_without_a_reservation(redis_url, r) -> None:
    from queuing_system.embedded import free_port
    from queuing_system.http_requests import request

    port = free_port()
    with ScriptProcess("tests/slow_seat_server.py", env={**FAST, "PORT": str(port)}) as slow:
        slow.wait_for_line(f"API available on localhost port {port}")
        assert request(port, "/reserve_seat")[2] == {"status": "Reservation in process"}
        request(port, "/process")
        eventually(lambda: r.get("available_seats") == "49")  # the seat is taken, the job still runs…
        slow.kill()  # …and its server dies
    port = free_port()
    with ScriptProcess("100_seat.py", env={**FAST, "PORT": str(port)}) as survivor:
        survivor.wait_for_line(f"API available on localhost port {port}")
        request(port, "/process")  # its worker's sweep ends the dead server's job
        survivor.wait_for_line(f"Seat reservation job 1 failed: {ABANDONED_MESSAGE}")
        assert r.get("available_seats") == "50"  # given back
        survivor.stop()
    assert "Traceback" not in survivor.stderr


def test_the_monitor_shows_live_workers_only_and_sweeps_nothing(redis_url, rq_connection) -> None:
    from queuing_system.processes import run_script

    def monitored_workers() -> list[str]:
        code, lines, stderr = run_script("-m", ["queuing_system.monitor", "--once"])
        assert (code, stderr) == (0, "")
        return [line for line in lines if " pid " in line]

    with ScriptProcess("7_job_processor.py", env={**FAST, "QUEUING_MAINTENANCE_INTERVAL": "600"}) as processor:
        eventually(lambda: len(monitored_workers()) == 2)
        # An abandoned job (its worker vanished): RQ's sweep would fail it; the monitor must not.
        job = abandoned_job(rq_connection)
        assert len(monitored_workers()) == 2
        processor.kill()
    # Dead workers are gone from the monitor once their lease (2 s here) lapses.
    eventually(lambda: monitored_workers() == [], timeout=10)
    assert fetch(rq_connection, job.id).get_status() == JobStatus.STARTED
    assert rq_connection.zcard(f"rq:wip:{QUEUE_7}") == 1  # the monitor swept nothing


# -- one process tree ------------------------------------------------------------------------------


def live_worker_pids(connection: redis.Redis) -> set[int]:
    pids = set()
    for key in connection.smembers("rq:workers"):
        data = connection.hgetall(key)
        if data and b"death" not in data:
            pids.add(int(data[b"pid"]))
    return pids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_processor_killed_alone_takes_its_workers_with_it(redis_url, rq_connection, r) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    held = [enqueue(queue, HOLD, 1.0) for _ in range(2)]
    queued = [enqueue(queue, PROCESS_6, {"phoneNumber": f"{n:010d}", "message": "hi"}) for n in range(4)]
    with ScriptProcess(HOLDING_PROCESSOR, env={**FAST, "HOLDING_CONCURRENCY": "2"}) as processor:
        processor.wait_until(lambda: r.llen(STARTED_KEY) == 2, what="both workers holding a job")
        workers = live_worker_pids(rq_connection)
        os.kill(processor.pid, signal.SIGKILL)  # the processor only: its workers are told to leave (warm)
        processor.wait(10)
        eventually(lambda: not any(pid_alive(pid) for pid in workers), timeout=10)
    assert len(workers) == 2
    assert [fetch(rq_connection, job.id).get_status() for job in held] == [JobStatus.FINISHED] * 2
    assert queue.job_ids == [job.id for job in queued]  # never started: still queued, in order
    assert live_worker_pids(rq_connection) == set()
    assert rq_connection.keys("queuing:claimed:*") == []


def stopped_twice(r, concurrency: int, processes: int, settle_within: float) -> ScriptProcess:
    """A processor holding `concurrency` jobs, stopped (warm), then again a second later (cold)."""
    env = {**FAST, "HOLDING_CONCURRENCY": str(concurrency), "HOLDING_PROCESSES": str(processes)}
    with ScriptProcess(HOLDING_PROCESSOR, env=env) as processor:
        processor.wait_until(lambda: r.llen(STARTED_KEY) == concurrency, what="every worker holding a job")
        processor.signal(signal.SIGTERM)  # warm: would finish the jobs in hand…
        time.sleep(1.2)  # (a repeat within a second is the same request: terminal and parent both pass it on)
        processor.signal(signal.SIGTERM)  # …cold: hand them back now
        assert processor.wait(settle_within) == 0
    return processor


def assert_handed_back(rq_connection, held) -> None:
    for job in held:
        stored = fetch(rq_connection, job.id)
        assert (stored.get_status(), stored.meta["error"]) == (
            JobStatus.FAILED,
            "Processor stopped before the job finished",
        )


@pytest.mark.parametrize(("concurrency", "processes"), [(1, 1), (2, 2), (3, 1)])
def test_a_second_stop_hands_back_every_job_in_hand(redis_url, rq_connection, r, concurrency, processes) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    held = [enqueue(queue, HOLD, 30) for _ in range(concurrency)]
    processor = stopped_twice(r, concurrency, processes, settle_within=10)
    assert_handed_back(rq_connection, held)
    assert processor.stderr == ""


@pytest.mark.parametrize(("concurrency", "processes"), [(1, 1), (3, 1)])
def test_a_second_stop_that_lands_inside_a_finalizer_still_hands_the_job_back(
    redis_url, rq_connection, r, concurrency, processes
) -> None:
    # Raised inside an object's __del__, the stop would be printed and dropped ("Exception ignored"), and
    # the job would run on: it lands once the finalizer has returned. (The second stop comes while the
    # finalizers still run: they take 4 s.)
    queue = job_queue(QUEUE_6, rq_connection)
    held = [enqueue(queue, FINALIZE_SLOWLY, 4, JobSettings(timeout=60)) for _ in range(concurrency)]
    processor = stopped_twice(r, concurrency, processes, settle_within=15)
    assert_handed_back(rq_connection, held)
    assert processor.stderr == ""


def test_a_dead_worker_is_replaced(redis_url, rq_connection) -> None:
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        eventually(lambda: len(live_worker_pids(rq_connection)) == 2)
        first, second = sorted(live_worker_pids(rq_connection))
        os.kill(first, signal.SIGKILL)
        eventually(lambda: len(live_worker_pids(rq_connection) - {first, second}) == 1, timeout=10)
        assert processor.returncode is None
        assert processor.stop() == 0
    assert processor.stderr == ""


# -- creators ride out a blip ------------------------------------------------------------------------


def test_a_creator_rides_out_a_redis_blip(aof_redis, tmp_path) -> None:
    count = 20_000
    env = {"REDIS_URL": aof_redis.url}
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
        creator.wait_for_line("Notification job created: 1")
        aof_redis.kill()
        creator.wait_until(
            lambda: any(x.startswith("Redis client not connected") for x in creator.lines),
            what="the not-connected line",
        )
        aof_redis.start()
        creator.wait_for_line(f"Notification job created: {count}", timeout=60)
        creator.signal(signal.SIGINT)  # no processor: stop waiting for the jobs' ends
        assert creator.wait() == 0
    created = [line for line in creator.lines if line.startswith("Notification job created: ")]
    assert created == [f"Notification job created: {n}" for n in range(1, count + 1)]  # once each, in order
    connection = redis.Redis.from_url(aof_redis.url)
    assert connection.lrange(f"rq:queue:{QUEUE_7}", 0, -1) == [str(n).encode() for n in range(1, count + 1)]
    assert "Traceback" not in creator.stderr


def test_a_creator_says_which_jobs_it_created_when_redis_stays_away(own_redis, tmp_path) -> None:
    count = 20_000
    env = {"REDIS_URL": own_redis.url, "QUEUING_ENQUEUE_PATIENCE": "2"}
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
        creator.wait_for_line("Notification job created: 1")
        own_redis.kill()
        assert creator.wait(30) == 1
    created = [line for line in creator.lines if line.startswith("Notification job created: ")]
    last = len(created)
    assert created == [f"Notification job created: {n}" for n in range(1, last + 1)]
    assert creator.stderr.splitlines()[-1].endswith(
        f"; created {last} of {count} jobs (ids 1-{last}), not the other {count - last}"
    )
    assert len(creator.stderr.splitlines()) == 1


def test_the_seat_worker_outlives_a_redis_restart(aof_redis) -> None:
    from queuing_system.embedded import free_port
    from queuing_system.http_requests import request

    port = free_port()
    env = {**FAST, "REDIS_URL": aof_redis.url, "PORT": str(port)}
    completed = lambda: sum(line.endswith(" completed") for line in server.lines)  # noqa: E731
    with ScriptProcess("100_seat.py", env=env) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        request(port, "/process")
        for _ in range(2):
            request(port, "/reserve_seat")
        server.wait_until(lambda: completed() == 2, what="two reservations")
        aof_redis.kill()
        server.wait_until(
            lambda: any(x.startswith("Redis client not connected") for x in server.lines), what="the not-connected line"
        )
        aof_redis.start()
        for _ in range(3):
            assert request(port, "/reserve_seat")[2] == {"status": "Reservation in process"}
        server.wait_until(lambda: completed() == 5, what="three more reservations, after the restart")
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "45"}
        assert server.stop() == 0
    assert "Traceback" not in server.stderr


def test_jobs_written_by_others_in_forms_rq_cannot_read_fail_and_the_processor_goes_on(
    redis_url, rq_connection
) -> None:
    queue = job_queue(QUEUE_7, rq_connection)
    pickled = Queue(QUEUE_7, connection=rq_connection).enqueue(PROCESS_7, {"phoneNumber": "1", "message": "x"})
    garbled = enqueue(queue, PROCESS_7, {"phoneNumber": "1", "message": "x"})
    rq_connection.hset(garbled.key, "created_at", "not a date")
    rq_connection.rpush(queue.key, "no-such-job")  # an id with no job behind it
    good = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "still served"})
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        eventually(lambda: fetch(rq_connection, good.id).get_status() == JobStatus.FINISHED)
        eventually(lambda: rq_connection.hget(garbled.key, "status") == b"failed")
        eventually(lambda: rq_connection.hget(pickled.key, "status") == b"failed")
        assert processor.stop() == 0
    assert processor.lines == ["Sending notification to 4153518743, with message: still served"]
    assert fetch(rq_connection, pickled.id).meta["error"] == (
        "Job data cannot be read as JSON (enqueued with RQ's default serializer, pickle?)"
    )
    assert rq_connection.zscore(f"rq:failed:{QUEUE_7}", garbled.id) is not None
    assert processor.stderr == ""
    code, lines, _ = run_script("-m", ["queuing_system.dead_letters"])  # they are listed, not a traceback
    assert code == 0 and len(lines) == 2


@pytest.mark.parametrize("arguments", [[], ["--concurrency", "2", "--processes", "1"]])
def test_jobs_finished_while_redis_was_away_longer_than_the_lease_complete(aof_redis, tmp_path, arguments) -> None:
    """Every worker's lease lapses while Redis is away; the jobs they finished meanwhile are theirs to
    settle when it is back, not a sweep's to fail as abandoned (nor to run again)."""
    env = {**FAST, "REDIS_URL": aof_redis.url, "NOTIFICATION_SEND_MS": "1500"}  # lease: 2 s
    not_connected = "Redis client not connected to the server: "
    with ScriptProcess("7_job_processor.py", arguments, env=env) as processor:
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, 2))], env=env) as creator:
            creator.wait_until(lambda: sum(line.endswith(" 50% complete") for line in creator.lines) == 2)
            aof_redis.kill()  # the two sends go on, and end, while Redis is away
            processor.wait_until(  # six attempts, 0.1 s doubling: over 3 s away, the lease is 2 s
                lambda: sum(line.startswith(not_connected) for line in processor.lines) >= 6, what="six attempts"
            )
            aof_redis.start()
            assert creator.wait(60) == 0
        assert processor.stop() == 0
    assert Ends(creator).by_job() == {"1": ["completed"], "2": ["completed"]}
    assert sent_numbers([processor]) == {"0000000001": 1, "0000000002": 1}
    assert processor.stderr == ""
