"""The two Redis steps that create jobs, each an atomic Lua script with one Python type that builds
its KEYS/ARGV and parses its reply.

Both can be repeated when their reply is lost (a timeout, a killed connection, a failover): a
creator run has a token, and each chunk of its jobs a name, so a repeat reserves no new ids and
writes no job twice. A job's token is kept in its meta (`creation_token`) and travels with its
events, so a creator never takes another's job for its own, even when ids repeat after data loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import redis
from redis.exceptions import NoScriptError

from queuing_system.replication import Confirmation

TOKEN_FIELD = "creation_token"  # the key in a job's meta
RECORD_TTL = 600  # seconds a repeat of a reservation is recognised by default (a retry comes within seconds)
MAX_CHUNK = 1000  # jobs per CREATE step: Lua's unpack() takes at most a few thousand values

# KEYS[1] the job-id counter          KEYS[2] this creator run's record (hash: chunk -> its first id)
# ARGV[1] the chunk's name (unique within the run)   ARGV[2] how many ids   ARGV[3] the record's ttl, s
# Returns the chunk's first id: its ids are first .. first + count - 1. A repeat returns the first
# run's answer and moves nothing, so the counter never skips ids because a reply was lost.
RESERVE = """
local counter_key, record_key = KEYS[1], KEYS[2]
local chunk, count, record_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local first = redis.call('HGET', record_key, chunk)
if first then
  return tonumber(first)
end
first = redis.call('INCRBY', counter_key, count) - count + 1
redis.call('HSET', record_key, chunk, first)
redis.call('EXPIRE', record_key, record_ttl)
return first
"""

# KEYS[1] where the jobs go: the queue (a list), or with a delay its scheduled registry (a zset)
# KEYS[2] RQ's set of queues          KEYS[3 ..] the jobs' hashes, in order
# ARGV[1] the creator run's token     ARGV[2] 'queue' | 'schedule'
# ARGV[3] the score when scheduling (unix seconds), else ''    ARGV[4] the queue's key (member of KEYS[2])
# ARGV[5] c, the number of values the shared fields take; ARGV[6 .. 5 + c] field, value, … (every job's)
# ARGV[6 + c] v, the number of fields that differ per job; then their v names;
# then for each job, in KEYS order: its id and its v values.
# Returns one number per job: 1 written now, 2 written before by this run (a repeat: left as it is),
# 0 the id belongs to another job, 3 not written because another id of the chunk was taken (with any
# 0, nothing at all is written).
CREATE = """
local target_key, queues_key = KEYS[1], KEYS[2]
local token, mode, score, queue_key = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local shared_count = tonumber(ARGV[5])
local shared = {unpack(ARGV, 6, 5 + shared_count)}
local varying_at = 6 + shared_count
local varying_count = tonumber(ARGV[varying_at])
local varying = {unpack(ARGV, varying_at + 1, varying_at + varying_count)}
local values_at = varying_at + varying_count + 1

local function ours(job_key)
  local meta = redis.call('HGET', job_key, 'meta')
  local ok, decoded = pcall(cjson.decode, meta or '')
  return ok and type(decoded) == 'table' and decoded.creation_token == token
end

-- A taken id means the counter is behind the jobs (it was lost): write none of the chunk, so the
-- caller reserves a fresh range for all of it and ids keep following the order of creation.
local outcomes, taken = {}, false
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    outcomes[#outcomes + 1] = 1
  elseif ours(KEYS[i]) then
    outcomes[#outcomes + 1] = 2
  else
    outcomes[#outcomes + 1] = 0
    taken = true
  end
end
if taken then
  for i, outcome in ipairs(outcomes) do
    if outcome == 1 then
      outcomes[i] = 3
    end
  end
  return outcomes
end

local written = {}
for i = 3, #KEYS do
  if outcomes[i - 2] == 1 then
    local at = values_at + (i - 3) * (varying_count + 1)
    local job_id = ARGV[at]
    local fields = {unpack(shared)}
    for j = 1, varying_count do
      fields[#fields + 1] = varying[j]
      fields[#fields + 1] = ARGV[at + j]
    end
    redis.call('HSET', KEYS[i], unpack(fields))
    if mode == 'schedule' then
      redis.call('ZADD', target_key, score, job_id)
    else
      written[#written + 1] = job_id
    end
  end
end
if #written > 0 then
  redis.call('RPUSH', target_key, unpack(written))
end
redis.call('SADD', queues_key, queue_key)
return outcomes
"""


def run_step(connection: redis.Redis, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run a script in one round trip (EVALSHA; loaded first only when Redis does not know it: a
    restarted or new primary has an empty script cache), on one connection of a non-transactional
    pipeline, so that a confirmation of replication can follow the write on that same connection."""
    sha = hashlib.sha1(source.encode()).hexdigest()
    confirmation = Confirmation.of(connection)  # with replicas: WAIT in the same round trip (else nothing)
    for attempt in (1, 2):
        try:
            return confirmation.write(connection, lambda pipeline: pipeline.evalsha(sha, len(keys), *keys, *args))[0]
        except NoScriptError:
            if attempt == 2:
                raise
        connection.script_load(source)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Reserve:
    """RESERVE's arguments."""

    counter_key: str
    record_key: str
    chunk: str
    count: int
    record_ttl: int = RECORD_TTL

    def keys(self) -> list[str]:
        return [self.counter_key, self.record_key]

    def args(self) -> list[str | int]:
        return [self.chunk, self.count, self.record_ttl]

    def run(self, connection: redis.Redis) -> list[str]:
        """The chunk's ids."""
        first = int(run_step(connection, RESERVE, self.keys(), self.args()))
        return [str(first + offset) for offset in range(self.count)]


class Outcome(IntEnum):
    TAKEN = 0  # another job has this id: nothing of the chunk written
    WRITTEN = 1
    WRITTEN_BEFORE = 2  # by an earlier attempt of the same run, whose reply was lost
    HELD_BACK = 3  # free, but not written: another id of the chunk was taken


@dataclass(frozen=True)
class Create:
    """CREATE's arguments: jobs that share `shared` fields and differ in `varying` ones."""

    target_key: str
    queues_key: str
    queue_key: str
    token: str
    shared: dict[str, Any]
    varying: Sequence[str]
    jobs: Sequence[tuple[str, str, Sequence[Any]]]  # (id, its hash key, its values of `varying`)
    scheduled_at: int | None = None  # unix seconds: into the scheduled registry, not the queue

    def keys(self) -> list[str]:
        return [self.target_key, self.queues_key, *(job_key for _, job_key, _ in self.jobs)]

    def args(self) -> list[Any]:
        shared = [item for pair in self.shared.items() for item in pair]
        args: list[Any] = [
            self.token,
            "queue" if self.scheduled_at is None else "schedule",
            "" if self.scheduled_at is None else self.scheduled_at,
            self.queue_key,
            len(shared),
            *shared,
            len(self.varying),
            *self.varying,
        ]
        for job_id, _, values in self.jobs:
            args.append(job_id)
            args.extend(values)
        return args

    def run(self, connection: redis.Redis) -> list[Outcome]:
        """One outcome per job, in order."""
        return [Outcome(int(outcome)) for outcome in run_step(connection, CREATE, self.keys(), self.args())]
