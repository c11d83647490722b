"""A creator's reading of its jobs as Redis stores them: their fields, and whose job each one is.

After Redis loses its data, job ids start again and a job 5 may be another creator run's: the
creation token in a job's meta tells (see `creation_lua`). Anything in Redis may have been written
by someone else, so a key of another type or a meta that does not read is an answer, not a crash.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import redis
from rq.job import Job
from rq.utils import as_text

from queuing_system.creation_lua import TOKEN_FIELD
from queuing_system.refusals import code_of


class _Unchecked(Enum):
    UNCHECKED = "unchecked"


# A job's stored creation token: the token, None (the job is not there, or cannot be read at all), or
# UNCHECKED: its meta is missing, unreadable or tokenless (someone else wrote it). Only another creator
# run's token says "not ours"; an unreadable meta says nothing of whose job it is.
UNCHECKED = _Unchecked.UNCHECKED
Stored = str | None | Literal[_Unchecked.UNCHECKED]


@dataclass(frozen=True)
class WrongType:
    """A job key someone else gave another type (`kind`, as TYPE answers): the job cannot be read."""

    kind: str


class StoredJobs:
    """Reads jobs' fields and creation tokens; says once per job when a token cannot be checked."""

    def __init__(self, connection: redis.Redis, serializer: Any) -> None:
        self._connection = connection
        self._serializer = serializer
        self._unchecked: set[str] = set()  # jobs whose stored token could not be checked (said once)

    def read(self, job_ids: list[str], *fields: str) -> list[Any]:
        """Each job's `fields` (HMGET), or, for a job whose key is not a hash, what it holds instead
        (a `WrongType`): one bad key someone else wrote is that job's problem, not all the others'.
        Any other error (Redis refusing, away) goes up as it would without a pipeline."""
        with self._connection.pipeline(transaction=False) as pipeline:
            for job_id in job_ids:
                pipeline.hmget(Job.key_for(job_id), *fields)
            rows = pipeline.execute(raise_on_error=False)
        wrong = [job_id for job_id, row in zip(job_ids, rows, strict=True) if isinstance(row, Exception)]
        for row in rows:
            if isinstance(row, Exception) and code_of(row) != "WRONGTYPE":
                raise row
        if not wrong:
            return [row[0] if len(fields) == 1 else row for row in rows]
        with self._connection.pipeline(transaction=False) as pipeline:
            for job_id in wrong:
                pipeline.type(Job.key_for(job_id))
            kinds = dict(zip(wrong, (as_text(kind) for kind in pipeline.execute()), strict=True))
        return [
            WrongType(kinds[job_id]) if job_id in kinds else (row[0] if len(fields) == 1 else row)
            for job_id, row in zip(job_ids, rows, strict=True)
        ]

    def token_in(self, job_id: str, meta: Any) -> Stored:
        """The creation token in a job's stored meta: None when there is no meta (nor job) to read;
        UNCHECKED, said once per job, when the meta is not readable or carries no token (someone else
        wrote it: it tells nothing of whose job it is)."""
        if not meta or isinstance(meta, WrongType):
            return None  # gone, or not a job at all (the caller says which)
        try:
            loaded = self._serializer.loads(meta)
        except Exception:
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get(TOKEN_FIELD), str):
            token: str = loaded[TOKEN_FIELD]
            return token
        if job_id not in self._unchecked:
            self._unchecked.add(job_id)
            why = "carries no creation token" if isinstance(loaded, dict) else "is not readable"
            print(
                f"Job {job_id}: its meta in Redis key {Job.key_for(job_id)} {why}, so whose job it is cannot be "
                "checked: followed by its id",
                file=sys.stderr,
                flush=True,
            )
        return UNCHECKED
