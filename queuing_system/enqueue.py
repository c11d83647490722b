"""Putting jobs on their queues, each at most once: one job, or many at a time.

Jobs are written exactly as RQ's `enqueue_job`/`schedule_job` write them (tests compare field for
field), with Kue-style numeric ids from one counter and the job-event callbacks. Each chunk of jobs
takes two steps (`creation_lua`): reserve its ids, then write the jobs that do not exist yet and
queue exactly those. Both are safe to repeat when their outcome is unknown, so riding out an
outage (or redis-py's own retry) never duplicates or skips a job, and a chunk's ids are reserved
only when it is written: the counter does not skip ranges nobody used.
"""

from __future__ import annotations

import calendar
import itertools
import secrets
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from redis.exceptions import ResponseError
from rq import Callback, Queue
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.utils import get_call_string, now

from queuing_system.bad_data import wrong_types
from queuing_system.console import REDIS_DOWN, backoff, lines_together
from queuing_system.creation_lua import MAX_CHUNK, RECORD_TTL, TOKEN_FIELD, Create, Outcome, Reserve
from queuing_system.job_settings import JobSettings
from queuing_system.keys import JOB_CREATION_RECORD, JOB_ID_COUNTER
from queuing_system.queues import queue_for_priority
from queuing_system.refusals import code_of, refusal, said, wrong_type
from queuing_system.replication import Confirmation
from queuing_system.stamps import utc_text
from queuing_system.steps import Problem

# The job-event callbacks every job carries (RQ's own workers and sweeps call them; ours settle
# them in the same atomic step that stores the end).
ON_SUCCESS = "queuing_system.events.on_success"
ON_FAILURE = "queuing_system.events.on_failure"


def new_token() -> str:
    """What tells one creator run's jobs from any other's, whatever their ids."""
    return secrets.token_hex(16)


def next_job_id(connection: redis.Redis) -> str:
    """Kue-style ids: 1, 2, 3, … across runs, from one counter. With a Sentinel group the id is handed
    out only once replicated: a failover that took the increment back would hand it out again."""
    return str(Confirmation.of(connection).run(connection, lambda on: on.incr(JOB_ID_COUNTER)))


class _Batch:
    """Jobs for one function, settings and callbacks, written as RQ would write them."""

    def __init__(
        self,
        queue: Queue,
        function: str,
        settings: JobSettings,
        on_success: str,
        on_failure: str,
        token: str,
        record_ttl: int = RECORD_TTL,
    ) -> None:
        self.queue, self.function, self.settings, self.token = queue, function, settings, token
        self._record_ttl = record_ttl
        self._chunks = 0
        self._template = queue.create_job(
            function,
            job_id="0",  # each copy gets its own
            timeout=settings.timeout,
            result_ttl=settings.result_ttl,
            failure_ttl=settings.failure_ttl,
            retry=settings.retry(),
            on_success=Callback(on_success),
            on_failure=Callback(on_failure),
            meta={TOKEN_FIELD: token},
        )
        self._scheduled_at: datetime | None = None
        # RQ's own enqueue (or schedule) fills in the fields it stores (status, origin, times…), on a
        # pipeline that is never sent: what it would have written is then `to_dict()`.
        with queue.connection.pipeline(transaction=False) as never_sent:
            if settings.delay > 0:
                self._scheduled_at = datetime.now(timezone.utc) + timedelta(seconds=settings.delay)
                queue.schedule_job(self._template, self._scheduled_at, pipeline=never_sent)
            else:
                queue.enqueue_job(self._template, pipeline=never_sent)
            never_sent.reset()
        stored = self._template.to_dict()
        self._varying = [name for name in ("data", "description", "created_at", "enqueued_at") if name in stored]
        self._shared = {name: value for name, value in stored.items() if name not in self._varying}

    def _job(self, job_id: str, data: Any) -> Job:
        """A Job like the template (RQ's constructor costs more than all the rest)."""
        job = object.__new__(type(self._template))  # a shallow copy (copy.copy's way round costs more)
        job.__dict__.update(self._template.__dict__)
        job.id, job.args, job.meta = job_id, () if data is None else (data,), dict(self._template.meta)
        job.description = get_call_string(self.function, job.args, {}, max_length=75)
        job.created_at = now()
        if self._template.enqueued_at is not None:
            job.enqueued_at = job.created_at
        return job

    def _values(self, job: Job) -> list[Any]:
        stamp = utc_text(job.created_at)
        by_name = {"data": zlib.compress(job.data), "description": job.description, "created_at": stamp}
        by_name["enqueued_at"] = stamp
        return [by_name[name] for name in self._varying]

    def write(self, datas: Sequence[Any]) -> list[Job]:
        """Create a job for each of `datas` (a chunk), once, and return them in order.

        Safe to call again with the same `datas` when its outcome is unknown: a chunk is counted (and
        the next one named) only once a call returned, so a repeat reserves and writes nothing new."""
        record = JOB_CREATION_RECORD.format(token=self.token)
        for round_ in itertools.count():  # a second round only when the counter was behind the jobs
            reserve = Reserve(JOB_ID_COUNTER, record, f"{self._chunks}.{round_}", len(datas), self._record_ttl)
            ids = reserve.run(self.queue.connection)
            jobs = [self._job(job_id, data) for job_id, data in zip(ids, datas, strict=True)]
            outcomes = self._create(jobs)
            if not any(outcome in (Outcome.TAKEN, Outcome.HELD_BACK) for outcome in outcomes):
                break
            # Ids of other jobs: the counter was lost. Nothing was written: the chunk again, on fresh ids.
        self._chunks += 1
        return jobs

    def _create(self, jobs: list[Job]) -> list[Outcome]:
        return Create(
            target_key=self._target_key(),
            queues_key=self.queue.redis_queues_keys,
            queue_key=self.queue.key,
            token=self.token,
            shared=self._shared,
            varying=self._varying,
            jobs=[(job.id, job.key, self._values(job)) for job in jobs],
            scheduled_at=self._score(),
        ).run(self.queue.connection)

    def kinds(self) -> dict[str, str]:
        """The keys writing this batch's jobs writes besides the jobs', with the type each must have."""
        return {
            JOB_ID_COUNTER: "string",
            JOB_CREATION_RECORD.format(token=self.token): "hash",
            self._target_key(): "list" if self._scheduled_at is None else "zset",
            self.queue.redis_queues_keys: "set",
        }

    def _target_key(self) -> str:
        if self._scheduled_at is None:
            return str(self.queue.key)
        return ScheduledJobRegistry.key_template.format(self.queue.name)  # RQ's key, RQ_KEY_PREFIX and all

    def _score(self) -> int | None:
        if self._scheduled_at is None:
            return None
        return calendar.timegm(self._scheduled_at.utctimetuple())  # as ScheduledJobRegistry.schedule scores


def enqueue(
    queue: Queue,
    function: str,
    data: Any = None,
    settings: JobSettings | None = None,
    *,
    on_success: str = ON_SUCCESS,
    on_failure: str = ON_FAILURE,
    token: str | None = None,
) -> Job:
    """Put a job for `function` (a name a processor offers) on `queue`, `data` its argument.

    With a priority other than normal the job goes to the sibling queue; with a
    delay it waits in the scheduled registry. The callbacks default to the
    Kue-style event channel (`queuing_system.events`). One attempt: a Redis error
    reaches the caller (redis-py's own retries of the steps are safe: they never write twice).
    A caller that may call again after an unknown outcome passes the same `token` (one per job
    it means to create, e.g. `new_token()` per request): the repeat returns the job the first
    call created, with the same id, and writes nothing (within RECORD_TTL, ten minutes).
    """
    settings = settings or JobSettings()
    queue = queue_for_priority(queue, settings.priority)
    [job] = _Batch(queue, function, settings, on_success, on_failure, token or new_token()).write([data])
    return job


class EnqueueInterruptedError(Exception):
    """Redis stayed away (or kept refusing, or answered an error): `created` landed, the rest did not.
    `wrong` names the keys of another type, when that was the error."""

    def __init__(self, created: list[Job], wanted: int, error: BaseException, wrong: Sequence[Problem] = ()) -> None:
        super().__init__(str(error))
        self.created = created
        self.wanted = wanted
        self.error = error
        self.wrong = list(wrong)

    @property
    def why(self) -> str:
        """`Redis refused the write (<what it said>)`, `Redis key K holds a string, not a list`,
        `Redis answered with an error (<what it said>)`, or `Redis stayed away (<error>)`."""
        said_now = refusal(self.error)
        if said_now is not None:
            return f"Redis refused the write ({said_now})"
        if self.wrong:
            return "; ".join(wrong_type(problem.key, problem.found, problem.wanted) for problem in self.wrong)
        if isinstance(self.error, ResponseError):
            return f"Redis answered with an error ({said(self.error)})"
        return f"Redis stayed away ({self.error})"


def _wrong_keys(queue: Queue, error: BaseException, batch: _Batch | None) -> list[Problem]:
    """For a WRONGTYPE answer, which of the keys creating jobs writes someone else gave another type
    (none found, or Redis gone meanwhile: nothing to add to what Redis said)."""
    if code_of(error) != "WRONGTYPE":
        return []
    wanted = {str(queue.key): "list", queue.redis_queues_keys: "set", JOB_ID_COUNTER: "string"}
    if batch is not None:
        wanted.update(batch.kinds())
    try:
        return wrong_types(queue.connection, wanted)
    except (*REDIS_DOWN, ResponseError):
        return []


def _chunks(datas: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(datas), size):
        yield datas[start : start + size]


def enqueue_many(
    queue: Queue,
    function: str,
    datas: Sequence[Any],
    settings: JobSettings | None = None,
    *,
    created: Callable[[Job], None] = lambda job: None,
    chunk_size: int = 500,
    give_up_after: float = 30.0,
    retrying: Callable[[BaseException], None] = lambda error: None,
    token: str | None = None,
) -> list[Job]:
    """Create one job per item of `datas`, fast: `chunk_size` at a time, each chunk's ids reserved
    and its jobs written in two atomic steps.

    `created(job)` is called for each job, in order, once its chunk has landed. A Redis outage, or
    a refusal (out of memory, busy, read-only…), shorter than `give_up_after` seconds is ridden out
    (`retrying(error)` on each failed attempt): the chunk is written again, and whatever of it had
    landed is not written twice, so no job is duplicated or skipped. Past that, or on any other
    error reply, EnqueueInterruptedError says which jobs were created.
    """
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"chunk_size must be 1 to {MAX_CHUNK}, got {chunk_size}")
    settings = settings or JobSettings()
    queue = queue_for_priority(queue, settings.priority)
    if not datas:
        return []
    # A chunk may be written again as long as its outage is ridden out: its record must outlive that.
    record_ttl = max(RECORD_TTL, int(give_up_after) * 2)
    done: list[Job] = []
    batch: _Batch | None = None
    for chunk in _chunks(datas, chunk_size):
        deadline: float | None = None
        delays = backoff()
        while True:
            try:
                batch = batch or _Batch(
                    queue, function, settings, ON_SUCCESS, ON_FAILURE, token or new_token(), record_ttl
                )
                jobs = batch.write(chunk)
                break
            except (*REDIS_DOWN, ResponseError) as error:
                moment = time.monotonic()
                deadline = deadline or moment + give_up_after
                if moment >= deadline or not (isinstance(error, REDIS_DOWN) or refusal(error) is not None):
                    wrong = [] if isinstance(error, REDIS_DOWN) else _wrong_keys(queue, error, batch)
                    raise EnqueueInterruptedError(done, len(datas), error, wrong) from None
                retrying(error)
                time.sleep(min(next(delays), max(0.0, deadline - moment)))
        with lines_together():  # what `created` says for a chunk goes out in one write, before the next chunk
            for job in jobs:
                done.append(job)
                created(job)
    return done
