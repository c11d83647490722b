"""How the lessons talk to the learner: flushed lines, one-line errors, clean Ctrl+C."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import os
import queue
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import NoReturn

from redis.exceptions import BusyLoadingError, InvalidResponse, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from queuing_system.settings import ConfigError

# What "no Redis to talk to" looks like from redis-py: nothing listens, it went away, it never
# answers, or what answers does not speak Redis (an HTTP server on that port: InvalidResponse).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, InvalidResponse)

# Replies with which a Redis refuses the connection itself (redis-py raises them as plain
# ResponseErrors while it sets the connection up): the database in REDIS_URL does not exist.
_REFUSALS = ("DB index is out of range", "invalid DB index")


def means_not_connected(error: BaseException) -> bool:
    """Whether `error` means there is no working connection to a Redis, so the right words are
    `Redis client not connected to the server: …` (and, for a long-running process, try again later)
    rather than a failure of the command itself."""
    if isinstance(error, BusyLoadingError):
        return False  # LOADING: Redis is there and answering, just not ready yet
    if isinstance(error, REDIS_DOWN):
        return True
    return isinstance(error, ResponseError) and str(error).startswith(_REFUSALS)


def say(line: object) -> None:
    """`console.log`: one line on stdout, flushed (a learner watches two terminals).

    Line and newline go out in one write: processes sharing a terminal or pipe
    (task 7's two workers) then never splice their lines together; `print()`
    may write the text and the newline separately. Inside `lines_together()`, the
    line waits (in this thread) for the others said there.
    """
    held = _held.get()
    if held is not None:
        held.append(f"{line}\n")
        return
    sys.stdout.write(f"{line}\n")
    sys.stdout.flush()


_held: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("held_lines", default=None)
# Bytes a pipe writes in one piece, never interleaved with another process's write (POSIX PIPE_BUF).
_ATOMIC_WRITE = 4096


@contextlib.contextmanager
def lines_together() -> Iterator[None]:
    """What `say` says inside goes out at the end, flushed, in as few writes as whole lines allow (each at
    most PIPE_BUF bytes, so never spliced with another process's lines). For a burst of lines said
    between two waits (the events of a batch, the jobs of a chunk): one write per burst, not per line.
    Every line is still out before the caller waits for anything again."""
    if _held.get() is not None:  # already inside: the outer one writes
        yield
        return
    held: list[str] = []
    token = _held.set(held)
    try:
        yield
    finally:
        _held.reset(token)
        _write_lines(held)


def _write_lines(lines: list[str]) -> None:
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) if not line.isascii() else len(line)
        if chunk and size + length > _ATOMIC_WRITE:
            sys.stdout.write("".join(chunk))
            sys.stdout.flush()
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        sys.stdout.write("".join(chunk))
        sys.stdout.flush()


# What must not reach a terminal from outside data: control characters (newlines, escapes that
# drive the terminal), line/paragraph separators, and lone surrogates (not encodable as UTF-8).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def clean(text: object) -> str:
    """Text from outside (job data, error messages, names in Redis) made safe for one line:
    the characters above are shown as escapes (`\\n`, `\\x1b`, `\\ud800`)."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), str(text))


def connected() -> None:
    say("Redis client connected to the server")


def not_connected(error: BaseException) -> None:
    """The original's line for a failed connection, with a hint where redis-py's words need one."""
    hint = ""
    if isinstance(error, InvalidResponse):
        hint = " (what answers at that address does not speak Redis)"
    elif isinstance(error, ResponseError) and str(error).startswith(_REFUSALS):
        hint = " (the database number in REDIS_URL does not exist on that server)"
    say(f"Redis client not connected to the server: {clean(error)}{hint}")


def sigterm_as_interrupt() -> None:
    """Let SIGTERM end a process the same quiet way Ctrl+C does.

    SIGINT is (re)armed too: a shell starts background jobs with it ignored,
    and `kill -INT` should still stop a lesson started with `&`.
    """
    ready_to_send_again()
    sys.unraisablehook = _unraisable
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """A Ctrl+C dropped where it landed, in a finalizer `_interrupt` cannot see (a weakref callback):
    it comes again. Anything else: Python's own report."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        send_again(signal.SIGINT)
        return
    sys.__unraisablehook__(unraisable)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Python's own Ctrl+C (KeyboardInterrupt where the main thread is), unless that is inside a finalizer.

    From Python 3.12 the cyclic garbage collector runs at the same checkpoint as signal handlers, so a
    signal often lands inside some object's `__del__` (redis-py's connection pools have one), where an
    exception is printed as "Exception ignored" and dropped: the lesson would go on as if never asked to
    stop. There the signal is handed to a thread that sends it again: it is handled at the next
    checkpoint, and once the finalizer has returned it ends the lesson.
    """
    if in_finalizer(frame):
        send_again(signum)
        return
    raise KeyboardInterrupt


def in_finalizer(frame: FrameType | None) -> bool:
    """Whether a signal handler called at `frame` runs inside an object's `__del__`, where what it
    raises would be dropped (see `_interrupt`)."""
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def ready_to_send_again() -> None:
    """Start this process's thread for `send_again` (call it before installing handlers that use it)."""
    _resend.start()


def send_again(signum: int) -> None:
    """From a signal handler that must not act where it runs (inside a finalizer): the signal comes
    again shortly, through `ready_to_send_again`'s thread."""
    _resend.signals.put(signum)  # SimpleQueue.put: safe in a signal handler, takes no Python lock


class _Resend:
    """The thread that sends a deferred signal again (one per process, idle until then)."""

    def __init__(self) -> None:
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.started_in: int | None = None  # the process it runs in (a forked child has no threads)

    def start(self) -> None:
        if self.started_in != os.getpid():
            self.started_in = os.getpid()
            threading.Thread(target=self.run, name="signal-resend", daemon=True).start()

    def run(self) -> None:
        while True:
            os.kill(os.getpid(), self.signals.get())


_resend = _Resend()


def arguments(
    doc: str | None,
    configure: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """A lesson's command line: `--help` prints its docstring (what it teaches, how to run it, what it
    prints) without touching Redis; an argument it does not know is refused (one line, exit 2)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if configure is not None:
        configure(parser)
        if parser.usage is None and not parser._subparsers:
            parser.usage = "%(prog)s [options]"  # one line: the options are listed below it (and by --help)
    return parser.parse_args(argv)


def run_lesson(main: Callable[[], object], *, interrupted_exit: int = 130) -> NoReturn:
    """Run a lesson's main and turn every way it can end into one line and an exit code:

    - a malformed setting (REDIS_URL without a scheme, PORT=abc, …): the setting and what is wrong, exit 2;
    - Redis unreachable, not a Redis, or refusing us (a one-shot lesson): `Redis client not connected to the
      server: …`, exit 1;
    - its output's reader gone (`| head -1`): quiet, exit 1;
    - Ctrl+C / SIGTERM: quiet. `interrupted_exit` is 130 (and `Interrupted` on stderr) for one-shot
      lessons, 0 for those whose Ctrl+C is the normal way out (servers, processors, a waiting creator);
    - anything unexpected: one line naming it, exit 1 (the traceback with QUEUING_DEBUG=1).
    """
    sigterm_as_interrupt()
    try:
        main()
    except ConfigError as error:
        print(error, file=sys.stderr, flush=True)
        sys.exit(2)
    except (*REDIS_DOWN, ResponseError) as error:
        # A reply that refuses the command itself is not a connection problem, but it ends a
        # lesson the same way: the server said no (to our keys, our password, our database).
        not_connected(error)
        sys.exit(1)
    except BrokenPipeError:
        # Whoever read our output has gone (`python 4_redis_advanced_op.py | head -1`): nothing more to
        # say, and no one to say it to. Python's own advice: stdout to /dev/null, so the flush at exit
        # does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except KeyboardInterrupt:
        if interrupted_exit:
            print("Interrupted", file=sys.stderr, flush=True)
        sys.exit(interrupted_exit)
    except Exception as error:
        if os.environ.get("QUEUING_DEBUG"):
            raise
        print(
            f"Unexpected error: {type(error).__name__}: {clean(error)} (QUEUING_DEBUG=1 shows where)",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    sys.exit(0)


# The longest a long-running process waits between two attempts to reach Redis.
BACKOFF_CAP = 5.0


def backoff(first: float = 0.1, cap: float = BACKOFF_CAP) -> Iterator[float]:
    """Seconds to wait between reconnection attempts: doubling, capped."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def print_reply(reply: object) -> None:
    """node_redis's `redis.print`: `Reply: OK` for a successful SET, `Reply: 1` for a new hash field."""
    say(f"Reply: {'OK' if reply is True else reply}")
