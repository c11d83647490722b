"""The web dashboard: rq-dashboard set up for the lessons, with each job's progress and failure reason."""

from __future__ import annotations

import json
import signal
import socket

import pytest
from rq.job import JobStatus

from queuing_system import dashboard
from queuing_system.embedded import free_port
from queuing_system.http_requests import request_raw
from queuing_system.jobs import enqueue, job_queue, queues_by_priority
from queuing_system.keys import PROCESS_7, QUEUE_6, QUEUE_7, QUEUE_8
from queuing_system.processes import ScriptProcess
from tests.job_helpers import FAST, HOLDING_PROCESSOR, eventually, fetch
from tests.jobs_for_tests import HOLD, STARTED_KEY


@pytest.fixture
def jobs_in_every_state(redis_url, rq_connection, r):
    """A queued job (task 8's queue: nobody processes it), a started one (progress 50), a finished one and
    a failed one (task 7's processor), ids 1 to 4."""
    enqueue(job_queue(QUEUE_8, rq_connection), PROCESS_7, {"phoneNumber": "4153518743", "message": "later"})
    holding = ScriptProcess(HOLDING_PROCESSOR, env=FAST)
    started = enqueue(job_queue(QUEUE_6, rq_connection), HOLD, 30)
    holding.__enter__()
    eventually(lambda: r.llen(STARTED_KEY) == 1)
    rq_connection.hset(started.key, "meta", json.dumps({"progress": 50}))
    queue = job_queue(QUEUE_7, rq_connection)
    finished = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "hi"})
    failed = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518780", "message": "hi"})
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        eventually(
            lambda: (
                fetch(rq_connection, failed.id).get_status() == JobStatus.FAILED
                and fetch(rq_connection, finished.id).get_status() == JobStatus.FINISHED
            )
        )
        processor.stop()
    yield
    holding.kill()


def test_pages_and_data_show_every_state_with_progress(jobs_in_every_state, redis_url) -> None:
    client = dashboard.create_app(redis_url).test_client()
    overview = client.get("/")
    assert overview.status_code == 200 and b"<html" in overview.data.lower()
    queues = {q["name"]: q for q in client.get("/0/data/queues.json").get_json()["queues"]}
    lesson_queues = {name for base in (QUEUE_6, QUEUE_7, QUEUE_8, "reserve_seat") for name in queues_by_priority(base)}
    assert set(queues) == lesson_queues  # every lesson queue and its priority siblings, used or not
    counts = (
        queues[QUEUE_8]["count"],
        queues[QUEUE_6]["started_job_registry_count"],
        queues[QUEUE_7]["finished_job_registry_count"],
        queues[QUEUE_7]["failed_job_registry_count"],
    )
    assert counts == (1, 1, 1, 1)

    def jobs(queue: str, registry: str) -> list[dict]:
        return client.get(f"/0/data/jobs/{queue}/{registry}/8/asc/1.json").get_json()["jobs"]

    [queued] = jobs(QUEUE_8, "queued")
    [started] = jobs(QUEUE_6, "started")
    [finished] = jobs(QUEUE_7, "finished")
    [failed] = jobs(QUEUE_7, "failed")
    assert (queued["status"], queued["progress"], queued["error"]) == ("queued", None, None)
    assert (started["status"], started["progress"], started["error"]) == ("started", 50, None)
    assert (finished["status"], finished["progress"]) == ("finished", 100)
    assert (failed["status"], failed["progress"], failed["error"]) == (
        "failed",
        0,
        "Phone number 4153518780 is blacklisted",
    )

    detail = client.get(f"/0/data/job/{failed['id']}.json").get_json()
    metadata = json.loads(detail["metadata"])
    assert len(metadata.pop("creation_token")) == 32  # its creator run's (queuing_system/creation_lua.py)
    assert metadata == {"progress": 0, "error": "Phone number 4153518780 is blacklisted"}
    page = client.get(f"/0/view/jobs/{QUEUE_6}/started/8/asc/1")
    assert page.status_code == 200 and b"progress-bar" in page.data  # our bar, in rq-dashboard's page
    assert b'id="redis-away"' in page.data  # and our banner for when Redis goes away
    workers = client.get("/0/data/workers.json").get_json()["workers"]
    assert [worker["queues"] for worker in workers] == [[f"{QUEUE_6}:high", QUEUE_6, f"{QUEUE_6}:low"]]


def test_redis_away_is_said_and_the_dashboard_comes_back(own_redis) -> None:
    client = dashboard.create_app(own_redis.url).test_client()
    assert client.get("/0/data/queues.json").status_code == 200
    own_redis.kill()
    data = client.get("/0/data/queues.json")
    assert (data.status_code, data.get_json()) == (503, {"status": "Redis unavailable, try again shortly"})
    page = client.get("/")
    assert page.status_code == 503 and b"Redis is not reachable" in page.data and b"refresh" in page.data
    own_redis.start()
    assert client.get("/0/data/queues.json").status_code == 200


def test_it_serves_this_machine_only_and_stops_on_ctrl_c(redis_url) -> None:
    port = free_port()
    with ScriptProcess("-m", ["queuing_system.dashboard", "--port", str(port)]) as server:
        server.wait_for_line(f"Dashboard of {redis_url} at http://127.0.0.1:{port}/ (Ctrl+C stops it)")
        status, content_type, body = request_raw(port, "/")
        assert (status, content_type.split(";")[0]) == (200, "text/html") and "rq-dashboard" in body.lower()
        with pytest.raises(ConnectionRefusedError):  # not on another address of this machine
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    assert server.stderr == ""


def test_a_taken_port_is_one_line_and_exit_1(redis_url) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with ScriptProcess("-m", ["queuing_system.dashboard", "--port", str(port)]) as server:
            assert server.wait(20) == 1
    assert server.lines == []
    assert server.stderr.strip() == f"Cannot listen on 127.0.0.1:{port}: Address already in use"
