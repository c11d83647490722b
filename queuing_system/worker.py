"""Running processors: the process tree around `processor.Processor`.

- `run_processor(...)` is the body of a `*_job_processor.py`: one worker in this
  process, or N worker processes (task 7 runs two jobs at a time). The workers
  are one tree with their processor: each signal it gets reaches every worker
  (a second Ctrl+C hands every job in hand back), a worker whose processor dies
  leaves too (PR_SET_PDEATHSIG on Linux, and it watches its parent), and a worker
  that dies is replaced. It returns 0 after a requested stop, 1 if it gives up.
- `BackgroundProcessing` runs a processor in a thread of a server (100_seat).
- `configure_logging(verbose)`: RQ's log only with --verbose.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import redis

from queuing_system.idle import IdleTurns
from queuing_system.jobs import queue_connection
from queuing_system.processor import Processor, ProcessorSettings
from queuing_system.reconnect import REDIS_FAULTS, Reconnection
from queuing_system.settings import connect, redis_url

# A worker process that keeps dying is replaced at most this often before the processor gives up.
RESPAWNS_PER_MINUTE = 10


def configure_logging(verbose: bool) -> None:
    """RQ's own log (and the tracebacks of jobs that fail on purpose) only with --verbose."""
    rq_logger = logging.getLogger("rq")
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
        rq_logger.setLevel(logging.INFO)
        return
    rq_logger.handlers[:] = [logging.NullHandler()]  # our loop says what the learner must know
    rq_logger.setLevel(logging.ERROR)
    rq_logger.propagate = False
    for name in ("rq.worker", "rq.job", "rq.queue", "rq.registry", "rq.scheduler"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.setLevel(logging.CRITICAL + 1)
        child.propagate = True


def wait_for_redis(url: str | None, stopped: threading.Event) -> redis.Redis | None:
    """A client once Redis answers (the not-connected line per failed attempt), or None if stopped first."""
    reconnection = Reconnection(stopped)
    while not stopped.is_set():
        # A quick check first (one try, a 3 s limit): a silent or wrong server is said at once, not waited on.
        probe = connect(url, decode_responses=False, retries=0)
        try:
            probe.ping()
            return queue_connection(url)
        except REDIS_FAULTS as error:  # away, not Redis, no such database, refusing: say it, try again
            reconnection.failed(error)
        finally:
            probe.close()
    return None


def serve(
    base_queue: str,
    functions: Mapping[str, Callable[..., Any]],
    *,
    url: str | None = None,
    burst: bool = False,
    settings: ProcessorSettings | None = None,
    watch_parent: bool = False,
    turns: IdleTurns | None = None,
) -> int:
    """One worker in this process's main thread, until Ctrl+C / SIGTERM (or, with `burst`, an empty queue)."""
    stopped = threading.Event()

    def stop_before_start(signum: int, frame: FrameType | None) -> None:
        # From another thread: this one may be inside `stopped.wait()`, holding the lock `set()` needs.
        threading.Thread(target=stopped.set, daemon=True).start()

    signal.signal(signal.SIGINT, stop_before_start)
    signal.signal(signal.SIGTERM, stop_before_start)
    reconnection = Reconnection(stopped)
    while not stopped.is_set():
        connection = wait_for_redis(url, stopped)
        if connection is None:
            return 0
        try:
            processor = Processor(
                base_queue, connection, functions=functions, settings=settings, watch_parent=watch_parent, turns=turns
            )
        except REDIS_FAULTS as error:  # it went away (or said no) between the PING and the worker's first words
            reconnection.failed(error)
            continue
        if stopped.is_set():
            return 0
        processor.install_signal_handlers()
        processor.work(burst=burst)
        return 0
    return 0


def run_processor(
    base_queue: str,
    functions: Mapping[str, Callable[..., Any]],
    *,
    concurrency: int = 1,
    burst: bool = False,
    verbose: bool = False,
    url: str | None = None,
) -> int:
    """The body of a `*_job_processor.py`: `concurrency` workers on `base_queue`; returns an exit code."""
    configure_logging(verbose)
    # Malformed settings are refused here (ConfigError), before any worker starts.
    settings = ProcessorSettings()
    url = url or redis_url()
    try:
        if concurrency == 1:
            return serve(base_queue, functions, url=url, burst=burst, settings=settings)
        return _Tree(base_queue, functions, concurrency, burst, verbose, url, settings).run()
    except Exception as error:  # a bug, not a user's mistake: one line, and a supervisor restarts us
        if verbose:
            raise
        print(f"Processor stopped by an unexpected error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1


class _Tree:
    """N worker processes forked from this one, kept alive until a stop is requested."""

    def __init__(
        self,
        base_queue: str,
        functions: Mapping[str, Callable[..., Any]],
        concurrency: int,
        burst: bool,
        verbose: bool,
        url: str | None,
        settings: ProcessorSettings,
    ) -> None:
        # One IdleTurns for all its workers: idle, one of them waits on Redis for all (idle.py).
        self._target = (base_queue, functions, burst, verbose, url, settings, IdleTurns())
        self._concurrency = concurrency
        self._burst = burst
        self._context = multiprocessing.get_context("fork")
        self._children: list[multiprocessing.process.BaseProcess] = []
        self._stopping = False
        self._respawns: list[float] = []
        self._pid = os.getpid()  # the processor's own process (its workers inherit this object)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._pass_on)
        signal.signal(signal.SIGTERM, self._pass_on)
        for _ in range(self._concurrency):
            self._start_one()
        code = 0
        while self._children:
            sentinels = {child.sentinel: child for child in self._children}
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
                child = sentinels[ready]  # type: ignore[index]
                child.join()
                self._children.remove(child)
                if self._stopping or (self._burst and child.exitcode == 0):
                    continue
                if not self._may_respawn():
                    print("Processor gave up: its worker processes keep dying", file=sys.stderr, flush=True)
                    self._pass_on(signal.SIGTERM, None)
                    code = 1
                    continue
                self._start_one()  # a worker died (killed, out of memory): replace it
        return code

    def _start_one(self) -> None:
        child = self._context.Process(target=_worker_process, args=(os.getpid(), *self._target), daemon=False)
        child.start()
        self._children.append(child)

    def _may_respawn(self) -> bool:
        now = time.monotonic()
        self._respawns = [when for when in self._respawns if now - when < 60] + [now]
        return len(self._respawns) <= RESPAWNS_PER_MINUTE

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        """Every stop signal reaches every worker (a worker counts a repeat within a second once)."""
        if os.getpid() != self._pid:
            # A worker just forked, stopped before it set its own handlers: it has started nothing yet.
            os._exit(0)
        self._stopping = True
        for child in self._children:
            if child.pid and child.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when our parent dies (elsewhere the worker watches getppid())."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # it died before we asked
        sys.exit(0)


def _worker_process(
    parent_pid: int,
    base_queue: str,
    functions: Mapping[str, Callable[..., Any]],
    burst: bool,
    verbose: bool,
    url: str | None,
    settings: ProcessorSettings,
    turns: IdleTurns,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # not the parent's forwarding handler
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent_pid)
    configure_logging(verbose)
    sys.exit(serve(base_queue, functions, url=url, burst=burst, settings=settings, watch_parent=True, turns=turns))


class BackgroundProcessing:
    """A processor in a background thread of this (server) process; `stop()` finishes the job in hand."""

    def __init__(
        self,
        base_queue: str,
        functions: Mapping[str, Callable[..., Any]],
        callbacks: Mapping[str, Callable[..., Any]] | None = None,
        url: str | None = None,
    ) -> None:
        self._base_queue = base_queue
        self._functions = functions
        self._callbacks = callbacks
        self._url = url
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._processor: Processor | None = None
        self._stopped = threading.Event()

    def start(self) -> bool:
        """Start processing; False if this process already does."""
        with self._lock:
            if self._thread is not None or self._stopped.is_set():
                return False
            self._thread = threading.Thread(target=self._run, name="queue-processing", daemon=True)
            self._thread.start()
            return True

    def _run(self) -> None:
        reconnection = Reconnection(self._stopped)
        while not self._stopped.is_set():
            connection = wait_for_redis(self._url, self._stopped)
            if connection is None:
                return
            try:
                processor = Processor(
                    self._base_queue, connection, functions=self._functions, callbacks=self._callbacks, in_thread=True
                )
                with self._lock:
                    self._processor = processor
                    if self._stopped.is_set():
                        processor.request_stop_from_thread()
                processor.work()
            except REDIS_FAULTS as error:
                reconnection.failed(error)
                continue
            except Exception as error:  # keep serving; the next round starts a fresh worker
                logging.getLogger("rq.worker").exception("processing stopped: %s", error)
            reconnection.wait()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopped.set()
        with self._lock:
            if self._processor is not None:
                self._processor.request_stop_from_thread()
        if self._thread is not None:
            self._thread.join(timeout)
