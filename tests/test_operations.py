"""Beyond the curriculum: retries with backoff, delays, priorities, timeouts, dead letters,
monitoring, scaling, graceful shutdown and job-data validation — on the real throwaway Redis."""

import json
import os
import signal
import time

import pytest
from rq import Worker
from rq.job import JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from queuing_system.events import JobEvent, JobEvents
from queuing_system.jobs import JobSettings, Priority, enqueue, job_queue
from queuing_system.keys import PROCESS_6, QUEUE_6, QUEUE_7
from queuing_system.processes import ScriptProcess, run_script
from tests.job_helpers import FAST, HOLDING_PROCESSOR, eventually, fetch
from tests.jobs_for_tests import FINALIZE_SLOWLY, HOLD, STARTED_KEY

# -- 1. attempts with exponential backoff, delays, priorities ------------------------------------


def create_against_flaky_gateway(attempts: int, env: dict[str, str]) -> tuple[ScriptProcess, ScriptProcess]:
    """Run 6_job_creator.py --attempts N while tests/failing_processor.py processes; return both, ended."""
    with ScriptProcess("tests/failing_processor.py", env=env) as processor:
        with ScriptProcess("6_job_creator.py", ["--attempts", str(attempts)], env=env) as creator:
            assert creator.wait(30) == 0
        processor.stop()
    return processor, creator


def test_a_transient_failure_is_retried_with_exponential_backoff(redis_url, r) -> None:
    env = {**FAST, "QUEUING_RETRY_BACKOFF": "2"}  # retries after 2 s, then 4 s
    processor, creator = create_against_flaky_gateway(3, env)
    assert creator.lines == [
        "Notification job created: 1",
        "Notification job 1 failed attempt: SMS gateway unreachable",
        "Notification job 1 failed attempt: SMS gateway unreachable",
        "Notification job failed",
    ]
    first, second, third = (float(t) for t in r.lrange("test:attempts:1", 0, -1))
    # RQ schedules to the whole second (it truncates the due time), so a retry may run up to 1 s early.
    assert second - first >= 2.0 - 1.0
    assert third - second >= 4.0 - 1.0
    assert processor.stderr == creator.stderr == ""


def test_a_transient_failure_that_heals_completes(redis_url) -> None:
    _, creator = create_against_flaky_gateway(2, {**FAST, "GATEWAY_FAILURES": "1"})
    assert creator.lines == [
        "Notification job created: 1",
        "Notification job 1 failed attempt: SMS gateway unreachable",
        "Notification job completed",
    ]


def test_a_blacklisted_number_is_a_permanent_failure(redis_url, tmp_path) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        json.dumps(
            [
                {"phoneNumber": "4153518780", "message": "This is the code 1234 to verify your account"},
                {"phoneNumber": "4153518743", "message": "This is the code 4321 to verify your account"},
            ]
        )
    )
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs), "--attempts", "3"], env=FAST) as creator:
            assert creator.wait(30) == 0
        processor.stop()
    assert sorted(creator.lines) == sorted(
        [
            "Notification job created: 1",
            "Notification job created: 2",
            "Notification job 1 0% complete",
            "Notification job 1 failed: Phone number 4153518780 is blacklisted",  # once, not retried
            "Notification job 2 0% complete",
            "Notification job 2 50% complete",
            "Notification job 2 completed",
        ]
    )


def test_a_delayed_job_waits_its_turn(redis_url, rq_connection) -> None:
    with ScriptProcess("6_job_processor.py", env=FAST) as processor:
        started = time.time()
        with ScriptProcess("6_job_creator.py", ["--delay", "3"], env=FAST) as creator:
            creator.wait_for_line("Notification job created: 1")
            assert fetch(rq_connection, "1").get_status() == JobStatus.SCHEDULED
            assert creator.wait(30) == 0
        processor.stop()
    assert creator.lines == ["Notification job created: 1", "Notification job completed"]
    # RQ schedules to the whole second (it truncates the due time): at least delay - 1 s.
    assert fetch(rq_connection, "1").started_at.timestamp() - started >= 3.0 - 1.0


def test_higher_priority_jobs_are_served_first(redis_url, rq_connection) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    for phone, priority in (
        ("1000000001", Priority.LOW),
        ("1000000002", Priority.NORMAL),
        ("1000000003", Priority.HIGH),
        ("1000000004", Priority.NORMAL),
        ("1000000005", Priority.HIGH),
    ):
        enqueue(queue, PROCESS_6, {"phoneNumber": phone, "message": "hi"}, JobSettings(priority=priority))
    with ScriptProcess("6_job_processor.py", env=FAST) as processor:
        processor.wait_until(lambda: len(processor.lines) == 5, what="five Sending lines")
        processor.stop()
    assert [line.split()[3].rstrip(",") for line in processor.lines] == [
        "1000000003",
        "1000000005",
        "1000000002",
        "1000000004",
        "1000000001",
    ]


# -- 2. job timeout (Kue's ttl) --------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", ["1", "3"])  # in the main thread (SIGALRM), in threads (a watchdog)
def test_a_job_over_its_time_limit_fails_and_the_worker_goes_on(redis_url, rq_connection, concurrency) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        slow = enqueue(queue, HOLD, 30, JobSettings(timeout=1))
        good = enqueue(queue, PROCESS_6, {"phoneNumber": "4153518743", "message": "hi"})
        seen: dict[str, str] = {}
        events.on(slow.id, JobEvent.FAILED, lambda reason: seen.setdefault("slow", reason))
        events.on(good.id, JobEvent.COMPLETED, lambda _: seen.setdefault("good", "completed"))
        env = {**FAST, "HOLDING_CONCURRENCY": concurrency, "HOLDING_PROCESSES": "1"}
        with ScriptProcess(HOLDING_PROCESSOR, env=env) as processor:
            events.wait_until_ended([slow.id, good.id])
            processor.stop()
    assert seen == {"slow": "Task exceeded maximum timeout value (1 seconds)", "good": "completed"}


@pytest.mark.parametrize("concurrency", ["1", "3"])
def test_a_time_limit_that_rings_inside_a_finalizer_still_ends_the_job(redis_url, rq_connection, concurrency) -> None:
    # Raised inside an object's __del__, an exception is printed and dropped ("Exception ignored"), and the
    # job would run on past its limit: the limit lands once the finalizer has returned.
    queue = job_queue(QUEUE_6, rq_connection)
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        job = enqueue(queue, FINALIZE_SLOWLY, 2, JobSettings(timeout=1))
        reasons: list[str] = []
        events.on(job.id, JobEvent.FAILED, reasons.append)
        env = {**FAST, "HOLDING_CONCURRENCY": concurrency, "HOLDING_PROCESSES": "1"}
        with ScriptProcess(HOLDING_PROCESSOR, env=env) as processor:
            events.wait_until_ended([job.id])
            processor.stop()
    assert reasons == ["Task exceeded maximum timeout value (1 seconds)"]
    assert processor.stderr == ""


@pytest.mark.parametrize(("concurrency", "processes"), [(1, 1), (2, 2), (3, 1)])
def test_a_stray_alarm_signal_ends_no_processor_and_no_job(redis_url, rq_connection, r, concurrency, processes) -> None:
    # `kill -ALRM` (SIGALRM's default ends a process; a job's time limit is a SIGALRM in the main thread)
    queue = job_queue(QUEUE_6, rq_connection)
    env = {**FAST, "HOLDING_CONCURRENCY": str(concurrency), "HOLDING_PROCESSES": str(processes)}
    with ScriptProcess(HOLDING_PROCESSOR, env=env) as processor:
        eventually(lambda: len(rq_connection.smembers("rq:workers")) >= processes)  # up, idle
        os.killpg(processor.pid, signal.SIGALRM)  # the processor and its worker processes
        job = enqueue(queue, HOLD, 1.5, JobSettings(timeout=20))
        eventually(lambda: r.llen(STARTED_KEY) == 1)
        os.killpg(processor.pid, signal.SIGALRM)  # mid-job
        eventually(lambda: fetch(rq_connection, job.id).get_status() == JobStatus.FINISHED)
        assert processor.returncode is None
        assert processor.stop() == 0
    assert processor.stderr == ""


# -- 3. dead letters ---------------------------------------------------------------------------------


def test_dead_letters_are_listed_and_requeued(redis_url, rq_connection, tmp_path) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(
        json.dumps([{"phoneNumber": "4153518780", "message": "m1"}, {"phoneNumber": "4153518781", "message": "m2"}])
    )
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs)]) as creator:
            assert creator.wait(30) == 0
        processor.stop()

    code, lines, _ = run_script("-m", ["queuing_system.dead_letters"])
    assert code == 0
    assert [line.split(", failed ")[0] for line in lines] == [
        "job 1 on push_notification_code_2",
        "job 2 on push_notification_code_2",
    ]
    assert [line.split(" UTC: ")[1] for line in lines] == [
        "Phone number 4153518780 is blacklisted",
        "Phone number 4153518781 is blacklisted",
    ]

    assert run_script("-m", ["queuing_system.dead_letters", "requeue", "2", "7"])[:2] == (
        1,
        ["Requeued job 2 on push_notification_code_2"],
    )
    queue = job_queue(QUEUE_7, rq_connection)
    assert queue.job_ids == ["2"]
    assert run_script("-m", ["queuing_system.dead_letters", "requeue", "--all"])[:2] == (
        0,
        ["Requeued job 1 on push_notification_code_2"],
    )
    assert queue.job_ids == ["2", "1"]
    assert run_script("-m", ["queuing_system.dead_letters"])[:2] == (0, ["No failed jobs."])


# -- 4. monitoring -------------------------------------------------------------------------------------


def test_monitor_once_shows_every_queue_and_worker(redis_url, rq_connection) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    for _ in range(3):
        enqueue(queue, PROCESS_6, {"phoneNumber": "4153518743", "message": "hi"})
    enqueue(queue, PROCESS_6, {"phoneNumber": "4153518743", "message": "later"}, JobSettings(delay=60))
    code, lines, stderr = run_script("-m", ["queuing_system.monitor", "--once"])
    assert (code, stderr) == (0, "")
    assert lines[1].split() == ["queue", "queued", "started", "scheduled", "deferred", "finished", "failed"]
    assert lines[2].split() == ["push_notification_code", "3", "0", "1", "0", "0", "0"]
    assert lines[3:] == ["workers: 0"]

    with ScriptProcess("6_job_processor.py", env=FAST) as processor:
        processor.wait_until(lambda: len(processor.lines) == 3, what="three Sending lines")
        code, lines, _ = run_script("-m", ["queuing_system.monitor", "--once"])
        processor.stop()
    assert lines[2].split() == ["push_notification_code", "0", "0", "1", "0", "3", "0"]
    assert lines[3] == "workers: 1"
    assert lines[4].split()[2:] == [
        str(processor.pid),
        "idle",
        "-",
        "on",
        "push_notification_code:high,",
        "push_notification_code,",
        "push_notification_code:low",
    ]


def test_monitor_refreshes_until_ctrl_c(redis_url) -> None:
    with ScriptProcess("-m", ["queuing_system.monitor", "--interval", "0.1"]) as monitor:
        monitor.wait_until(lambda: monitor.lines.count("workers: 0") >= 3, what="three snapshots")
        monitor.signal(signal.SIGINT)
        assert monitor.wait() == 0
    assert monitor.stderr == ""


def test_monitor_once_with_redis_down(closed_url) -> None:
    code, lines, stderr = run_script("-m", ["queuing_system.monitor", "--once"], env={"REDIS_URL": closed_url})
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Redis client not connected to the server: ")
    assert "Traceback" not in stderr


# -- 5. horizontal scaling -----------------------------------------------------------------------------


def test_three_processors_process_300_jobs_exactly_once(redis_url, rq_connection) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    processors = [ScriptProcess("6_job_processor.py", env=FAST) for _ in range(3)]
    try:
        eventually(lambda: Worker.count(connection=rq_connection) == 3)  # all three listening first
        with JobEvents(rq_connection, serializer=JSONSerializer) as events:
            jobs = [enqueue(queue, PROCESS_6, {"phoneNumber": f"{n:010d}", "message": "hi"}) for n in range(300)]
            events.wait_until_ended([job.id for job in jobs])
        for processor in processors:
            assert processor.stop() == 0
    finally:
        for processor in processors:
            processor.__exit__(None, None, None)
    sent = [line for processor in processors for line in processor.lines]
    assert len(sent) == 300
    assert sorted(sent) == sorted(f"Sending notification to {n:010d}, with message: hi" for n in range(300))
    assert all(len(processor.lines) > 0 for processor in processors)  # all three took a share
    assert queue.finished_job_registry.count == 300


# -- 6. graceful shutdown --------------------------------------------------------------------------------


@pytest.mark.parametrize(("attempts", "expected"), [(1, JobEvent.FAILED), (2, JobEvent.FAILED_ATTEMPT)])
def test_a_second_signal_hands_the_job_back(redis_url, rq_connection, r, attempts, expected) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    with JobEvents(rq_connection, serializer=JSONSerializer) as events:
        job = enqueue(queue, HOLD, 30, JobSettings(attempts=attempts, backoff=60))
        seen = []
        events.on(job.id, expected, seen.append)
        with ScriptProcess(HOLDING_PROCESSOR, env=FAST) as processor:
            processor.wait_until(lambda: r.llen(STARTED_KEY) == 1, what="the job to start")
            processor.signal(signal.SIGTERM)  # warm: would wait for the job…
            time.sleep(1.1)  # (RQ ignores a repeat within a second)
            processor.signal(signal.SIGTERM)  # …cold: hand it back now
            assert processor.wait(10) == 0
        events.pump(timeout=2)
    assert seen == ["Processor stopped before the job finished"]
    status = fetch(rq_connection, job.id).get_status()
    if attempts == 1:
        assert status == JobStatus.FAILED
        assert FailedJobRegistry(QUEUE_6, connection=rq_connection).get_job_ids() == [job.id]
    else:
        assert status == JobStatus.SCHEDULED  # its retry waits out the backoff, then runs again
    assert processor.stderr == ""


# -- 7. job data validation at the creator ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "args", "error"),
    [
        (
            "6_job_creator.py",
            ["--phone-number", ""],
            "Invalid job data: phoneNumber must be a non-empty string, got ''",
        ),
        ("6_job_creator.py", ["--message", "  "], "Invalid job data: message must be a non-empty string, got '  '"),
        (
            "6_job_creator.py",
            ["--attempts", "0"],
            "6_job_creator.py: error: argument --attempts: expected a whole number from 1 to 20, got '0'",
        ),
    ],
)
def test_the_creator_refuses_bad_data_before_enqueueing(redis_url, rq_connection, script, args, error) -> None:
    code, lines, stderr = run_script(script, args)
    assert (code, lines) == (2, [])
    assert stderr.strip().splitlines()[-1] == error
    assert job_queue(QUEUE_6, rq_connection).count == 0


def test_the_7_creator_refuses_a_bad_jobs_file(redis_url, rq_connection, tmp_path) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"phoneNumber": "4153518780", "message": "ok"}, {"phoneNumber": 4153518781}]))
    code, lines, stderr = run_script("7_job_creator.py", ["--jobs-file", str(jobs)])
    assert (code, lines) == (2, [])
    assert stderr.strip() == f"Cannot read jobs from {jobs}: job 2: Invalid job data: missing message"
    assert job_queue(QUEUE_7, rq_connection).count == 0


def test_monitor_redraws_in_place_on_a_terminal(redis_url) -> None:
    import os
    import pty
    import subprocess
    import sys

    from queuing_system.processes import ROOT

    leader, follower = pty.openpty()
    monitor = subprocess.Popen(
        [sys.executable, "-m", "queuing_system.monitor", "--interval", "0.2"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=subprocess.PIPE,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while seen.count(b"workers: 0") < 3 and time.monotonic() < deadline:
            seen += os.read(leader, 4096)
    finally:
        monitor.send_signal(signal.SIGINT)
        assert monitor.wait(10) == 0
        monitor.stderr.close()
        os.close(leader)
    snapshot_lines = seen.split(b"workers: 0")[0].count(b"\n") + 1
    assert f"\x1b[{snapshot_lines}F\x1b[J".encode() in seen  # back to the top of the last snapshot, erase below
