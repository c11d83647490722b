"""How the dashboard reads Redis: with RQ's JSON serializer and RQ's own classes (so RQ_KEY_PREFIX is
followed as RQ follows it), with each job's Kue-style progress and failure reason, and without failing
on what someone else wrote there (a key of another type, a job that is gone or garbled): that job or
queue is shown with its reason, the rest as usual; and reading never writes.
"""

from __future__ import annotations

import functools
from typing import Any

from flask import Flask, Response, jsonify, request, url_for
from markupsafe import escape
from redis import Redis
from redis.exceptions import ResponseError
from rq import Queue, Worker
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from queuing_system.console import clean

# What reading a job written by someone else may raise: its key of another type (WRONGTYPE), gone, garbled.
UNREADABLE = (ResponseError, NoSuchJobError, DeserializationError, ValueError, TypeError, KeyError)


def read_with_care(dashboard: Any) -> None:
    """Set rq-dashboard's `web` module up as the module docstring says (once per process)."""
    dashboard.config.serializer = JSONSerializer
    dashboard.Queue = ReadOnlyQueue
    dashboard.Worker = JSONWorker  # rq-dashboard 0.9.0 lists workers without its serializer setting
    if not getattr(dashboard.serialize_job, "with_care", False):
        dashboard.serialize_job = _with_extras(dashboard.serialize_job)
        dashboard.serialize_queues = _row_by_row(dashboard.serialize_queues)


def _with_extras(plain: Any) -> Any:
    @functools.wraps(plain)
    def serialize_job(job: Job) -> dict[str, Any]:
        try:
            return {**plain(job), **job_extras(job)}
        except UNREADABLE as error:
            return unreadable_job(job, error)

    serialize_job.with_care = True  # type: ignore[attr-defined]
    return serialize_job


def job_extras(job: Job) -> dict[str, Any]:
    """What rq-dashboard does not show in its lists: status, Kue-style progress, failure reason."""
    status = job.get_status(refresh=False)
    meta = job.meta if isinstance(job.meta, dict) else {}  # anyone may write a job's meta
    progress = meta.get("progress")
    if status == JobStatus.FINISHED:
        progress = 100  # as Kue shows a complete job
    error = meta.get("error") if status in (JobStatus.FAILED, JobStatus.STOPPED) else None
    return {"status": status.value if status else "", "progress": progress, "error": clean(error) if error else None}


def unreadable_job(job: Job, error: Exception) -> dict[str, Any]:
    """A row for a job rq-dashboard cannot show (its fields garbled): its id and why."""
    reason = f"Unreadable job: {clean(error) or type(error).__name__}"
    empty = dict.fromkeys(("created_at", "enqueued_at", "started_at", "ended_at", "exc_info", "origin", "metadata"), "")
    return {**empty, "id": job.id, "description": reason, "result": None, "status": "", "progress": None, "error": None}


class JSONWorker(Worker):
    """RQ's Worker, read with the JSON serializer (to show the job each one runs), and read only: RQ's
    `find_by_key` removes a vanished worker from RQ's set of workers, and fails on a member that names
    no worker (written by someone else); here both are left out of the list, and left as they are."""

    @classmethod
    def all(
        cls,
        connection: Redis | None = None,
        job_class: type[Job] | None = None,
        queue_class: type[Queue] | None = None,
        queue: Queue | None = None,
        serializer: Any = None,
    ) -> list[Any]:
        if queue is not None or connection is None:  # not how rq-dashboard asks: RQ's own way
            return super().all(connection, job_class, queue_class, queue, serializer or JSONSerializer)
        try:
            members = connection.smembers(cls.redis_workers_keys)
        except ResponseError as error:  # RQ's set of workers is of another type: say so in the list
            return [UnreadableWorkers(f"{cls.redis_workers_keys} (cannot be read: {clean(error)})")]
        keys = sorted(key.decode(errors="replace") if isinstance(key, bytes) else str(key) for key in members)
        workers = (cls._read(key, connection, job_class, queue_class, serializer or JSONSerializer) for key in keys)
        return [worker for worker in workers if worker is not None]

    @classmethod
    def _read(cls, key: str, connection: Redis, job_class: Any, queue_class: Any, serializer: Any) -> Any:
        if not key.startswith(cls.redis_worker_namespace_prefix) or not connection.exists(key):
            return None
        try:
            return cls.find_by_key(key, connection, job_class, queue_class, serializer)
        except UNREADABLE:
            return None


class UnreadableWorkers:
    """The one row of the workers list when RQ's set of workers cannot be read: its name says why."""

    pid = last_heartbeat = birth_date = None
    successful_job_count = failed_job_count = total_working_time = 0
    version = python_version = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.queues: list[Queue] = []

    def get_state(self) -> str:
        return "?"

    def get_current_job(self) -> None:
        return None


class ReadOnlyQueue(Queue):
    """RQ's Queue as the dashboard reads it: a job that cannot be read (its key of another type, its
    fields garbled: written by someone else) is left out of the lists rather than failing the whole page,
    and reading never writes (RQ's `fetch_job` removes the id of a vanished job from the queue)."""

    # Listed even before RQ knows them (RQ lists a queue once a job was enqueued on it).
    always_listed: tuple[str, ...] = ()

    @classmethod
    def all(
        cls,
        connection: Redis,
        job_class: type[Job] | None = None,
        serializer: Any = None,
        death_penalty_class: Any = None,
    ) -> list[Queue]:
        """RQ's queues (by RQ's key names: RQ_KEY_PREFIX is followed), then `always_listed`; a member of
        RQ's set of queues that names no queue (written by someone else) is left out."""
        prefix = cls.redis_queue_namespace_prefix
        keys = [key.decode(errors="replace") if isinstance(key, bytes) else str(key) for key in
                connection.smembers(cls.redis_queues_keys)]  # fmt: skip
        names = sorted(key.removeprefix(prefix) for key in keys if key.startswith(prefix) and key != prefix)
        names += [name for name in cls.always_listed if name not in names]
        return [
            cls(name, connection=connection, job_class=job_class, serializer=serializer or JSONSerializer)
            for name in names
        ]

    def fetch_job(self, job_id: str) -> Job | None:
        try:
            job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except UNREADABLE:
            return None
        return job if job.origin == self.name else None

    @property
    def count(self) -> int:
        try:
            return super().count
        except ResponseError:  # the queue's key is of another type: no job can be queued there
            return 0


REGISTRIES = ("failed", "started", "deferred", "finished", "canceled", "scheduled")


def _row_by_row(plain: Any) -> Any:
    """rq-dashboard's queue list, one queue at a time: a queue with a key of another type (written by
    someone else) is listed with its reason, and the others as usual (the whole list failed before)."""

    @functools.wraps(plain)
    def serialize_queues(instance_number: int, queues: list[Queue]) -> list[dict[str, Any]]:
        rows = []
        for queue in queues:
            try:
                rows.extend(plain(instance_number, [queue]))
            except UNREADABLE as error:
                rows.append(_unreadable_queue(instance_number, queue.name, error))
        return rows

    return serialize_queues


def _unreadable_queue(instance_number: int, name: str, error: Exception) -> dict[str, Any]:
    def link(registry: str) -> str:
        return url_for(
            "rq_dashboard.jobs_overview",
            instance_number=instance_number,
            queue_name=name,
            registry_name=registry,
            per_page="8",
            order="asc",
            page="1",
        )

    row: dict[str, Any] = {
        "name": f"{name} (cannot be read: {clean(error)})",
        "count": "?",
        "queued_url": link("queued"),
    }
    for registry in REGISTRIES:
        row[f"{registry}_job_registry_count"] = "?"
        row[f"{registry}_url"] = link(registry)
    return row


def _readable_job_info(plain: Any) -> Any:
    """rq-dashboard's job details, or what makes the job unreadable (a JSON answer, not a 500 page)."""

    @functools.wraps(plain)
    def job_info(*args: Any, **kwargs: Any) -> Any:
        try:
            return plain(*args, **kwargs)
        except NoSuchJobError:
            return jsonify(status="No such job"), 404
        except UNREADABLE as error:
            return jsonify(status=f"Unreadable job: {clean(error) or type(error).__name__}"), 500

    return job_info


def say_what_cannot_be_read(app: Flask) -> None:
    """A key of another type or a job that is gone or garbled (written by someone else): a short answer
    naming it (JSON for the data endpoints), not a 500 page and a traceback on the console."""

    def unreadable(error: Exception) -> tuple[Response | str, int]:
        gone = isinstance(error, NoSuchJobError)
        reason = "No such job" if gone else f"Cannot read this from Redis: {clean(error) or type(error).__name__}"
        if request.path.endswith(".json"):
            return jsonify(status=reason), 404 if gone else 500
        return f"<!doctype html><title>Unreadable</title><p>{escape(reason)}</p>", 404 if gone else 500

    for kind in (ResponseError, NoSuchJobError, DeserializationError):
        app.register_error_handler(kind, unreadable)
    app.view_functions["rq_dashboard.job_info"] = _readable_job_info(app.view_functions["rq_dashboard.job_info"])
