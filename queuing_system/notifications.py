"""The notification job's data, checked the same way by creators and processors."""

from __future__ import annotations

import os
import time
from typing import Any

from queuing_system.console import say
from queuing_system.events import JobEvent, JobEvents

FIELDS = ("phoneNumber", "message")


class JobDataError(ValueError):
    """A notification job's data is not `{"phoneNumber": str, "message": str}`."""


def validate_notification(data: Any) -> tuple[str, str]:
    """Return (phone number, message) or raise JobDataError saying what is wrong, in one line."""
    if not isinstance(data, dict):
        raise JobDataError(f"Invalid job data: expected an object with phoneNumber and message, got {data!r}")
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise JobDataError(f"Invalid job data: missing {', '.join(missing)}")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise JobDataError(f"Invalid job data: unexpected field {', '.join(map(str, extra))}")
    for name in FIELDS:
        if not isinstance(data[name], str) or not data[name].strip():
            raise JobDataError(f"Invalid job data: {name} must be a non-empty string, got {data[name]!r}")
    return data["phoneNumber"], data["message"]


def first_invalid(jobs: list[Any]) -> str | None:
    """The one-line complaint about the first invalid job of `jobs`, or None when all are valid."""
    for number, data in enumerate(jobs, start=1):
        try:
            validate_notification(data)
        except JobDataError as error:
            return f"job {number}: {error}" if len(jobs) > 1 else str(error)
    return None


def follow_notification_job(events: JobEvents, job_id: str) -> None:
    """Print task 7's line for each event of job `job_id` as it arrives (Kue's job.on(...))."""
    events.on(job_id, JobEvent.PROGRESS, lambda percent: say(f"Notification job {job_id} {percent}% complete"))
    events.on(job_id, JobEvent.COMPLETED, lambda _: say(f"Notification job {job_id} completed"))
    events.on(job_id, JobEvent.FAILED_ATTEMPT, lambda error: say(f"Notification job {job_id} failed attempt: {error}"))
    events.on(job_id, JobEvent.FAILED, lambda error: say(f"Notification job {job_id} failed: {error}"))


def simulate_sending() -> None:
    """Pretend to talk to an SMS gateway for NOTIFICATION_SEND_MS milliseconds (default 0).

    The lessons' jobs finish in microseconds, which hides that a processor runs
    two at once; a little latency makes the overlap visible.
    """
    milliseconds = float(os.environ.get("NOTIFICATION_SEND_MS") or 0)
    if milliseconds > 0:
        time.sleep(milliseconds / 1000)
