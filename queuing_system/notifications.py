"""The notification job's data, checked the same way by creators and processors."""

from __future__ import annotations

import functools
import os
import re
import time
from typing import Any

from rq.job import Job

from queuing_system.console import clean, say
from queuing_system.events import JobEvent, JobEvents
from queuing_system.settings import env_float

FIELDS = ("phoneNumber", "message")
LONGEST = {"phoneNumber": 32, "message": 1000}  # characters: one line on a terminal, a few SMS at most
_SURROGATE = re.compile("[\ud800-\udfff]")


class JobDataError(ValueError):
    """A notification job's data is not `{"phoneNumber": str, "message": str}`."""


def _shown(value: Any) -> str:
    text = clean(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def validate_notification(data: Any) -> tuple[str, str]:
    """Return (phone number, message) or raise JobDataError saying what is wrong, in one line.

    Both are non-empty strings that print as one line: no control characters (a newline, a terminal
    escape) and nothing that is not text (a lone surrogate cannot be printed or sent)."""
    if not isinstance(data, dict):
        raise JobDataError(f"Invalid job data: expected an object with phoneNumber and message, got {_shown(data)}")
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise JobDataError(f"Invalid job data: missing {', '.join(missing)}")
    extra = sorted(map(str, set(data) - set(FIELDS)))
    if extra:
        raise JobDataError(f"Invalid job data: unexpected field {clean(', '.join(extra))[:60]}")
    for name in FIELDS:
        value = data[name]
        if not isinstance(value, str) or not value.strip():
            raise JobDataError(f"Invalid job data: {name} must be a non-empty string, got {_shown(value)}")
        if _SURROGATE.search(value):
            raise JobDataError(f"Invalid job data: {name} is not valid text (a lone surrogate), got {_shown(value)}")
        if clean(value) != value:
            raise JobDataError(f"Invalid job data: {name} must be one line of text, got {_shown(value)}")
        if len(value) > LONGEST[name]:
            raise JobDataError(f"Invalid job data: {name} is longer than {LONGEST[name]} characters")
    return data["phoneNumber"], data["message"]


def first_invalid(jobs: list[Any], numbered: bool = True) -> str | None:
    """The one-line complaint about the first invalid job of `jobs` ("job 3: …"), or None when all are valid."""
    for number, data in enumerate(jobs, start=1):
        try:
            validate_notification(data)
        except JobDataError as error:
            return f"job {number}: {error}" if numbered else str(error)
    return None


def follow_notification_job(events: JobEvents, job: Job) -> None:
    """Print task 7's line for each event of `job` as it arrives (Kue's job.on(...))."""
    # Event values come from processors (and anyone who can publish on the channel): printed cleaned.
    job_id = job.id
    events.follow(
        job,
        {
            JobEvent.PROGRESS: lambda percent: say(f"Notification job {job_id} {clean(percent)}% complete"),
            JobEvent.COMPLETED: lambda _: say(f"Notification job {job_id} completed"),
            JobEvent.FAILED_ATTEMPT: lambda error: say(f"Notification job {job_id} failed attempt: {clean(error)}"),
            JobEvent.FAILED: lambda error: say(f"Notification job {job_id} failed: {clean(error)}"),
        },
    )


def send_latency() -> float:
    """NOTIFICATION_SEND_MS, in seconds (a processor checks it at start: a bad value is a ConfigError)."""
    return _send_latency(os.environ.get("NOTIFICATION_SEND_MS"))


@functools.lru_cache(maxsize=4)  # read for every job: parsed and checked once per value
def _send_latency(raw: str | None) -> float:
    """`raw` (the variable's text) is the cache key; env_float reads and checks that same variable."""
    return env_float("NOTIFICATION_SEND_MS", 0.0, 0.0, 60_000.0) / 1000


def simulate_sending() -> None:
    """Pretend to talk to an SMS gateway for NOTIFICATION_SEND_MS milliseconds (default 0).

    The lessons' jobs finish in microseconds, which hides that a processor runs
    two at once; a little latency makes the overlap visible.
    """
    seconds = send_latency()
    if seconds > 0:
        time.sleep(seconds)
