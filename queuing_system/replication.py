"""Acknowledged means replicated: a write, then `WAIT <replicas> <timeout>` on the same connection.

Sentinel alone loses acknowledged writes: an old primary that is still reachable keeps accepting
writes for seconds after a replica was promoted, and a primary that dies takes with it what its
replicas had not copied yet. A write is therefore reported as done only once every replica the
group has confirmed it (`WAIT` answers how many did; WAIT is refused inside Lua, so it follows the
write in the same pipeline: one round trip, the same connection, and no reconnect in between, which
would make WAIT count the replicas of a connection that wrote nothing).

With fewer confirmations than asked the write is Unconfirmed: it may still land or may be lost, so
the caller must repeat it only in a form that is harmless twice (a job id, a reservation id the Lua
step checks) or tell the user it could not be confirmed. With a plain redis:// URL nothing is asked
and nothing is sent: no WAIT, no cost.

Settings (read when a Confirmation is made for a client):
  QUEUING_CONFIRM_REPLICAS    replicas that must confirm (0-64); default: with a redis+sentinel://
                              URL, the replicas in sync with the primary as Sentinel reports them,
                              at least one (sentinel_client.ReplicaCount); with a plain URL, 0
  QUEUING_CONFIRM_TIMEOUT_MS  how long WAIT waits for them (10-60000, default 1000)
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.client import Pipeline

from queuing_system.sentinel_client import group_of, replicas_to_confirm
from queuing_system.settings import env_int

T = TypeVar("T")
DEFAULT_TIMEOUT_MS = 1000
# INCRed just before each WAIT. WAIT waits for the offset of this connection's last write that was
# replicated; a step repeated after an unconfirmed try often writes nothing (it finds itself done),
# so without a write of its own the WAIT would count from an older offset (or none, on a new
# connection) and confirm at once what the first try wrote and no replica may have yet.
MARK_KEY = "queuing:replication-mark"


_MADE: weakref.WeakKeyDictionary[object, Confirmation] = weakref.WeakKeyDictionary()


class Unconfirmed(redis.exceptions.ConnectionError):
    """Fewer replicas confirmed a write than asked: its outcome is unknown (repeat it idempotently).
    A ConnectionError, so every path that rides out an unreachable Redis (503 JSON, a creator's
    retry of the same job ids, a processor's backoff) treats it the same way."""


class Confirmation:
    """What a write must wait for: `replicas` (a number, or asked anew for each write) within `timeout_ms`."""

    def __init__(self, replicas: int | Callable[[], int] = 0, timeout_ms: int = DEFAULT_TIMEOUT_MS) -> None:
        self._replicas = replicas
        self.timeout_ms = timeout_ms

    def __repr__(self) -> str:
        return f"Confirmation(replicas={self._replicas!r}, timeout_ms={self.timeout_ms})"

    @classmethod
    def for_client(cls, client: redis.Redis) -> Confirmation:
        """What a write through `client` needs: QUEUING_CONFIRM_REPLICAS if set; else, on a Sentinel
        group, the replicas in sync with the primary as Sentinel reports them now (see
        sentinel_client.ReplicaCount: asked at most once a second); on a plain Redis, nothing."""
        timeout = env_int("QUEUING_CONFIRM_TIMEOUT_MS", DEFAULT_TIMEOUT_MS, 10, 60000)
        if os.environ.get("QUEUING_CONFIRM_REPLICAS", "").strip():
            return cls(env_int("QUEUING_CONFIRM_REPLICAS", 0, 0, 64), timeout)
        if group_of(client) is None:
            return cls(0, timeout)
        return cls(lambda: replicas_to_confirm(client), timeout)

    @classmethod
    def of(cls, client: redis.Redis) -> Confirmation:
        """`for_client(client)`, made once per connection pool (the settings are read once)."""
        pool = client.connection_pool
        made = _MADE.get(pool)
        if made is None:
            made = _MADE.setdefault(pool, cls.for_client(client))
        return made

    def needed(self) -> int:
        """Replicas that must confirm a write made now (0: no WAIT is sent)."""
        return self._replicas() if callable(self._replicas) else self._replicas

    def write(self, client: redis.Redis, commands: Callable[[Pipeline], object]) -> list[Any]:
        """Run `commands(pipeline)` (queue the write on the pipeline), then WAIT, in one round trip on
        one connection; the write's replies, or Unconfirmed. The write should be one step (a Lua
        script, or commands each safe to repeat): a pipeline is not a transaction."""
        needed = self.needed()  # before the write: counted for the primary it will go to (or older: more)
        with client.pipeline(transaction=False) as pipeline:
            commands(pipeline)
            if needed:
                pipeline.incr(MARK_KEY)
                pipeline.execute_command("WAIT", needed, self.timeout_ms)
            replies = pipeline.execute()
        if needed:
            self.check(int(replies[-1]), needed)
            del replies[-2:]
        return replies

    def run(self, client: Any, step: Callable[[Any], T]) -> T:
        """`step(client)`, one command or script call, confirmed: with replicas to wait for, it runs on
        a pipeline followed by WAIT (its reply, or Unconfirmed); without, it is called as it is (no
        pipeline, no extra connection: a plain Redis costs what it cost)."""
        if not self.needed():
            return step(client)
        replies = self.write(client, step)
        return replies[0]  # type: ignore[no-any-return]

    def confirm(self, execute: Callable[..., Any]) -> None:
        """Confirm the writes made so far through `execute`, which runs one command on one connection
        used in order (the processor's line); Unconfirmed if too few replicas have them. A connection
        never moves to another server under its caller (connection_policy), so WAIT runs where they ran."""
        needed = self.needed()
        if needed:
            execute("INCR", MARK_KEY)
            self.check(int(execute("WAIT", needed, self.timeout_ms)), needed)

    def check(self, confirmed: int, needed: int) -> None:
        """Unconfirmed unless `confirmed` (WAIT's answer) reaches `needed`."""
        if confirmed < needed:
            raise Unconfirmed(
                f"the write is not confirmed: {confirmed} of {needed} replicas within {self.timeout_ms} ms "
                "(a failover may be under way; it may or may not have been kept)"
            )
