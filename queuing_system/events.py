"""Kue-style job events over one Redis pub/sub channel.

Kue tells the process that created a job how it goes (progress, complete,
failed); RQ has no such channel, so this module is it. A job reports progress
with `report_progress()`; its end is announced only once it is stored (the
processor publishes `completed` in the very Lua step that records the success,
and `failed` right after RQ has recorded the failure). `on_success`/`on_failure`
are also set as the jobs' RQ callbacks, so RQ's own workers and sweeps announce
too. The creator side opens `JobEvents` *before* it enqueues, so no event can
be missed, registers handlers per job, and pumps.

Message on the channel:
    {"id": "<job id>", "event": "progress|completed|failed attempt|failed", "value": ..., "token": "<creation token>"}
Ids are not enough to tell jobs apart: after Redis loses its data, the id counter starts again and
two creators may both have a job 5. Each creator run writes its jobs with a creation token (in the
job's meta, see `creation_lua`); an event carries it when its publisher has the job at hand, and a
creator takes an event for its own only when the token is its own (an event without one is checked
against the job's stored token).
"""

from __future__ import annotations

import contextvars
import json
import time
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any

import redis
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus
from rq.serializers import resolve_serializer
from rq.utils import as_text

from queuing_system.console import REDIS_DOWN, backoff, clean, lines_together
from queuing_system.creation_lua import TOKEN_FIELD
from queuing_system.keys import JOB_EVENTS_CHANNEL
from queuing_system.refusals import refusal, say_why_not_yet
from queuing_system.stored_jobs import UNCHECKED, Stored, StoredJobs, WrongType


class JobEvent(str, Enum):
    PROGRESS = "progress"
    COMPLETED = "completed"
    FAILED_ATTEMPT = "failed attempt"  # failed, but will be tried again
    FAILED = "failed"


ENDED = (JobEvent.COMPLETED, JobEvent.FAILED)
_JOB_EVENTS = {event.value: event for event in JobEvent}  # (a lookup: JobEvent(...) costs several times more)
ABANDONED_MESSAGE = "Job abandoned: its processor stopped in the middle of it"


def creation_token(job: Job) -> str | None:
    """The token of the creator run that wrote `job` (None for a job written some other way)."""
    token = job.meta.get(TOKEN_FIELD) if isinstance(job.meta, dict) else None
    return token if isinstance(token, str) else None


def event_message(job: Job | str, event: JobEvent, value: Any = None) -> str:
    """The message for `job`'s event; given the Job (not only its id), it carries the creation token."""
    if isinstance(job, str):
        return json.dumps({"id": job, "event": event.value, "value": value})
    message = {"id": job.id, "event": event.value, "value": value}
    token = creation_token(job)
    if token is not None:
        message["token"] = token
    return json.dumps(message)


def publish_event(connection: redis.Redis, job: Job | str, event: JobEvent, value: Any = None) -> None:
    connection.publish(JOB_EVENTS_CHANNEL, event_message(job, event, value))


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
        pipeline.publish(JOB_EVENTS_CHANNEL, event_message(job, JobEvent.PROGRESS, percent))
        pipeline.execute()


def on_success(job: Job, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """RQ success callback: Kue's `complete` event."""
    publish_event(connection, job, JobEvent.COMPLETED)


def on_failure(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, *args: Any) -> None:
    """RQ failure callback, run on every failed attempt (and for jobs abandoned by a dead worker):
    Kue's `failed attempt` while attempts remain, then `failed`."""
    message = failure_message(exc_type, exc_value)
    job.meta["error"] = message  # for a creator that reconnects and missed the event
    job.save_meta()
    publish_event(connection, job, failed_event(job), message)


# -- creator side --------------------------------------------------------------------------

Handler = Callable[[Any], None]
Event = tuple[str, JobEvent, Any, "str | None"]  # job id, event, value, token (None: not carried)


_NOT_A_MESSAGE = object()


def _as_is(response: Any) -> Any:
    """The subscription's push handler: a message as it came (redis-py's default logs each one)."""
    return response


def _numeric_first(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


def _parse(raw: bytes | str) -> Event | None:
    try:  # (decoded here as json.loads would, without its guessing which encoding bytes are in)
        payload = json.loads(raw.decode("utf-8", "surrogatepass") if isinstance(raw, bytes) else raw)
        token = payload.get("token")
        return (
            str(payload["id"]),
            _JOB_EVENTS[payload["event"]],
            payload.get("value"),
            token if isinstance(token, str) else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # not one of ours: someone else published on the channel


class JobEvents:
    """The creating process's view of its jobs' events.

    `with JobEvents(connection) as events:` subscribes at once; register
    handlers with `events.on(job, JobEvent.X, handler)` (given the Job, only
    events of that very job reach them; given an id, any job with that id),
    then `events.wait_until_ended(ids)` dispatches until every job has ended.
    If the connection drops, it reconnects and asks RQ how the jobs it missed
    ended, so it never waits forever for an event that was lost.
    """

    def __init__(self, connection: redis.Redis, *, serializer: Any = None) -> None:
        self._connection = connection
        self._serializer = resolve_serializer(serializer)
        self._handlers: dict[tuple[str, JobEvent], list[Handler]] = {}
        self._tokens: dict[str, str] = {}  # job id -> the creation token of the job we follow
        self._ended: set[str] = set()
        self._newly_ended: list[str] = []  # drained by wait_until_ended: no rescans of thousands of ids
        self._heard_ours = False  # an event of a job we follow arrived since this was last cleared
        self._reconnected = False  # redis-py resubscribed on a new connection: events may have been missed
        self._stored = StoredJobs(connection, self._serializer)
        self._pubsub = self._subscribe()

    def _subscribe(self, timeout: float = 10.0) -> redis.client.PubSub:
        """Subscribe and wait for Redis to confirm it: from then on no event can be missed."""
        pubsub: redis.client.PubSub = self._connection.pubsub(push_handler_func=_as_is)
        pubsub.subscribe(JOB_EVENTS_CHANNEL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.1)
            if message is not None and message["type"] == "subscribe":
                # redis-py reconnects and resubscribes by itself when the connection drops: events
                # published meanwhile were missed, so each reconnection is noted for a catch-up.
                assert pubsub.connection is not None
                pubsub.connection.register_connect_callback(self._on_reconnect)
                return pubsub
        pubsub.close()
        raise redis.exceptions.TimeoutError("no confirmation of the job-event subscription")

    def _on_reconnect(self, connection: object) -> None:
        self._reconnected = True

    def on(self, job: Job | str, event: JobEvent, handler: Handler) -> None:
        self.follow(job, {event: handler})

    def follow(self, job: Job | str, handlers: Mapping[JobEvent, Handler]) -> None:
        """`on` for several events of one job at once (a creator of thousands of jobs calls this for each)."""
        if isinstance(job, Job):
            job_id = job.id
            token = creation_token(job)
            if token is not None:
                self._tokens[job_id] = token
        else:
            job_id = job
        for event, handler in handlers.items():
            self._handlers.setdefault((job_id, event), []).append(handler)

    def dispatch(self, job_id: str, event: JobEvent, value: Any = None) -> None:
        if job_id in self._ended:
            return  # an end state is final; a repeat (e.g. from a catch-up) is ignored
        handlers = self._handlers.get((job_id, event), [])
        if handlers or job_id in self._tokens:
            self._heard_ours = True
        if event in ENDED:
            self._ended.add(job_id)
            self._newly_ended.append(job_id)
        for handler in handlers:
            handler(value)

    def pump(self, timeout: float = 1.0, batch: int = 1000) -> bool:
        """Wait up to `timeout` seconds for events; dispatch all that came. False if none did.

        The lines the handlers say go out together once the batch is dispatched (lines_together):
        every one is flushed before we wait for more events."""
        deadline = time.monotonic() + timeout
        events: list[Event] = []
        while len(events) < batch:
            wait = 0.0 if events else max(0.0, deadline - time.monotonic())
            data = self._next_message(wait)
            if data is None:
                if events or time.monotonic() >= deadline:
                    break
                continue
            if data is not _NOT_A_MESSAGE:
                parsed = _parse(data)
                if parsed is not None:
                    events.append(parsed)
        stored = self._stored_tokens({job_id for job_id, _, _, token in events if token is None})
        with lines_together():
            for job_id, event, value, token in events:
                if self._ours(job_id, token if token is not None else stored.get(job_id)):
                    self.dispatch(job_id, event, value)
        return bool(events)

    def _next_message(self, wait: float) -> Any:
        """The data of the next message on the channel; _NOT_A_MESSAGE for anything else the subscription
        reads (a confirmation); None when nothing came within `wait` seconds. Read straight from the
        subscription's connection: redis-py's get_message costs several times the reading itself (health
        checks, retry wrappers, bookkeeping per message), which a creator of thousands of jobs pays
        for every event. A connection error goes up as it did: the caller subscribes again."""
        connection = self._pubsub.connection
        if connection is None:  # not subscribed (closed): redis-py's way says so
            message = self._pubsub.get_message(timeout=wait)
            return None if message is None else message["data"] if message["type"] == "message" else _NOT_A_MESSAGE
        if not connection.can_read(timeout=wait):
            return None
        response = connection.read_response(push_request=True)
        if isinstance(response, list) and len(response) == 3 and response[0] in (b"message", "message"):
            return response[2]
        if isinstance(response, list):
            self._pubsub.handle_message(response)  # (un)subscribe confirmations: redis-py keeps count
        return _NOT_A_MESSAGE

    def _stored_tokens(self, job_ids: Iterable[str]) -> dict[str, Stored]:
        """The creation tokens stored with these jobs, for events that came without one (only for
        jobs we follow by token: the others need no check)."""
        wanted = [job_id for job_id in job_ids if job_id in self._tokens and job_id not in self._ended]
        if not wanted:
            return {}
        metas = self._stored.read(wanted, "meta")
        return {job_id: self._stored.token_in(job_id, meta) for job_id, meta in zip(wanted, metas, strict=True)}

    def _ours(self, job_id: str, stored: Stored) -> bool:
        """Whether the job stored under `job_id` is the one we follow (any, when we follow none by token)."""
        ours = self._tokens.get(job_id)
        return ours is None or stored is UNCHECKED or stored == ours

    def catch_up(self, job_ids: Iterable[str]) -> None:
        """Ask Redis how jobs ended whose end event we may have missed (after a reconnect)."""
        missing = [job_id for job_id in job_ids if job_id not in self._ended]
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            rows = self._stored.read(chunk, "status", "meta")
            for job_id, row in zip(chunk, rows, strict=True):
                if isinstance(row, WrongType):
                    # Someone else wrote over it: no processor can run it (they leave such a key alone).
                    key = clean(Job.key_for(job_id))
                    self.dispatch(job_id, JobEvent.FAILED, f"Redis key {key} holds a {row.kind}, not a hash")
                    continue
                status, meta = row
                if status is None or not self._ours(job_id, self._stored.token_in(job_id, meta)):
                    # Gone (a Redis restarted without persistence, or emptied: its id may now be
                    # another creator's job): waiting longer would be forever.
                    self.dispatch(job_id, JobEvent.FAILED, f"Job {job_id} no longer exists in Redis")
                elif as_text(status) == JobStatus.FINISHED.value:
                    self.dispatch(job_id, JobEvent.COMPLETED)
                elif as_text(status) in (JobStatus.FAILED.value, JobStatus.STOPPED.value, JobStatus.CANCELED.value):
                    try:
                        error = self._serializer.loads(meta).get("error") if meta else None
                    except Exception:  # someone else's meta: fall back to the status
                        error = None
                    self.dispatch(
                        job_id, JobEvent.FAILED, error if isinstance(error, str) and error else f"Job {as_text(status)}"
                    )

    def wait_until_ended(
        self,
        job_ids: Iterable[str],
        quiet_check_every: float = 5.0,
        *,
        not_started: Callable[[list[str]], None] | None = None,
        not_started_after: float = 5.0,
    ) -> None:
        """Dispatch until every job in `job_ids` has ended; ride out Redis going away or refusing.

        When nothing was heard of these jobs for `quiet_check_every` seconds (however busy the
        channel is with other jobs' events), Redis is asked how they are (belt and braces: an end
        may have been missed). `not_started(waiting ids)` is called once when nothing was heard of
        them for the first `not_started_after` seconds.
        """
        waiting = {str(job_id) for job_id in job_ids} - self._ended
        started = quiet_since = time.monotonic()
        hint_due = not_started is not None
        while waiting:
            try:
                self._heard_ours = False
                self.pump(timeout=1.0)
                moment = time.monotonic()
                if self._reconnected:
                    self._reconnected = False
                    self.catch_up(sorted(waiting, key=_numeric_first))
                if self._heard_ours:
                    quiet_since, hint_due = moment, False
                elif hint_due and not_started is not None and moment - started >= not_started_after:
                    hint_due = False
                    not_started(sorted(waiting, key=_numeric_first))
                elif moment - quiet_since >= quiet_check_every:
                    self.catch_up(sorted(waiting, key=_numeric_first))
                    quiet_since = time.monotonic()
            except (*REDIS_DOWN, redis.exceptions.ResponseError) as error:
                if not isinstance(error, REDIS_DOWN) and refusal(error) is None:
                    raise
                say_why_not_yet(error)
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
            except (*REDIS_DOWN, redis.exceptions.ResponseError) as error:
                if not isinstance(error, REDIS_DOWN) and refusal(error) is None:
                    raise
                say_why_not_yet(error)

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> JobEvents:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
