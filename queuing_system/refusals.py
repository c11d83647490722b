"""Redis refusing a command (out of memory, busy, read-only…), told apart from Redis being away.

A refusal means nothing of the command ran: it is safe to send again once Redis accepts writes,
and a user is told what Redis said, not that the connection was lost. The one place that says
what an error reply is: `refusal` (a refusal to wait out, or None), `said` (Redis's words, code
first), `in_words` (a few words for an HTTP answer); whether an error means "not connected" at
all is `console.means_not_connected`.
"""

from __future__ import annotations

import re
import sys

from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from queuing_system.console import clean, not_connected

# Error replies that refuse a command as a whole (nothing of it ran): worth waiting out. redis-py
# strips the code from the replies it has a class for; `refusal` puts it back.
_REFUSAL_CODES = {
    OutOfMemoryError: "OOM",
    ReadOnlyError: "READONLY",
    BusyLoadingError: "LOADING",
    TryAgainError: "TRYAGAIN",
    MasterDownError: "MASTERDOWN",
    ClusterDownError: "CLUSTERDOWN",
}
_UNCLASSED_REFUSALS = ("BUSY ", "NOREPLICAS ", "MASTERDOWN ", "LOADING ", "READONLY ", "OOM ")


# redis-py prefixes an error inside a pipeline with the command that caused it (cut at 100 characters,
# so it may not even name the key); Redis ends an error raised in a Lua script with where it was.
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)
_SCRIPT_NOTE = re.compile(r"\s*script: (?:[0-9a-f]{40}, )?on @user_script:\d+\.?\s*$")
# Redis 6.2 wraps an error raised inside a script (Redis 7 and Valkey pass it on, with _SCRIPT_NOTE).
_SCRIPT_WRAPPER = re.compile(r"^(?:ERR )?Error running script \(call to f_[0-9a-f]{40}\): @\w+:\d+: (?:@\w+: \d+: )?-?")


def _reply(error: BaseException) -> str:
    """The error reply's own words: without redis-py's pipeline note, nor Redis 6.2's script wrapper."""
    return _SCRIPT_WRAPPER.sub("", _PIPELINE_NOTE.sub("", str(error)))


# What an error reply means, in a few words, by its code (servers answer them in their JSON 503s).
_IN_WORDS = {
    "OOM": "out of memory",
    "BUSY": "busy running a script",
    "READONLY": "read-only (a replica)",
    "MASTERDOWN": "cut off from its primary",
    "NOREPLICAS": "short of replicas",
    "MISCONF": "unable to save to disk",
    "WRONGTYPE": "a key holds another kind of value",
}


def code_of(error: BaseException) -> str:
    """The code of an error reply (`OOM`): redis-py keeps it aside for the replies it has a class
    for, and leaves it at the start of the text of the others."""
    if _SCRIPT_WRAPPER.match(_PIPELINE_NOTE.sub("", str(error))):
        return _reply(error).split(" ", 1)[0]  # Redis 6.2: the script's error, wrapped in an ERR
    code = getattr(error, "status_code", None)
    if code:
        return str(code)
    for kind, known in _REFUSAL_CODES.items():
        if isinstance(error, kind):
            return known
    return _reply(error).split(" ", 1)[0]


def said(error: BaseException) -> str:
    """What Redis said, code first (`OOM command not allowed …`), without redis-py's pipeline note
    nor the script location Redis adds, on one line."""
    text = _SCRIPT_NOTE.sub("", _reply(error))
    code = code_of(error)
    return clean(text if text.startswith(code) else f"{code} {text}")


def wrong_type(key: str, found: str, wanted: str) -> str:
    """One key someone else gave another type, in words: `Redis key K holds a string, not a list`
    (what a user can fix, where redis-py only says WRONGTYPE)."""
    return f"Redis key {clean(key)} holds a {found}, not a {wanted}"


def in_words(error: BaseException) -> str:
    """`out of memory`, or what Redis said when it is not one of the common refusals."""
    return _IN_WORDS.get(code_of(error)) or said(error)


def refusal(error: BaseException) -> str | None:
    """What Redis said, when `error` is Redis refusing a write for now (out of memory, busy running a
    script, read-only, loading…); None for anything else."""
    if isinstance(error, tuple(_REFUSAL_CODES)):
        return said(error)
    if isinstance(error, ResponseError) and _reply(error).startswith(_UNCLASSED_REFUSALS):
        return said(error)
    return None


def say_why_not_yet(error: BaseException, refused: str = "the write") -> None:
    """A failed attempt: what Redis refused (on stderr: it is not a lost connection), or the
    not-connected line (on stdout, as the original prints it)."""
    said = refusal(error)
    if said is None:
        not_connected(error)
    else:
        print(f"Redis refused {refused}: {said}", file=sys.stderr, flush=True)
