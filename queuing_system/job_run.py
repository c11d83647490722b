"""A job in a processor's hands: what the processor offers to run, how a job is read, and what
one run of it leaves to settle (`JobRun`)."""

from __future__ import annotations

import base64
import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import utcparse

from queuing_system import events
from queuing_system.bad_data import bad_meta, bad_seconds_field

log = logging.getLogger("rq.worker")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

# The job-event callbacks every job carries, which the settle step performs itself.
EVENT_CALLBACKS: dict[str, Callable[..., Any]] = {
    "queuing_system.events.on_success": events.on_success,
    "queuing_system.events.on_failure": events.on_failure,
}


class JobRefusedError(Exception):
    """A job names a function (or callback) this processor does not offer."""


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class JobRun:
    """One run of a job (one RQ execution) that is not settled yet."""

    job: Job
    execution_id: str
    started_at: datetime
    ended_at: datetime | None = None
    return_value: Any = None
    exc_info: ExcInfo | None = None
    recorded: bool = False  # its end is stored (RQ did it); only the release and the announcement remain
    event: str = ""  # the job event to publish with the release
    announce: Callable[[], None] | None = None  # an offered callback, called once the end is stored
    unsettleable: str = ""  # why settling it failed other than through Redis: it is failed as it stands

    @property
    def execution_ref(self) -> str:
        """How RQ names this run in its registries: "<job id>:<execution id>" (its 'composite key')."""
        return f"{self.job.id}:{self.execution_id}"


@dataclass(frozen=True)
class Offer:
    """What a processor runs: the function names jobs may carry, and the callback names (by default
    the job-event ones, which settling performs itself). Nothing a job names is ever imported."""

    functions: Mapping[str, Callable[..., Any]]
    callbacks: Mapping[str, Callable[..., Any]] = field(default_factory=lambda: dict(EVENT_CALLBACKS))

    def function_for(self, job: Job) -> Callable[..., Any]:
        """What runs the job, if offered; else JobRefusedError with the reason."""
        try:
            name = job.func_name
        except DeserializationError:
            raise JobRefusedError(
                "Job data cannot be read as JSON (enqueued with RQ's default serializer, pickle?)"
            ) from None
        function = self.functions.get(name) if name is not None else None
        if function is None:
            raise JobRefusedError(f"Job function {name!r} is not offered by this processor")
        for callback in (job._success_callback_name, job._failure_callback_name):
            if callback and callback not in self.callbacks:
                raise JobRefusedError(f"Job callback {callback!r} is not offered by this processor")
        return function

    def custom_callback(self, name: str | None) -> Callable[..., Any] | None:
        """An offered callback other than the job-event ones (which settling performs itself)."""
        if not name or name in EVENT_CALLBACKS:
            return None
        return self.callbacks.get(name)

    def announcer(self, run: JobRun) -> Callable[[], None] | None:
        """What announces the run's end, when the job names a custom callback (else the step publishes)."""
        job = run.job
        if run.exc_info is None:
            on_success = self.custom_callback(job._success_callback_name)
            if on_success is None:
                return None
            return lambda: quietly(on_success, job, job.connection, run.return_value)
        on_failure = self.custom_callback(job._failure_callback_name)
        if on_failure is None:
            return None
        exc_type, exc_value, tb = run.exc_info
        return lambda: quietly(on_failure, job, job.connection, exc_type, exc_value, tb)


class OfferedJob(Job):
    """A job whose function comes from its processor's offer (RQ's `Job.func` imports any dotted name),
    read from Redis faster than RQ reads it (the same values: tests/test_processor.py compares them)."""

    offered_function: Callable[..., Any] | None = None

    @property
    def func(self) -> Callable[..., Any] | None:
        return self.offered_function

    def restore(self, raw_data: Mapping[bytes, bytes]) -> None:
        """RQ's restore, with the five timestamps parsed by `fromisoformat` (RQ's strptime took a
        fifth of a worker's time)."""
        fields = dict(raw_data)
        stamps = {name: fields.pop(name, None) for name in _TIMESTAMPS}
        super().restore(fields)
        for name, value in stamps.items():
            if value:
                setattr(self, name.decode(), _timestamp(value))


_TIMESTAMPS = (b"created_at", b"enqueued_at", b"started_at", b"ended_at", b"last_heartbeat")


def _timestamp(value: bytes) -> datetime:
    """RQ's utcparse ('%Y-%m-%dT%H:%M:%S.%fZ', or without the fraction), in C."""
    text = value.decode()
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return utcparse(text)


def encoded(value: Any) -> str:
    """A return value as RQ's Result stores it: base64 of the serialized value ('' for None)."""
    if value is None:
        return ""
    try:
        data = JSONSerializer.dumps(value)
    except Exception:  # RQ stores this placeholder too
        data = JSONSerializer.dumps("Unserializable return value")
    return base64.b64encode(data).decode()


def quietly(callback: Callable[..., Any], *args: Any) -> None:
    """Run an announcing callback; its failure is logged (with --verbose), the job's end stands."""
    try:
        callback(*args)
    except Exception:
        log.exception("callback %s failed", getattr(callback, "__name__", callback))


def restored(pristine: OfferedJob, job_id: str, fields: Mapping[bytes, bytes]) -> tuple[OfferedJob, str | None]:
    """The started job read from its stored `fields`, and why it cannot run (None: it can): a field
    someone else wrote that is not a whole number of seconds, a meta that is not a JSON object, or
    a hash in a form RQ cannot read."""
    job = copy.copy(pristine)  # RQ's Job() checks its serializer against a slow Protocol
    job.id, job.webhooks = job_id, []
    reason = bad_seconds_field(fields)
    try:
        if reason is None:
            job.restore(fields)
            reason = bad_meta(job)
    except Exception as error:  # a hash written by someone else, in a form RQ cannot read
        reason = f"{type(error).__name__}: {error}"
    return job, reason
