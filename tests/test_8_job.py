"""The port of 8-job.test.js. Kue's test mode = a queue on fakeredis: jobs are stored, never processed.

Runs alone (`pytest tests/test_8_job.py`) with no Redis server anywhere; `pytest tests/test_8_job.py -s`
also shows the lines the function prints (Notification job created: 1, …), as mocha did.
"""

import json
import sys
from importlib import import_module

import fakeredis
import pytest
from rq.serializers import JSONSerializer

from queuing_system.events import JobEvent, JobEvents, publish_event
from queuing_system.jobs import job_queue
from queuing_system.keys import JOB_EVENTS_CHANNEL

create_push_notifications_jobs = import_module("8_job").create_push_notifications_jobs

JOBS = [
    {"phoneNumber": "44556677889", "message": "Use the code 1982 to verify your account"},
    {"phoneNumber": "98877665544", "message": "Use the code 1738 to verify your account"},
]


@pytest.fixture
def connection():
    server = fakeredis.FakeServer()  # a fresh, private "Redis" per test
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


@pytest.fixture
def queue(connection):
    return job_queue("push_notification_code_3", connection)


@pytest.fixture
def events(connection):
    with JobEvents(connection, serializer=JSONSerializer) as listener:
        yield listener


def printed(capsys) -> list[str]:
    """The lines printed since the last call; shown again (as mocha showed them) when run with `pytest -s`."""
    out = capsys.readouterr().out
    sys.__stdout__.write(out)  # the real stdout: captured by pytest as usual, on the terminal with -s
    sys.__stdout__.flush()
    return out.splitlines()


@pytest.mark.parametrize("not_a_list", [{"phoneNumber": "1"}, "jobs", None, 42, (JOBS[0],), iter(JOBS)])
def test_display_a_error_message_if_jobs_is_not_an_array(not_a_list, queue, capsys) -> None:
    with pytest.raises(TypeError, match=r"^Jobs is not an array$"):
        create_push_notifications_jobs(not_a_list, queue)
    assert queue.count == 0
    assert printed(capsys) == []


def test_create_two_new_jobs_to_the_queue(queue, capsys) -> None:
    jobs = create_push_notifications_jobs(JOBS, queue)
    assert [job.id for job in jobs] == ["1", "2"]
    assert queue.job_ids == ["1", "2"]
    assert [job.origin for job in queue.jobs] == ["push_notification_code_3"] * 2
    assert [job.args[0] for job in queue.jobs] == JOBS  # the data, exactly
    assert printed(capsys) == ["Notification job created: 1", "Notification job created: 2"]


def test_an_empty_list_creates_nothing(queue, capsys) -> None:
    assert create_push_notifications_jobs([], queue) == []
    assert queue.count == 0
    assert printed(capsys) == []


@pytest.mark.parametrize(
    ("event", "value", "line"),
    [
        (JobEvent.PROGRESS, 25, "Notification job 1 25% complete"),
        (JobEvent.FAILED, "Failed to send", "Notification job 1 failed: Failed to send"),
        (JobEvent.COMPLETED, None, "Notification job 1 completed"),
    ],
)
def test_job_events_print_the_curriculum_lines(event, value, line, connection, queue, events, capsys) -> None:
    create_push_notifications_jobs(JOBS, queue, events)
    assert printed(capsys) == ["Notification job created: 1", "Notification job created: 2"]
    publish_event(connection, "1", event, value)
    assert events.pump(timeout=1.0)
    assert printed(capsys) == [line]


def test_events_of_other_jobs_print_nothing(connection, queue, events, capsys) -> None:
    create_push_notifications_jobs(JOBS[:1], queue, events)
    capsys.readouterr()
    publish_event(connection, "99", JobEvent.COMPLETED)
    events.pump(timeout=0.2)
    assert printed(capsys) == []


def test_events_of_another_creators_job_with_the_same_id_print_nothing(connection, queue, events, capsys) -> None:
    """After data loss two creators may both have a job 1: the creation token tells them apart."""
    [job] = create_push_notifications_jobs(JOBS[:1], queue, events)
    capsys.readouterr()
    connection.publish(
        JOB_EVENTS_CHANNEL, json.dumps({"id": "1", "event": "completed", "value": None, "token": "other"})
    )
    events.pump(timeout=0.2)
    assert printed(capsys) == []
    publish_event(connection, job, JobEvent.COMPLETED)  # this creator's own job: its token
    assert events.pump(timeout=1.0)
    assert printed(capsys) == ["Notification job 1 completed"]
