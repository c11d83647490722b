"""Kue-style job events over one Redis pub/sub channel.

Kue tells the process that created a job how it goes (progress, complete,
failed); RQ has no such channel, so this module is it. A job reports progress
with `report_progress()`; its end is announced only once it is stored (the
processor publishes `completed` in the very Lua step that records the success,
and `failed` right after RQ has recorded the failure). `on_success`/`on_failure`
are also set as the jobs' RQ callbacks, so RQ's own workers and sweeps announce
too. The creator side opens `JobEvents` *before* it enqueues, so no event can
be missed, registers handlers per job id, and pumps.

Message on the channel: {"id": "<job id>", "event": "progress|completed|failed attempt|failed", "value": ...}
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import redis
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.serializers import resolve_serializer
from rq.utils import as_text

from queuing_system.console import REDIS_DOWN, backoff, not_connected
from queuing_system.keys import JOB_EVENTS_CHANNEL


class JobEvent(str, Enum):
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED_ATTEMPT = "failed attempt"  # failed, but will be tried again
    FAILED = "failed"


ENDED = (JobEvent.COMPLETED, JobEvent.FAILED)
ABANDONED_MESSAGE = "Job abandoned: its processor stopped in the middle of it"


def event_message(job_id: str, event: JobEvent, value: Any = None) -> str:
    return json.dumps({"id": job_id, "event": event.value, "value": value})


def publish_event(connection: redis.Redis, job_id: str, event: JobEvent, value: Any = None) -> None:
    connection.publish(JOB_EVENTS_CHANNEL, event_message(job_id, event, value))


def failure_message(exc_type: type[BaseException] | None, exc_value: BaseException | None) -> str:
    """The one-line reason a job failed: the exception's text, else its kind."""
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        return str(exc_value or "") or ABANDONED_MESSAGE
    text = str(exc_value) if exc_value is not None else ""
    return text or (exc_type.__name__ if exc_type is not None else "unknown error")


def failed_event(job: Job) -> JobEvent:
    """`failed attempt` if the job will run again, else `failed`.

    Read from the job's status once the failure is stored (RQ has then already
    spent the attempt: `retries_left` is one lower); before that (RQ's own
    sweep calls the callback first), from the attempts it has left.
    """
    status = job.get_status(refresh=False)
    if status in (JobStatus.SCHEDULED, JobStatus.QUEUED):
        return JobEvent.FAILED_ATTEMPT
    if status == JobStatus.STARTED and job.should_retry:
        return JobEvent.FAILED_ATTEMPT
    return JobEvent.FAILED


# -- worker side ---------------------------------------------------------------------------

# Set by a processor around each job it runs: sends progress without waiting for Redis's reply
# (on the connection the processor settles jobs on, so progress always arrives before the end).
ProgressSink = Callable[[Job, int], None]
progress_sink: contextvars.ContextVar[ProgressSink | None] = contextvars.ContextVar("progress_sink", default=None)


def report_progress(job: Job, percent: int) -> None:
    """Kue's `job.progress(n, 100)`: remember it on the job (for late readers) and announce it."""
    job.meta["progress"] = percent
    sink = progress_sink.get()
    if sink is not None:
        sink(job, percent)
        return
    with job.connection.pipeline(transaction=False) as pipeline:
        pipeline.hset(job.key, "meta", job.serializer.dumps(job.meta))
        pipeline.publish(JOB_EVENTS_CHANNEL, event_message(job.id, JobEvent.PROGRESS, percent))
        pipeline.execute()


def on_success(job: Job, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """RQ success callback: Kue's `complete` event."""
    publish_event(connection, job.id, JobEvent.COMPLETED)


def on_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, *args: Any) -> None:
    """RQ failure callback, run on every failed attempt (and for jobs abandoned by a dead worker):
    Kue's `failed attempt` while attempts remain, then `failed`."""
    message = failure_message(exc_type, exc_value)
    job.meta["error"] = message  # for a creator that reconnects and missed the event
    job.save_meta()
    publish_event(connection, job.id, failed_event(job), message)


# -- creator side --------------------------------------------------------------------------

Handler = Callable[[Any], None]


def _numeric_first(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


class JobEvents:
    """The creating process's view of its jobs' events.

    `with JobEvents(connection) as events:` subscribes at once; register
    handlers with `events.on(job_id, JobEvent.X, handler)`, then
    `events.wait_until_ended(ids)` dispatches until every job has ended.
    If the connection drops, it reconnects and asks RQ how the jobs it missed
    ended, so it never waits forever for an event that was lost.
    """

    def __init__(self, connection: redis.Redis, *, serializer: Any = None) -> None:
        self._connection = connection
        self._serializer = serializer
        self._handlers: dict[tuple[str, JobEvent], list[Handler]] = {}
        self._ended: set[str] = set()
        self._newly_ended: list[str] = []  # drained by wait_until_ended: no rescans of thousands of ids
        self._pubsub = self._subscribe()

    def _subscribe(self, timeout: float = 10.0) -> redis.client.PubSub:
        """Subscribe and wait for Redis to confirm it: from then on no event can be missed."""
        pubsub = self._connection.pubsub()
        pubsub.subscribe(JOB_EVENTS_CHANNEL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "subscribe":
                return pubsub
        pubsub.close()
        raise redis.exceptions.TimeoutError("no confirmation of the job-event subscription")

    def on(self, job_id: str, event: JobEvent, handler: Handler) -> None:
        self._handlers.setdefault((job_id, event), []).append(handler)

    def dispatch(self, job_id: str, event: JobEvent, value: Any = None) -> None:
        if job_id in self._ended:
            return  # an end state is final; a repeat (e.g. from a catch-up) is ignored
        if event in ENDED:
            self._ended.add(job_id)
            self._newly_ended.append(job_id)
        for handler in self._handlers.get((job_id, event), []):
            handler(value)

    def pump(self, timeout: float = 1.0) -> bool:
        """Wait up to `timeout` seconds for events; dispatch all that came. False if none did."""
        deadline = time.monotonic() + timeout
        dispatched = False
        while True:
            wait = 0.0 if dispatched else max(0.0, deadline - time.monotonic())
            message = self._pubsub.get_message(timeout=wait)
            if message is None:
                if dispatched or time.monotonic() >= deadline:
                    return dispatched
                continue
            if message["type"] == "message":
                self._handle(message["data"])
                dispatched = True

    def _handle(self, raw: bytes | str) -> None:
        try:
            payload = json.loads(raw)
            job_id, event, value = str(payload["id"]), JobEvent(payload["event"]), payload.get("value")
        except (ValueError, KeyError, TypeError):
            return  # not one of ours: someone else published on the channel
        self.dispatch(job_id, event, value)

    def catch_up(self, job_ids: Iterable[str]) -> None:
        """Ask Redis how jobs ended whose end event we may have missed (after a reconnect)."""
        serializer = resolve_serializer(self._serializer)
        missing = [job_id for job_id in job_ids if job_id not in self._ended]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            with self._connection.pipeline(transaction=False) as pipeline:
                for job_id in chunk:
                    pipeline.hmget(Job.key_for(job_id), "status", "meta")
                rows = pipeline.execute()
            for job_id, (status, meta) in zip(chunk, rows, strict=True):
                if status is None:
                    # Gone (a Redis restarted without persistence): waiting longer would be forever.
                    self.dispatch(job_id, JobEvent.FAILED, f"Job {job_id} no longer exists in Redis")
                elif as_text(status) == JobStatus.FINISHED.value:
                    self.dispatch(job_id, JobEvent.COMPLETED)
                elif as_text(status) in (JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value):
                    try:
                        error = serializer.loads(meta).get("error") if meta else None
                    except Exception:  # someone else's meta: fall back to the status
                        error = None
                    self.dispatch(job_id, JobEvent.FAILED, error or f"Job {as_text(status)}")

    def wait_until_ended(self, job_ids: Iterable[str], quiet_check_every: float = 5.0) -> None:
        """Dispatch until every job in `job_ids` has ended; ride out Redis going away."""
        waiting = {str(job_id) for job_id in job_ids} - self._ended
        quiet_since = time.monotonic()
        while waiting:
            try:
                if self.pump(timeout=1.0):
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= quiet_check_every:
                    # A quiet channel: make sure no end was missed (belt and braces).
                    self.catch_up(sorted(waiting, key=_numeric_first))
                    quiet_since = time.monotonic()
            except REDIS_DOWN as error:
                not_connected(error)
                self._reconnect(sorted(waiting, key=_numeric_first))
            waiting.difference_update(self._newly_ended)
            self._newly_ended.clear()

    def _reconnect(self, waiting: list[str]) -> None:
        """Resubscribe, saying so on each failed attempt, then catch up on what was missed."""
        self._pubsub.close()
        for delay in backoff():
            time.sleep(delay)
            try:
                self._pubsub = self._subscribe()
                self.catch_up(waiting)
                return
            except REDIS_DOWN as error:
                not_connected(error)

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> JobEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
