"""One typed contract per Lua step of the processor: a dataclass builds the step's KEYS and ARGV,
and parses its reply (an Enum for outcomes). The processor and the tests use these, nothing else
spells a step's arguments. The scripts themselves, with their KEYS/ARGV/reply, are in processor_lua.py.

`LuaScript` is the one script loader: EVALSHA, and on NOSCRIPT (a restarted Redis forgot it,
nothing ran) load it and run it again. It runs on anything that executes a command: a client's
`execute_command`, or the processor's ordered connection (`OrderedConnection.call`).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from redis.exceptions import NoScriptError
from rq.defaults import DEFAULT_RESULT_TTL, DEFAULT_WORKER_TTL
from rq.utils import as_text

from queuing_system import keys, processor_lua
from queuing_system.keys import JOB_EVENTS_CHANNEL
from queuing_system.rq_keys import RQ
from queuing_system.stamps import utc_text

# Seconds RQ's SimpleWorker adds to a job's timeout for its heartbeat TTL (get_heartbeat_ttl: timeout + 60).
HEARTBEAT_GRACE = 60
# The most seconds a job's timeout or TTLs may say (about 31 years): beyond, EXPIRE and alarms refuse them.
MOST_SECONDS = 10**9

Execute = Callable[..., Any]  # runs one Redis command: execute("EVALSHA", sha, ...) -> reply
Arg = str | int | float


class LuaScript:
    """A script run by its SHA, loaded when Redis does not know it yet."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, execute: Execute, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        try:
            return execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            execute("SCRIPT", "LOAD", self.source)
            return execute("EVALSHA", self.sha, len(keys), *keys, *args)


_ADVANCE = LuaScript(processor_lua.ADVANCE)
_STILL_MINE = LuaScript(processor_lua.STILL_MINE)
_GIVE_BACK = LuaScript(processor_lua.GIVE_BACK)
_RECOVER = LuaScript(processor_lua.RECOVER)


class SettleMode(str, Enum):
    FINISHED = "finished"  # record the success in the step itself
    RELEASED = "released"  # RQ already recorded the end: release the job and announce it


class Settled(str, Enum):
    """What ADVANCE did with the job it was asked to settle."""

    NOTHING = ""  # nothing to settle
    OK = "ok"  # settled (or found settled: a step whose reply was lost had done it)
    LOST = "lost"  # no longer this worker's (its lease lapsed, a sweep took it): nothing written
    RQ = "rq"  # left to RQ's own code (dependents, or no result kept): nothing done at all
    NO_WORKER = "no worker"  # this worker's key is gone (presumed dead): nothing done at all


_SETTLED = {key: settled for settled in Settled for key in (settled.value, settled.value.encode())}


@dataclass(frozen=True)
class Problem:
    """A key someone else gave the wrong type: a step left it alone (and says what it did instead)."""

    key: str
    found: str
    wanted: str


def _problems(flat: list[Any]) -> list[Problem]:
    return [
        Problem(as_text(k), as_text(f), as_text(w)) for k, f, w in zip(flat[::3], flat[1::3], flat[2::3], strict=True)
    ]


@dataclass(slots=True)  # (not frozen: a frozen dataclass costs five times as much to make, once per job)
class Settlement:
    """The job to settle in an ADVANCE step."""

    mode: SettleMode
    job_id: str
    execution_id: str
    started_at: datetime
    ended_at: datetime
    return_value: str = ""  # base64 of the serialized value, as RQ's Result stores it ('' for None)
    event: str = ""  # the job event to publish once settled ('' for none)
    held_event: str = ""  # the event the processor publishes itself once the end is replicated (not an ARGV)

    def args(self) -> list[Arg]:
        return [
            self.mode.value,
            self.job_id,
            self.execution_id,
            repr(self.started_at.timestamp()),
            utc_text(self.ended_at),
            repr(self.ended_at.timestamp()),
            self.return_value,
            self.event,
        ]


@dataclass(slots=True)
class Started:
    """The job an ADVANCE step started (or found started by a step whose reply was lost)."""

    job_id: str
    execution_id: str
    fields: dict[bytes, bytes]


@dataclass(slots=True)
class AdvanceReply:
    settled: Settled
    started: Started | None
    problems: list[Problem] = field(default_factory=list)
    left: int = 0  # jobs still queued after this step claimed (0 when it claimed none)


@dataclass(slots=True)
class Advance:
    """Settle the last job, claim a fair share when holding none, start the next claimed job."""

    worker: str
    lease: int
    queues: Sequence[str]  # served first to last; the first one's listeners divide the backlog
    now: datetime
    execution_id: str  # for the job this step starts
    default_timeout: int  # for a job that names none
    claim: int = 0  # claim up to this many when holding none (0: claim nothing)
    start: bool = True
    settle: Settlement | None = None

    def keys(self) -> list[str]:
        return list(_advance_keys(self.worker, tuple(self.queues)))

    def args(self) -> list[Arg]:
        settle = self.settle.args() if self.settle is not None else _NOTHING_TO_SETTLE
        return [
            self.worker,
            self.lease,
            utc_text(self.now),
            repr(self.now.timestamp()),
            *settle,
            JOB_EVENTS_CHANNEL,
            self.claim,
            "1" if self.start else "0",
            self.execution_id,
            self.default_timeout,
            *_ADVANCE_CONSTANTS,
        ]

    @staticmethod
    def parse(reply: list[Any]) -> AdvanceReply:
        settled = _SETTLED[reply[0]]
        problems = _problems(reply[4]) if len(reply) > 4 else []
        left = int(reply[5]) if len(reply) > 5 else 0
        if settled is Settled.NO_WORKER or not reply[1]:
            return AdvanceReply(settled, None, problems, left)
        flat = reply[2]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return AdvanceReply(settled, Started(as_text(reply[1]), as_text(reply[3]), fields), problems, left)

    def run(self, execute: Execute) -> AdvanceReply:
        return self.parse(_ADVANCE(execute, _advance_keys(self.worker, tuple(self.queues)), self.args()))


# Built once per worker (a step runs once per job): its keys, and the arguments that never change.
@functools.lru_cache(maxsize=256)
def _advance_keys(worker: str, queues: tuple[str, ...]) -> tuple[str, ...]:
    return (
        RQ.worker(worker),
        RQ.worker_executions(worker),
        keys.running_key(worker),
        keys.claimed_key(worker),
        RQ.workers_of(queues[0]),
        *(RQ.queue(name) for name in queues),
    )


_NOTHING_TO_SETTLE: tuple[Arg, ...] = ("",) * 8
_ADVANCE_CONSTANTS: tuple[Arg, ...] = (
    RQ.job_prefix,
    RQ.wip_prefix,
    RQ.finished_prefix,
    RQ.execution_prefix,
    RQ.executions_prefix,
    RQ.results_prefix,
    DEFAULT_RESULT_TTL,
    HEARTBEAT_GRACE,
    DEFAULT_WORKER_TTL,
    MOST_SECONDS,
)


@dataclass(frozen=True)
class StillMine:
    """Is the job in hand still this worker's? Re-arms the lease when it is."""

    worker: str
    lease: int
    execution_ref: str  # "<job id>:<execution id>"

    def run(self, execute: Execute) -> bool:
        keys_ = [keys.running_key(self.worker), RQ.worker(self.worker)]
        return bool(_STILL_MINE(execute, keys_, [self.execution_ref, self.lease]))


@dataclass(frozen=True)
class GiveBack:
    """Every claimed, unstarted job back to the front of its queue, in order; returns how many, and the
    keys it left alone (a job key that is not a hash: dropped; a queue of the wrong type: kept claimed)."""

    worker: str

    def run(self, execute: Execute) -> tuple[int, list[Problem]]:
        given, problems = _GIVE_BACK(execute, [keys.claimed_key(self.worker)], [RQ.job_prefix, RQ.queue_prefix])
        return int(given), _problems(problems)


@dataclass(frozen=True)
class Recovered:
    """A dead worker whose claims a sweep gave back; `running` is its job in hand ('' for none)."""

    worker: str
    running: str


@dataclass(frozen=True)
class Recover:
    """The sweep for dead workers (any worker's, on any queue; locks freed on `queues`)."""

    queues: Sequence[str]
    sweeper: str = ""  # the worker sweeping: never swept by itself

    def keys(self) -> list[str]:
        return [keys.CLAIMERS, *(RQ.scheduler_lock(name) for name in self.queues)]

    def args(self) -> list[Arg]:
        prefixes = [RQ.worker_prefix, keys.CLAIMED_PREFIX, keys.RUNNING_PREFIX, RQ.job_prefix, RQ.queue_prefix]
        return [*prefixes, self.sweeper]

    @staticmethod
    def parse(reply: list[Any]) -> tuple[list[Recovered], list[Problem]]:
        flat, problems = reply
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [Recovered(as_text(name), as_text(running)) for name, running in pairs], _problems(problems)

    def run(self, execute: Execute) -> tuple[list[Recovered], list[Problem]]:
        return self.parse(_RECOVER(execute, self.keys(), self.args()))


@dataclass(frozen=True)
class KeepAlive:
    """Re-arm a worker's lease if its key still exists; False when it is gone. One plain EXPIRE (it needs
    no script: an idle processor's leases are most of what it costs Redis)."""

    worker: str
    lease: int

    def run(self, execute: Execute) -> bool:
        return bool(execute("EXPIRE", RQ.worker(self.worker), self.lease))
