"""`--concurrency N`: N jobs at once in one processor, threads of one process each with its own RQ worker,
lease and claims; every guarantee as with one job at a time (kills, stops, Redis restarts, idle quiet).
The fault tests are slow (`-m slow`)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
import redis
from rq.job import JobStatus

from queuing_system.embedded import EmbeddedRedis
from queuing_system.events import ABANDONED_MESSAGE
from queuing_system.jobs import enqueue, job_queue
from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.processes import ROOT, ScriptProcess, run_script
from tests.job_helpers import FAST, HOLDING_PROCESSOR, eventually, fetch
from tests.jobs_for_tests import HOLD_UNTIL_RELEASED, RELEASE_KEY, STARTED_KEY
from tests.test_faults import (
    Ends,
    assert_every_job_ended_once,
    assert_nothing_left_behind,
    jobs_file,
    live_worker_pids,
    sent_numbers,
    stopped_at_the_end,
)
from tests.test_idle import commands_seen

PROGRESS = re.compile(r"^Notification job (\d+) (0|50)% complete$")


def busy_workers(connection: redis.Redis) -> int:
    return sum(1 for key in connection.smembers("rq:workers") if connection.hget(key, "state") == b"busy")


def notification(n: int) -> dict[str, str]:
    return {"phoneNumber": f"{n:010d}", "message": f"code {n}"}


def test_fifty_jobs_run_at_once_in_one_process(redis_url, rq_connection, r) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    held = [enqueue(queue, HOLD_UNTIL_RELEASED) for _ in range(50)]
    queued = [enqueue(queue, PROCESS_6, notification(n)) for n in range(1, 11)]
    env = {**FAST, "HOLDING_CONCURRENCY": "50", "HOLDING_PROCESSES": "1"}
    with ScriptProcess(HOLDING_PROCESSOR, env=env) as processor:
        processor.wait_until(lambda: r.llen(STARTED_KEY) == 50, timeout=30, what="fifty jobs running")
        assert busy_workers(rq_connection) == 50
        assert live_worker_pids(rq_connection) == {processor.pid}  # one process
        assert queue.job_ids == [job.id for job in queued]  # the fifty workers hold nothing else
        r.set(RELEASE_KEY, 1)
        processor.wait_for_line("Sending notification to 0000000010, with message: code 10")
        eventually(lambda: all(fetch(rq_connection, job.id).get_status() == JobStatus.FINISHED for job in held))
        assert processor.stop() == 0
    assert sorted(processor.lines) == sorted(
        f"Sending notification to {n:010d}, with message: code {n}" for n in range(1, 11)
    )
    assert processor.stderr == ""
    assert live_worker_pids(rq_connection) == set()


def test_a_warm_stop_finishes_every_job_in_hand_and_gives_the_rest_back(redis_url, rq_connection, r) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    held = [enqueue(queue, HOLD_UNTIL_RELEASED) for _ in range(5)]
    queued = [enqueue(queue, PROCESS_6, notification(n)) for n in range(1, 6)]
    env = {**FAST, "HOLDING_CONCURRENCY": "5", "HOLDING_PROCESSES": "1"}
    with ScriptProcess(HOLDING_PROCESSOR, env=env) as processor:
        processor.wait_until(lambda: r.llen(STARTED_KEY) == 5, what="five jobs running")
        processor.signal(signal.SIGTERM)
        eventually(lambda: busy_workers(rq_connection) == 5)  # still at it: a warm stop waits for them
        r.set(RELEASE_KEY, 1)
        assert processor.wait(15) == 0
    assert [fetch(rq_connection, job.id).get_status() for job in held] == [JobStatus.FINISHED] * 5
    assert queue.job_ids == [job.id for job in queued]  # never started: still queued, in order
    assert processor.lines == []
    assert processor.stderr == ""
    assert rq_connection.keys("queuing:claimed:*") == []


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        (["--concurrency", "0"], "argument --concurrency: expected a whole number from 1 to 256, got '0'"),
        (["--concurrency", "257"], "argument --concurrency: expected a whole number from 1 to 256, got '257'"),
        (["--concurrency", "many"], "argument --concurrency: expected a whole number from 1 to 256, got 'many'"),
        (["--processes", "0"], "argument --processes: expected a whole number from 1 to 64, got '0'"),
    ],
)
def test_out_of_bounds_concurrency_is_one_line_and_exit_2(closed_url, arguments, complaint) -> None:
    for script in ("6_job_processor.py", "7_job_processor.py"):
        code, lines, stderr = run_script(script, arguments, env={"REDIS_URL": closed_url})
        assert (code, lines) == (2, [])
        assert stderr.splitlines()[-1] == f"{script}: error: {complaint}"


# -- every guarantee at fifty at once (slow) ---------------------------------------------------------------


def assert_progress_came_first(lines: list[str]) -> None:
    """Each completed job's 0% and 50% lines came before its end (events only after the end is stored)."""
    ended: set[str] = set()
    for line in lines:
        if (progress := PROGRESS.match(line)) and progress.group(1) in ended:
            raise AssertionError(f"progress after the end: {line}")
        if line.endswith(" completed"):
            ended.add(line.split()[2])


@pytest.mark.slow
def test_fifty_at_once_killed_and_restarted_twice_every_job_ends_once(redis_url, rq_connection, tmp_path) -> None:
    count, concurrency = 1500, 50
    env = {**FAST, "NOTIFICATION_SEND_MS": "50"}
    arguments = ["--concurrency", str(concurrency)]
    processor = ScriptProcess("7_job_processor.py", arguments, env=env)
    everyone = [processor]
    with stopped_at_the_end(everyone):
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
            ends = Ends(creator)
            for target in (300, 800):
                creator.wait_until(lambda target=target: ends.count() >= target, timeout=60, what="progress")
                processor.kill()  # SIGKILL, the processor and every worker: fifty jobs in hand
                processor = ScriptProcess("7_job_processor.py", arguments, env=env)
                everyone.append(processor)
            assert creator.wait(120) == 0
        assert processor.stop() == 0

    failed = assert_every_job_ended_once(ends.by_job(), count)
    assert len(failed) <= 2 * concurrency  # only the jobs in the killed processors' hands
    assert {ends.by_job()[job_id][0] for job_id in failed} <= {f"failed: {ABANDONED_MESSAGE}"}
    sent = sent_numbers(everyone)
    assert max(sent.values()) == 1  # nothing ran twice
    assert all(
        sent[f"{int(job_id):010d}"] == 1 for job_id, outcome in ends.by_job().items() if outcome == ["completed"]
    )
    assert_progress_came_first(creator.lines)
    assert all(p.stderr == "" for p in everyone)
    assert_nothing_left_behind(rq_connection)


@pytest.mark.slow
def test_fifty_at_once_stopped_mid_run_then_started_again(redis_url, rq_connection, tmp_path) -> None:
    count = 800
    env = {**FAST, "NOTIFICATION_SEND_MS": "50"}
    arguments = ["--concurrency", "50", "--processes", "1"]
    first = ScriptProcess("7_job_processor.py", arguments, env=env)
    everyone = [first]
    with stopped_at_the_end(everyone):
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
            ends = Ends(creator)
            creator.wait_until(lambda: ends.count() >= 200, timeout=60, what="200 jobs ended")
            first.signal(signal.SIGTERM)  # warm: every job in hand finishes, the other claims go back
            assert first.wait(20) == 0
            second = ScriptProcess("7_job_processor.py", arguments, env=env)
            everyone.append(second)
            assert creator.wait(120) == 0
        assert second.stop() == 0

    assert assert_every_job_ended_once(ends.by_job(), count) == []  # nothing failed
    assert max(sent_numbers(everyone).values()) == 1
    assert_progress_came_first(creator.lines)
    assert all(p.stderr == "" for p in everyone)
    assert_nothing_left_behind(rq_connection)


@pytest.mark.slow
def test_fifty_at_once_ride_out_a_redis_restart_saying_it_once_per_attempt(tmp_path) -> None:
    count = 1000
    not_connected = "Redis client not connected to the server: "
    with EmbeddedRedis(persistent=True) as server:
        env = {**FAST, "REDIS_URL": server.url, "NOTIFICATION_SEND_MS": "20"}
        arguments = ["--concurrency", "50", "--processes", "1"]
        with ScriptProcess("7_job_processor.py", arguments, env=env) as processor:
            with ScriptProcess(
                "7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env
            ) as creator:
                ends = Ends(creator)
                creator.wait_until(lambda: ends.count() >= 200, timeout=60, what="200 jobs ended")
                server.kill()  # SIGTERM: Redis writes its append-only file and stops
                processor.wait_until(
                    lambda: sum(line.startswith(not_connected) for line in processor.lines) >= 5,
                    what="five failed attempts",
                )
                server.start()
                assert creator.wait(120) == 0
            assert processor.returncode is None  # still alive
            assert processor.stop() == 0
    failed = assert_every_job_ended_once(ends.by_job(), count)
    assert len(failed) <= 50  # at most the jobs in hand when Redis went away
    said = [line for line in processor.lines if line.startswith(not_connected)]
    # Fifty workers failing together, said once per attempt for all of them (each saying its own: 45 and more).
    assert 5 <= len(said) <= 10, said
    assert processor.stderr == ""


@pytest.mark.slow
def test_fifty_at_once_idle_is_quiet(own_redis: EmbeddedRedis, tmp_path) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    env = {"REDIS_URL": own_redis.url}  # the default lease (15 s) and sweeps (idle: every 30 s)
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([notification(n) for n in range(1, 201)]))
    with ScriptProcess("7_job_processor.py", ["--concurrency", "50"], env=env) as processor:
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs)], env=env) as creator:
            assert creator.wait(60) == 0
        # Idle, the 48 workers that are not their process's lead let their leases lapse and are swept.
        eventually(lambda: client.scard("queuing:claimers") == 2, timeout=90)
        for window in range(2):
            seen = commands_seen(own_redis.port, 10.0)
            assert len(seen) <= 20, (window, b"\n".join(seen).decode(errors="replace"))
        assert processor.stop() == 0
    assert processor.stderr == ""
    client.close()


def test_too_few_open_files_for_the_jobs_at_once_is_one_line_and_exit_2(closed_url) -> None:
    """256 jobs at once in one process need about a thousand descriptors: where the hard limit is lower, say
    so before anything starts (a worker out of descriptors cannot reach Redis)."""
    script = f"ulimit -n 200; exec {sys.executable} 7_job_processor.py --concurrency 256 --processes 1"
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env={**os.environ, "REDIS_URL": closed_url}, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "--concurrency: 256 jobs at once in one process need about 1088 open files, and this process may open 200 "
        "(ulimit -n): fewer jobs at once, more --processes, or a higher limit\n"
    )
