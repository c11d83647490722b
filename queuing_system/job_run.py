"""A job in a processor's hands: what the processor offers to run, how a job is read, and what
one run of it leaves to settle (`JobRun`)."""

from __future__ import annotations

import base64
import functools
import json
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import parse_timeout, utcparse

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
        """RQ's restore, to the same attributes, faster: the timestamps parsed by `fromisoformat` (RQ's
        strptime took a fifth of a worker's time) and, for a hash of the fields jobs usually hold, one
        pass over them (`_restore_usual`); any other hash goes through RQ's own code."""
        if b"data" in raw_data and _USUAL_FIELDS.issuperset(raw_data):
            self._restore_usual(raw_data)
            return
        fields = dict(raw_data)
        stamps = {name: fields.pop(name, None) for name in _TIMESTAMPS}
        super().restore(fields)
        for name, value in stamps.items():
            if value:
                setattr(self, name.decode(), _timestamp(value))

    def _restore_usual(self, obj: Mapping[bytes, bytes]) -> None:
        """RQ 3.0's `Job.restore`, line for line, for the fields in `_USUAL_FIELDS` (bytes values, as a
        client without decoding reads them). tests/test_processor.py compares the two on jobs of
        every shape our creators and RQ write."""
        get = obj.get
        data = obj[b"data"]
        try:
            self.data = zlib.decompress(data)
        except zlib.error:
            self.data = data
        self.created_at = _timestamp(v) if (v := get(b"created_at")) else now()
        self.origin = v.decode() if (v := get(b"origin")) else ""
        self.worker_name = v.decode() if (v := get(b"worker_name")) else None
        self.description = v.decode() if (v := get(b"description")) else None
        self.enqueued_at = _timestamp(v) if (v := get(b"enqueued_at")) else None
        self.started_at = _timestamp(v) if (v := get(b"started_at")) else None
        self.ended_at = _timestamp(v) if (v := get(b"ended_at")) else None
        self.last_heartbeat = _timestamp(v) if (v := get(b"last_heartbeat")) else None
        self.group_id = v.decode() if (v := get(b"group_id")) else None
        self.timeout = parse_timeout(v) if (v := get(b"timeout")) else None  # type: ignore[arg-type]
        self.result_ttl = int(v) if (v := get(b"result_ttl")) else None
        self.failure_ttl = int(v) if (v := get(b"failure_ttl")) else None
        self._status = (_STATUSES.get(v) or JobStatus(v.decode())) if (v := get(b"status")) else JobStatus.CREATED
        if v := get(b"success_callback_name"):
            self._success_callback_name = v.decode()
        if b"success_callback_timeout" in obj:
            self._success_callback_timeout = int(obj[b"success_callback_timeout"])
        if v := get(b"failure_callback_name"):
            self._failure_callback_name = v.decode()
        if b"failure_callback_timeout" in obj:
            self._failure_callback_timeout = int(obj[b"failure_callback_timeout"])
        if v := get(b"stopped_callback_name"):
            self._stopped_callback_name = v.decode()
        if b"stopped_callback_timeout" in obj:
            self._stopped_callback_timeout = int(obj[b"stopped_callback_timeout"])
        dep_ids, dep_id = get(b"dependency_ids"), get(b"dependency_id")
        self._dependency_ids = json.loads(dep_ids.decode()) if dep_ids else [dep_id.decode()] if dep_id else []
        self.allow_dependency_failures = bool(int(v)) if (v := get(b"allow_dependency_failures")) else None
        self.enqueue_at_front = bool(int(obj[b"enqueue_at_front"])) if b"enqueue_at_front" in obj else None
        self.ttl = int(v) if (v := get(b"ttl")) else None
        self._unreadable_meta = None
        try:
            self.meta = self.serializer.loads(v) if (v := get(b"meta")) else {}
        except Exception:  # depends on the serializer
            self.meta = {"unserialized": get(b"meta", {})}
            self._unreadable_meta = obj[b"meta"]
        self.number_of_retries = int(v) if (v := get(b"number_of_retries")) else None
        self.retries_left = int(v) if (v := get(b"retries_left")) else None
        if v := get(b"retry_intervals"):
            self.retry_intervals = json.loads(v.decode())
        self.enqueue_at_front_on_retry = bool(int(v)) if (v := get(b"enqueue_at_front_on_retry")) else False
        self.repeats_left = int(v) if (v := get(b"repeats_left")) else None
        if v := get(b"repeat_intervals"):
            self.repeat_intervals = json.loads(v.decode())
        self.rate_limit_key = v.decode() if (v := get(b"rate_limit_key")) else None
        self.rate_limit_concurrency = int(v) if (v := get(b"rate_limit_concurrency")) else None


_TIMESTAMPS = (b"created_at", b"enqueued_at", b"started_at", b"ended_at", b"last_heartbeat")
# The fields `_restore_usual` reads as RQ does; a hash with any other (a result, webhooks, an exception
# kept from RQ 1.x, a field of a later RQ) is read by RQ's own restore.
_USUAL_NAMES = (
    "data created_at origin worker_name description enqueued_at started_at ended_at last_heartbeat group_id "
    "timeout result_ttl failure_ttl status success_callback_name success_callback_timeout "
    "failure_callback_name failure_callback_timeout stopped_callback_name stopped_callback_timeout "
    "dependency_ids dependency_id allow_dependency_failures enqueue_at_front ttl meta number_of_retries "
    "retries_left retry_intervals enqueue_at_front_on_retry repeats_left repeat_intervals rate_limit_key "
    "rate_limit_concurrency"
)
_USUAL_FIELDS = frozenset(name.encode() for name in _USUAL_NAMES.split())
_STATUSES = {status.value.encode(): status for status in JobStatus}


@functools.lru_cache(maxsize=16)  # a job's stamps come in pairs (created and enqueued, started and heartbeat)
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
    # A shallow copy (RQ's Job() checks its serializer against a slow Protocol; copy.copy goes the long
    # way round, through __reduce_ex__)
    job = object.__new__(type(pristine))
    job.__dict__.update(pristine.__dict__)
    job.id, job.webhooks = job_id, []
    reason = bad_seconds_field(fields)
    try:
        if reason is None:
            job.restore(fields)
            reason = bad_meta(job)
    except Exception as error:  # a hash written by someone else, in a form RQ cannot read
        reason = f"{type(error).__name__}: {error}"
    return job, reason
