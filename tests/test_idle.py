"""An idle processor is quiet on Redis (at most about two commands a second, counted as MONITOR shows
them, those its Lua steps run included) and still wakes at once for a job on any of its queues.
Slow (`-m slow`): it watches a processor idle for twenty seconds."""

from __future__ import annotations

import os
import select
import signal
import socket
import time

import pytest
import redis
from rq.job import JobStatus

from queuing_system.embedded import EmbeddedRedis
from queuing_system.enqueue import enqueue_many
from queuing_system.events import JobEvents
from queuing_system.jobs import Priority, enqueue, job_queue, priority_queue_name, queue_connection
from queuing_system.keys import PROCESS_7, QUEUE_7
from queuing_system.processes import ScriptProcess
from tests.job_helpers import eventually, fetch

pytestmark = pytest.mark.slow


def commands_seen(port: int, seconds: float) -> list[bytes]:
    """Every command Redis runs for `seconds`, as MONITOR shows them (one line each)."""
    with socket.create_connection(("127.0.0.1", port)) as monitor:
        monitor.sendall(b"MONITOR\r\n")
        received = b""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if select.select([monitor], [], [], left)[0]:
                received += monitor.recv(65536)
    lines = received.split(b"\r\n")
    assert lines[0] == b"+OK"
    return [line for line in lines[1:] if line.startswith(b"+")]


def idle_workers(client: redis.Redis) -> int:
    return sum(1 for key in client.smembers("rq:workers") if client.hget(key, "state") in ("idle", b"idle"))


def blocked_waits(client: redis.Redis) -> int:
    return sum(1 for entry in client.client_list() if entry.get("cmd") == "blmove")


@pytest.mark.parametrize("script", ["7_job_processor.py", "6_job_processor.py"])
def test_an_idle_processor_is_quiet_and_wakes_at_once(own_redis: EmbeddedRedis, script: str) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    queue = QUEUE_7 if script.startswith("7") else "push_notification_code"
    with ScriptProcess(script, env={"REDIS_URL": own_redis.url}) as processor:
        # Idle: one worker (of two, for task 7) waits on the three queues, the others wait on the machine;
        # every worker has done its first step (and the sweeps a worker does when it starts).
        workers = 2 if script.startswith("7") else 1
        eventually(lambda: blocked_waits(client) == 3 and idle_workers(client) == workers, timeout=20)
        for window in range(2):
            seen = commands_seen(own_redis.port, 10.0)
            assert len(seen) <= 20, (window, b"\n".join(seen).decode(errors="replace"))
        assert blocked_waits(client) == 3  # still waiting, no more, no fewer

        connection = queue_connection(own_redis.url)
        for priority in (Priority.NORMAL, Priority.HIGH, Priority.LOW):
            started = time.monotonic()
            target = job_queue(priority_queue_name(queue, priority), connection)
            job = enqueue(
                target,
                PROCESS_7 if queue == QUEUE_7 else "6_job_processor.process_job",
                {
                    "phoneNumber": "4153518743",
                    "message": priority.value,
                },
            )
            eventually(lambda job=job: fetch(connection, job.id).get_status() == JobStatus.FINISHED, timeout=2.0)
            assert time.monotonic() - started < 1.0, priority  # woken at once, whichever queue it is on
        assert processor.stop() == 0
    assert processor.stderr == ""
    assert [line.rsplit(": ", 1)[-1] for line in processor.lines] == ["normal", "high", "low"]


def test_an_idle_processor_stops_on_a_signal_to_its_whole_group(own_redis: EmbeddedRedis) -> None:
    """Ctrl+C in a terminal (or `kill -TERM -<pgid>`) reaches the processor and every worker at once, and
    each worker again from the processor: every one stops, whatever wait it was in (a handler that set
    the stop event in the waiting thread itself could deadlock there)."""
    client = redis.Redis.from_url(own_redis.url)
    for _ in range(5):
        with ScriptProcess("7_job_processor.py", env={"REDIS_URL": own_redis.url}) as processor:
            eventually(lambda: blocked_waits(client) == 3, timeout=20)
            os.killpg(processor.pid, signal.SIGTERM)
            assert processor.wait(15) == 0
        assert processor.stderr == ""


def test_jobs_one_after_another_each_start_at_once(own_redis: EmbeddedRedis) -> None:
    """A job landing just as the waiter begins its waits (one on each queue) is taken at once: the waits
    not yet begun are cut short as soon as they begin (they once held the next job for two seconds)."""
    connection = queue_connection(own_redis.url)
    queue = job_queue(QUEUE_7, connection)
    slowest = 0.0
    with ScriptProcess("7_job_processor.py", env={"REDIS_URL": own_redis.url}) as processor:
        eventually(lambda: blocked_waits(connection) == 3, timeout=20)
        with JobEvents(connection, serializer=queue.serializer) as events:
            for n in range(300):
                started = time.monotonic()
                [job] = enqueue_many(queue, PROCESS_7, [{"phoneNumber": f"{n:010d}", "message": "hi"}])
                events.wait_until_ended([job.id])
                slowest = max(slowest, time.monotonic() - started)
        assert processor.stop() == 0
    assert len(processor.lines) == 300
    assert slowest < 1.0, slowest
    connection.close()
