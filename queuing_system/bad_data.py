"""Data someone else wrote into Redis that a processor cannot use: job fields out of range, keys of the
wrong type. Such a job fails with its reason; such a key is named in one line and left alone."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping

import redis
from redis.exceptions import RedisError, ResponseError
from rq.job import Job
from rq.utils import as_text

from queuing_system.console import clean, say
from queuing_system.refusals import code_of
from queuing_system.steps import MOST_SECONDS, Problem

# Job fields RQ reads as whole seconds (RQ itself always stores them as whole numbers).
_SECONDS_FIELDS = (b"timeout", b"result_ttl", b"failure_ttl", b"ttl")
_WHOLE = re.compile(rb"-?\d+")
# How often a key that stays wrong is named again.
REPEAT_AFTER = 60.0


def bad_seconds_field(fields: Mapping[bytes, bytes]) -> str | None:
    """Why a job's timeout or TTLs cannot be used (not a whole number of seconds from -1 to the most
    Redis and alarms take), or None when they are fine (or absent, or '')."""
    for name in _SECONDS_FIELDS:
        raw = fields.get(name)
        if not raw:
            continue
        if not _WHOLE.fullmatch(raw) or not -1 <= int(raw) <= MOST_SECONDS:
            value = clean(raw.decode(errors="replace"))
            return f"its {name.decode()} {value!r} is not a whole number of seconds from -1 to {MOST_SECONDS}"
    return None


def bad_meta(job: Job) -> str | None:
    """Why a restored job's meta cannot be used (RQ keeps meta it cannot read as a placeholder that
    only survives being written back untouched, and every end adds to meta), or None when it is a
    JSON object."""
    if getattr(job, "_unreadable_meta", None) is not None:
        return "its meta is not JSON"
    if not isinstance(job.meta, dict):
        return "its meta is not a JSON object"
    return None


def wrong_types(connection: redis.Redis, wanted: Mapping[str, str]) -> list[Problem]:
    """The keys among `wanted` ({key: type}) that exist with another type."""
    with connection.pipeline(transaction=False) as pipeline:
        for key in wanted:
            pipeline.type(key)
        found = [as_text(kind) for kind in pipeline.execute()]
    return [
        Problem(key, kind, want)
        for (key, want), kind in zip(wanted.items(), found, strict=True)
        if kind not in ("none", want)
    ]


class BadKeys:
    """Says one line for each key of the wrong type: when first seen, again a minute later if it lasts.
    Shared by a processor's loop and steward (thread-safe)."""

    def __init__(self) -> None:
        self._said: dict[Problem, float] = {}
        self._lock = threading.Lock()

    def named(self, connection: redis.Redis, error: BaseException, wanted: Mapping[str, str]) -> bool:
        """For a WRONGTYPE that came without its key: the one(s) among `wanted` of the wrong type are
        named (True), as the steps name them; False when none is (or Redis cannot say)."""
        if not isinstance(error, ResponseError) or code_of(error) != "WRONGTYPE":
            return False
        try:
            problems = wrong_types(connection, wanted)
        except RedisError:
            return False
        self.report(problems)
        return bool(problems)

    def report(self, problems: Iterable[Problem]) -> None:
        now = time.monotonic()
        for problem in problems:
            with self._lock:
                if now - self._said.get(problem, -REPEAT_AFTER) < REPEAT_AFTER:
                    continue
                self._said[problem] = now
            say(
                f"Redis key {clean(problem.key)} holds a {problem.found}, not a {problem.wanted}: "
                "left alone (what needs it waits until it is fixed)"
            )
