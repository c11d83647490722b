"""Kue-style job events over one Redis pub/sub channel.

Kue tells the process that created a job how it goes (progress, complete,
failed); RQ has no such channel, so this module is it. The worker side calls
`report_progress()` from a job and registers `on_success`/`on_failure` as the
job's RQ callbacks. The creator side opens `JobEvents` *before* it enqueues, so
no event can be missed, registers handlers per job id, and pumps.

Message on the channel: {"id": "<job id>", "event": "progress|completed|failed", "value": ...}
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from queuing_system.console import REDIS_DOWN, backoff, not_connected
from queuing_system.keys import JOB_EVENTS_CHANNEL


class JobEvent(str, Enum):
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED_ATTEMPT = "failed attempt"  # failed, but will be tried again
    FAILED = "failed"


ENDED = (JobEvent.COMPLETED, JobEvent.FAILED)
ABANDONED_MESSAGE = "Job abandoned: its processor stopped in the middle of it"


def publish_event(connection: redis.Redis, job_id: str, event: JobEvent, value: Any = None) -> None:
    connection.publish(JOB_EVENTS_CHANNEL, json.dumps({"id": job_id, "event": event.value, "value": value}))


# -- worker side ---------------------------------------------------------------------------


def report_progress(job: Job, percent: int) -> None:
    """Kue's `job.progress(n, 100)`: remember it on the job (for late readers) and announce it."""
    job.meta["progress"] = percent
    job.save_meta()
    publish_event(job.connection, job.id, JobEvent.PROGRESS, percent)


def on_success(job: Job, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """RQ success callback: Kue's `complete` event."""
    publish_event(connection, job.id, JobEvent.COMPLETED)


def on_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, *args: Any) -> None:
    """RQ failure callback, run on every failed attempt (and for jobs abandoned by a dead worker):
    Kue's `failed attempt` while attempts remain, then `failed`."""
    message = str(exc_value) or (ABANDONED_MESSAGE if exc_type.__name__ == "AbandonedJobError" else exc_type.__name__)
    job.meta["error"] = message  # for a creator that reconnects and missed the event
    job.save_meta()
    event = JobEvent.FAILED_ATTEMPT if job.should_retry else JobEvent.FAILED
    publish_event(connection, job.id, event, message)


# -- creator side --------------------------------------------------------------------------

Handler = Callable[[Any], None]


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
        """Ask RQ how jobs ended whose end event we may have missed (after a reconnect)."""
        for job_id in job_ids:
            if job_id in self._ended:
                continue
            try:
                job = Job.fetch(job_id, connection=self._connection, serializer=self._serializer)
            except NoSuchJobError:
                # Gone (a Redis restarted without persistence): waiting longer would be forever.
                self.dispatch(job_id, JobEvent.FAILED, f"Job {job_id} no longer exists in Redis")
                continue
            status = job.get_status(refresh=False)
            if status == JobStatus.FINISHED:
                self.dispatch(job_id, JobEvent.COMPLETED)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                self.dispatch(job_id, JobEvent.FAILED, job.meta.get("error", f"Job {status.value}"))

    def wait_until_ended(self, job_ids: Iterable[str], quiet_check_every: float = 5.0) -> None:
        """Dispatch until every job in `job_ids` has ended; ride out Redis going away."""
        waiting = [str(job_id) for job_id in job_ids]
        quiet_since = time.monotonic()
        while not all(job_id in self._ended for job_id in waiting):
            try:
                if self.pump(timeout=1.0):
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= quiet_check_every:
                    # A quiet channel: make sure no end was missed (belt and braces).
                    self.catch_up(waiting)
                    quiet_since = time.monotonic()
            except REDIS_DOWN as error:
                not_connected(error)
                self._reconnect(waiting)

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
