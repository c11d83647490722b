"""Running a processor: RQ workers that behave like the curriculum's Kue processors.

- quiet: RQ's log only with --verbose; the lesson prints its own lines;
- N jobs at a time: N worker processes (RQ workers run one job each);
- Ctrl+C / SIGTERM: each worker finishes the job in hand, then the processor exits 0;
- Redis away: `Redis client not connected to the server: …` per failed attempt, then carry on;
- a processor killed mid-job loses nothing: a surviving or restarted worker
  notices the abandoned job within about `job timeout + grace + maintenance interval`
  seconds (RQ's defaults: ~90 s plus a 10-minute sweep) and retries or fails it.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType

from redis.client import Pipeline
from rq import SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import TimerDeathPenalty
from rq.utils import now
from rq.worker.base import WorkerStatus

from queuing_system.console import REDIS_DOWN, backoff, not_connected, sigterm_as_interrupt
from queuing_system.jobs import job_queue, queue_connection
from queuing_system.settings import env_int


@dataclass(frozen=True)
class WorkerSettings:
    # How long a blocking dequeue waits before the worker looks around (heartbeat, sweep).
    dequeue_timeout: int = field(default_factory=lambda: env_int("QUEUING_DEQUEUE_TIMEOUT", 5))
    # How often some worker sweeps the queues for jobs whose worker died.
    maintenance_interval: int = field(default_factory=lambda: env_int("QUEUING_MAINTENANCE_INTERVAL", 5))
    # How long after a job's timeout its silent worker is presumed dead.
    heartbeat_grace: int = field(default_factory=lambda: env_int("QUEUING_HEARTBEAT_GRACE", 5))


class ProcessorStoppedError(Exception):
    """Raised inside the job in hand when its processor is stopped a second time."""


class LessonWorker(SimpleWorker):
    """RQ's non-forking worker with a prompt dead-worker deadline.

    It runs jobs in its own process (no fork per job: ~5x the throughput), so
    nobody refreshes a job's heartbeat while it runs; the heartbeat is set once
    to outlive the job's timeout by `heartbeat_grace` seconds.
    """

    heartbeat_grace = 5

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        timeout = job.timeout if job.timeout and job.timeout > 0 else 180
        return int(timeout) + self.heartbeat_grace

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """A second Ctrl+C/SIGTERM: hand the job in hand back instead of leaving it 'started'.

        The job runs in this very process, so raising here fails it at once, with a
        clear message; RQ then retries it if it has attempts left. Idle: just leave.
        """
        if self._shutdown_requested_date and now() - self._shutdown_requested_date < timedelta(seconds=1):
            return  # the same Ctrl+C reaching us twice (terminal and parent): RQ ignores it too
        if self.get_state() == WorkerStatus.BUSY:
            raise ProcessorStoppedError("Processor stopped before the job finished")
        raise SystemExit(0)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, sent as one round trip instead of three (it runs several times per job)."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)
            return
        with self.connection.pipeline(transaction=False) as batch:
            super().heartbeat(timeout, pipeline=batch)
            batch.execute()


class _RedisDownLines(logging.Handler):
    """Turn RQ's 'could not connect' log record into the lesson's one line; drop the rest."""

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("Worker %s: could not connect to Redis") and len(record.args or ()) > 1:
            not_connected(record.args[1])  # type: ignore[index]


def configure_logging(verbose: bool) -> None:
    """RQ's own log (and the tracebacks of jobs that fail on purpose) only with --verbose."""
    rq_logger = logging.getLogger("rq")
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        return
    rq_logger.handlers[:] = [_RedisDownLines()]
    rq_logger.setLevel(logging.ERROR)
    rq_logger.propagate = False
    for name in ("rq.worker", "rq.job"):
        child = logging.getLogger(name)
        child.handlers[:] = [_RedisDownLines()]
        child.setLevel(logging.ERROR)
        child.propagate = False


def _wait_for_redis(url: str | None, should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Block until Redis answers (True), printing the not-connected line per failed attempt,
    or until `should_stop()` (False)."""
    for delay in backoff():
        if should_stop():
            return False
        connection = queue_connection(url)
        try:
            connection.ping()
            return True
        except REDIS_DOWN as error:
            not_connected(error)
            time.sleep(delay)
        finally:
            connection.close()
    return False  # pragma: no cover - backoff() never ends


def work(
    queue_names: Sequence[str],
    *,
    url: str | None = None,
    burst: bool = False,
    settings: WorkerSettings | None = None,
    worker_class: type[LessonWorker] | None = None,
    started: Callable[[LessonWorker], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    with_scheduler: bool = False,
) -> None:
    """One worker, until stopped (or, with `burst`, until the queues are empty).

    When Redis breaks under RQ's loop, wait for it (one line per failed attempt)
    and start a fresh worker. `started` is told about each worker (to stop it from another thread).
    """
    settings = settings or WorkerSettings()
    worker_class = worker_class or LessonWorker
    stopping = False
    while not stopping:
        if not _wait_for_redis(url, should_stop):
            return
        connection = queue_connection(url)
        worker = worker_class(
            [job_queue(name, connection) for name in queue_names],
            connection=connection,
            serializer=JSONSerializer,
            worker_ttl=settings.dequeue_timeout + 15,  # RQ derives its dequeue timeout as ttl - 15
            maintenance_interval=settings.maintenance_interval,
        )
        worker.heartbeat_grace = settings.heartbeat_grace
        if started:
            started(worker)
        # The scheduler (one per Redis, by lock) moves delayed jobs and retries with backoff to their queue.
        worker.work(burst=burst, logging_level=None, with_scheduler=with_scheduler)
        # RQ returns on a stop request, after a burst, or when Redis broke under it.
        stopping = burst or worker._stop_requested or worker._shutdown_requested_date is not None
        connection.close()


class ThreadWorker(LessonWorker):
    """A LessonWorker that lives in a thread of a server process.

    Signals belong to the main thread, so it installs none and enforces job
    timeouts with a timer instead of SIGALRM; `request_stop_from_thread()`
    asks it to stop once the job in hand (if any) is done.
    """

    death_penalty_class = TimerDeathPenalty

    def _install_signal_handlers(self) -> None:
        pass

    def request_stop_from_thread(self) -> None:
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        # RQ's loop only wakes from an idle wait on a signal; look up every dequeue_timeout instead.
        while not self._stop_requested:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=self.dequeue_timeout)
            if result is not None:
                return result
        raise StopRequested()


class BackgroundProcessing:
    """Process queues in a background thread of this process; `stop()` finishes the job in hand."""

    def __init__(self, queue_names: Sequence[str], url: str | None = None) -> None:
        self._queue_names = list(queue_names)
        self._url = url
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._worker: ThreadWorker | None = None
        self._stopping = False

    def start(self) -> bool:
        """Start processing; False if this process already does."""
        with self._lock:
            if self._thread is not None:
                return False
            self._thread = threading.Thread(target=self._run, name="queue-processing", daemon=True)
            self._thread.start()
            return True

    def _run(self) -> None:
        while not self._stopping:
            # A 1-second dequeue wait: stopping the server never waits long for an idle worker.
            work(self._queue_names, url=self._url, worker_class=ThreadWorker, started=self._started,
                 should_stop=lambda: self._stopping, settings=WorkerSettings(dequeue_timeout=1))

    def _started(self, worker: LessonWorker) -> None:
        self._worker = worker  # type: ignore[assignment]
        if self._stopping:
            self._worker.request_stop_from_thread()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.request_stop_from_thread()
        if self._thread is not None:
            self._thread.join(timeout)


def _child(queue_names: Sequence[str], url: str | None, burst: bool, verbose: bool) -> None:
    configure_logging(verbose)
    with contextlib.suppress(KeyboardInterrupt):  # stopping is the normal way out
        work(queue_names, url=url, burst=burst, with_scheduler=True)


def run_processor(queue_names: Sequence[str], *, concurrency: int = 1, burst: bool = False,
                  verbose: bool = False, url: str | None = None) -> int:
    """The body of a `*_job_processor.py`: `concurrency` workers on `queue_names`; returns an exit code."""
    configure_logging(verbose)
    sigterm_as_interrupt()
    if concurrency == 1:
        with contextlib.suppress(KeyboardInterrupt):
            work(queue_names, url=url, burst=burst, with_scheduler=True)
        return 0

    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_child, args=(queue_names, url, burst, verbose), daemon=False)
        for _ in range(concurrency)
    ]
    for child in children:
        child.start()
    try:
        for child in children:
            child.join()
    except KeyboardInterrupt:
        # Ctrl+C in a terminal reaches every child itself; a SIGTERM to us must be passed on.
        for child in children:
            if child.is_alive() and child.pid:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            _join_quietly(child)
    return 0


def _join_quietly(child: multiprocessing.process.BaseProcess) -> None:
    while True:
        try:
            child.join()
            return
        except KeyboardInterrupt:
            continue  # a second Ctrl+C: the children handle it (cold stop); we keep waiting
