"""How the lessons talk to the learner: flushed lines, one-line errors, clean Ctrl+C."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable, Iterator

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What a lost connection looks like from redis-py.
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


def say(line: object) -> None:
    """`console.log`: one line on stdout, flushed (a learner watches two terminals).

    Line and newline go out in one write: processes sharing a terminal or pipe
    (task 7's two workers) then never splice their lines together; `print()`
    may write the text and the newline separately.
    """
    sys.stdout.write(f"{line}\n")
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
    say(f"Redis client not connected to the server: {error}")


def sigterm_as_interrupt() -> None:
    """Let SIGTERM end a process the same quiet way Ctrl+C does.

    SIGINT is (re)armed too: a shell starts background jobs with it ignored,
    and `kill -INT` should still stop a lesson started with `&`.
    """
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_once(main: Callable[[], None], *, interrupted_exit: int = 130) -> None:
    """Run a one-shot lesson: Redis down is one line and exit 1, Ctrl+C no traceback.

    A script whose Ctrl+C is the normal way to leave (a creator waiting for
    its jobs) passes `interrupted_exit=0` and leaves silently.
    """
    sigterm_as_interrupt()
    try:
        main()
    except REDIS_DOWN as error:
        not_connected(error)
        sys.exit(1)
    except KeyboardInterrupt:
        if interrupted_exit:
            print("Interrupted", file=sys.stderr, flush=True)
        sys.exit(interrupted_exit)


def backoff(first: float = 0.1, cap: float = 5.0) -> Iterator[float]:
    """Seconds to wait between reconnection attempts: doubling, capped."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, cap)


def print_reply(reply: object) -> None:
    """node_redis's `redis.print`: `Reply: OK` for a successful SET, `Reply: 1` for a new hash field."""
    say(f"Reply: {'OK' if reply is True else reply}")
