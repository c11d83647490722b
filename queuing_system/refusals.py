"""Redis refusing a command (out of memory, busy, read-only…), told apart from Redis being away.

A refusal means nothing of the command ran: it is safe to send again once Redis accepts writes,
and a user is told what Redis said, not that the connection was lost.
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

from queuing_system.console import not_connected

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


# redis-py prefixes an error inside a pipeline with the command that caused it.
_PIPELINE_NOTE = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)


def refusal(error: BaseException) -> str | None:
    """What Redis said, when `error` is Redis refusing a write for now (out of memory, busy running a
    script, read-only, loading…); None for anything else."""
    said = _PIPELINE_NOTE.sub("", str(error))
    for kind, code in _REFUSAL_CODES.items():
        if isinstance(error, kind):
            return f"{code} {said}"
    if isinstance(error, ResponseError) and said.startswith(_UNCLASSED_REFUSALS):
        return said
    return None


def say_why_not_yet(error: BaseException, refused: str = "the write") -> None:
    """A failed attempt: what Redis refused (on stderr: it is not a lost connection), or the
    not-connected line (on stdout, as the original prints it)."""
    said = refusal(error)
    if said is None:
        not_connected(error)
    else:
        print(f"Redis refused {refused}: {said}", file=sys.stderr, flush=True)
