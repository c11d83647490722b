"""Running processors: the process tree around `processor.Processor`.

- `run_processor(...)` is the body of a `*_job_processor.py`: `--concurrency N` jobs at once, spread
  over `--processes P` worker processes (task 7's default: two jobs at a time, in two processes).
  A process running more than one job at a time runs them in threads (`Crew`: one Processor each,
  its own RQ worker, lease and claims), for jobs that wait on I/O; processes spread CPU-bound work
  over cores. The workers are one tree with their processor: each signal it gets reaches every worker
  (a second Ctrl+C hands every job in hand back), a worker whose processor dies leaves too
  (PR_SET_PDEATHSIG on Linux, and it watches its parent), and a worker process that dies is replaced.
  It returns 0 after a requested stop, 1 if it gives up.
- `BackgroundProcessing` runs a processor in a thread of a server (100_seat).
- `configure_logging(verbose)`: RQ's log only with --verbose.
- `processing_options(parser, ...)`: the processors' --concurrency and --processes, with their bounds.
"""

from __future__ import annotations

import argparse
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

from queuing_system.creator_options import bounded
from queuing_system.idle import IdleTurns
from queuing_system.jobs import queue_connection
from queuing_system.processor import Processor, ProcessorSettings
from queuing_system.reconnect import REDIS_FAULTS, Reconnection, Voice
from queuing_system.runner import ignore_stray_alarms
from queuing_system.settings import ConfigError, connect, redis_url

# A worker process that keeps dying is replaced at most this often before the processor gives up.
RESPAWNS_PER_MINUTE = 10

# Jobs at once, and processes, a processor may be asked for. Each job at once is a thread with its
# own Redis connections (about three) and its share of the process's memory (about 1 MB).
MOST_AT_ONCE = 256
MOST_PROCESSES = 64


def processing_options(parser: argparse.ArgumentParser, *, concurrency: int, processes: int) -> None:
    """--concurrency and --processes for a `*_job_processor.py` (its curriculum defaults given)."""
    parser.add_argument(
        "--concurrency",
        type=bounded(1, MOST_AT_ONCE),
        default=concurrency,
        metavar="N",
        help=f"jobs run at once (1 to {MOST_AT_ONCE}; default {concurrency}): more than one per process run in "
        "threads, for jobs that wait on I/O",
    )
    parser.add_argument(
        "--processes",
        type=bounded(1, MOST_PROCESSES),
        default=processes,
        metavar="P",
        help=f"worker processes the jobs at once are spread over (1 to {MOST_PROCESSES}, at most N; default "
        f"{processes}): more for CPU-bound jobs, one core each",
    )


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


def wait_for_redis(url: str | None, stopped: threading.Event, voice: Voice | None = None) -> redis.Redis | None:
    """A client once Redis answers (the not-connected line per failed attempt), or None if stopped first."""
    reconnection = Reconnection(stopped, voice)
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
    processes: int = 1,
    burst: bool = False,
    verbose: bool = False,
    url: str | None = None,
) -> int:
    """The body of a `*_job_processor.py`: `concurrency` jobs at once on `base_queue`, over `processes`
    worker processes (never more than jobs at once); returns an exit code."""
    configure_logging(verbose)
    # Malformed settings are refused here (ConfigError), before any worker starts.
    settings = ProcessorSettings()
    url = url or redis_url()
    processes = max(1, min(processes, concurrency))
    # The jobs at once, shared out: 5 over 2 processes are 3 and 2.
    shares = [concurrency // processes + (index < concurrency % processes) for index in range(processes)]
    _allow_descriptors(max(shares))
    ignore_stray_alarms()  # (inherited by the worker processes)
    try:
        if processes > 1:
            return _Tree(base_queue, functions, shares, burst, verbose, url, settings).run()
        if concurrency == 1:
            return serve(base_queue, functions, url=url, burst=burst, settings=settings)
        return Crew(base_queue, functions, concurrency, url=url, burst=burst, settings=settings).run()
    except Exception as error:  # a bug, not a user's mistake: one line, and a supervisor restarts us
        if verbose:
            raise
        print(f"Processor stopped by an unexpected error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1


# Open files a worker process needs: a few of its own, and per job at once its Redis connections (the
# loop's, its steward's; the lead's waits and upkeep) with room to spare.
DESCRIPTORS_BASE, DESCRIPTORS_PER_JOB = 64, 4


def _allow_descriptors(at_once: int) -> None:
    """Raise the open-file limit to what `at_once` jobs in one process need (up to the hard limit), or
    refuse to start (one line, exit 2) where the hard limit is lower: a worker out of descriptors
    cannot reach Redis, and its jobs would wait for a sweep."""
    import resource

    needed = DESCRIPTORS_BASE + DESCRIPTORS_PER_JOB * at_once
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"--concurrency: {at_once} jobs at once in one process need about {needed} open files, and this "
            f"process may open {hard} (ulimit -n): fewer jobs at once, more --processes, or a higher limit"
        )
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class Crew:
    """`size` workers as threads of this process, one Processor each (its own RQ worker, lease and
    claims): `size` jobs at once, for jobs that wait on I/O. The first is the process's lead: it does
    the upkeep and, idle, waits on Redis for the others (idle.py); the others only run jobs, and,
    idle, let their leases lapse (they hold nothing) until the lead rings.

    Signals reach the main thread: the first stops every worker warmly (each finishes its job in hand
    and gives its other claims back); a second, a second or more later, fails every job in hand as
    stopped, at its next Python step (a thread cannot be interrupted inside a blocking call)."""

    def __init__(
        self,
        base_queue: str,
        functions: Mapping[str, Callable[..., Any]],
        size: int,
        *,
        url: str | None,
        burst: bool = False,
        settings: ProcessorSettings | None = None,
        watch_parent: bool = False,
        turns: IdleTurns | None = None,
    ) -> None:
        self._base_queue, self._functions, self._size = base_queue, functions, size
        self._url, self._burst, self._settings, self._watch_parent = url, burst, settings, watch_parent
        self._turns = turns or IdleTurns()
        self._voice = Voice()  # one line per failed attempt for the whole crew
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._processors: list[Processor] = []
        self._stop_requested_at: float | None = None
        self._failure: BaseException | None = None

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        threads = [
            threading.Thread(target=self._work, args=(index,), name=f"worker-{index}", daemon=True)
            for index in range(self._size)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # a timed join: the main thread must stay free to take signals
        if self._failure is not None:
            raise self._failure  # run_processor says it in one line
        return 0

    def _work(self, index: int) -> None:
        reconnection = Reconnection(self._stopped, self._voice)
        try:
            while not self._stopped.is_set():
                connection = wait_for_redis(self._url, self._stopped, self._voice)
                if connection is None:
                    return
                try:
                    processor = Processor(
                        self._base_queue,
                        connection,
                        functions=self._functions,
                        settings=self._settings,
                        in_thread=True,
                        watch_parent=self._watch_parent,
                        turns=self._turns,
                        lead=index == 0,
                        voice=self._voice,
                    )
                except REDIS_FAULTS as error:  # it went away (or said no) between the PING and the worker's first words
                    reconnection.failed(error)
                    continue
                with self._lock:
                    self._processors.append(processor)
                    if self._stopped.is_set():
                        processor.request_stop_from_thread()
                processor.work(burst=self._burst)
                return
        except Exception as error:  # a bug: the whole crew stops (each worker settles what it can)
            logging.getLogger("rq.worker").exception("worker %s stopped", index)
            with self._lock:
                self._failure = self._failure or error
            self._stop_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        moment = time.monotonic()
        if self._stop_requested_at is None:
            self._stop_requested_at = moment
            for processor in tuple(self._processors):  # (a copy taken without the lock: no deadlock here)
                processor.state.note_stop()  # no job starts from now on
            # The rest not in this handler: it may have interrupted this thread inside a lock a stop takes.
            threading.Thread(target=self._stop_all, name="stop", daemon=True).start()
        elif moment - self._stop_requested_at >= 1.0:  # a repeat within a second is the same Ctrl+C
            threading.Thread(target=self._hand_back_jobs, name="hand-back", daemon=True).start()

    def _stop_all(self) -> None:
        self._stopped.set()
        with self._lock:
            processors = list(self._processors)
        for processor in processors:
            processor.request_stop_from_thread()

    def _hand_back_jobs(self) -> None:
        with self._lock:
            processors = list(self._processors)
        for processor in processors:
            processor.hand_back_job_in_hand()


class _Tree:
    """N worker processes forked from this one, kept alive until a stop is requested."""

    def __init__(
        self,
        base_queue: str,
        functions: Mapping[str, Callable[..., Any]],
        shares: list[int],
        burst: bool,
        verbose: bool,
        url: str | None,
        settings: ProcessorSettings,
    ) -> None:
        # One IdleTurns for all its workers: idle, one of them waits on Redis for all (idle.py).
        self._target = (base_queue, functions, burst, verbose, url, settings, IdleTurns())
        self._shares = shares  # jobs at once, per worker process
        self._burst = burst
        self._context = multiprocessing.get_context("fork")
        self._children: dict[multiprocessing.process.BaseProcess, int] = {}  # each with its share
        self._stopping = False
        self._respawns: list[float] = []
        self._pid = os.getpid()  # the processor's own process (its workers inherit this object)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._pass_on)
        signal.signal(signal.SIGTERM, self._pass_on)
        for share in self._shares:
            self._start_one(share)
        code = 0
        while self._children:
            sentinels = {child.sentinel: child for child in self._children}
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=1.0):
                child = sentinels[ready]  # type: ignore[index]
                child.join()
                share = self._children.pop(child)
                if self._stopping or (self._burst and child.exitcode == 0):
                    continue
                if not self._may_respawn():
                    print("Processor gave up: its worker processes keep dying", file=sys.stderr, flush=True)
                    self._pass_on(signal.SIGTERM, None)
                    code = 1
                    continue
                self._start_one(share)  # a worker died (killed, out of memory): replace it
        return code

    def _start_one(self, share: int) -> None:
        child = self._context.Process(target=_worker_process, args=(os.getpid(), share, *self._target), daemon=False)
        child.start()
        self._children[child] = share

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
        for child in list(self._children):
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
    share: int,
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
    if share == 1:
        sys.exit(serve(base_queue, functions, url=url, burst=burst, settings=settings, watch_parent=True, turns=turns))
    crew = Crew(base_queue, functions, share, url=url, burst=burst, settings=settings, watch_parent=True, turns=turns)
    try:
        sys.exit(crew.run())
    except Exception as error:  # a bug: one line; the processor replaces this process
        print(f"Worker stopped by an unexpected error: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


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
