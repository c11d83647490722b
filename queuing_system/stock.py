"""Task 9's reservations in Redis: each one an atomic step that carries its own identity.

A reservation is two steps, each safe to repeat after a lost connection or a timeout:

1. `reserve`: takes a unit and records the reservation as *pending*, with a deadline;
2. `confirm`: marks it *confirmed* (only then does the server answer "Reservation confirmed").

With a Sentinel group, a `WAIT` for the replicas follows the confirmation. On a plain Redis there
is nothing to wait for between the two, and `reserve` records the reservation confirmed at once:
one step, one round trip, the same guarantees (a repeat does it once; an outcome that stays unknown
is given back).

Each step carries the reservation's id (a random token) and checks it, so a copy that arrives
twice (the first one still queued inside a stalled Redis, say) does what it does once. A
reservation whose outcome stayed unknown, or that was never confirmed (the server died, or
gave up and answered 503 "try again"), is given back by the next reservation of that product
once its deadline has passed; `cancel` gives one back at once: a confirmation whose reply was
lost, which nobody heard (`reserve_one` does it, and keeps trying on later reservations).
Each step is one command on the caller's connection, so a replication check (`WAIT`) can
follow it there.

Data loss is noticed: `initialise` creates every product's reserved count once, when this
server first reaches Redis; from then on a missing count means Redis lost what was sold (an
empty Redis, a FLUSHALL), and the steps answer LOST rather than sell it again, until an
operator resets the stock (`reset`, the server's `--reset`).
"""

from __future__ import annotations

import collections
import functools
import secrets
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from queuing_system.console import REDIS_DOWN
from queuing_system.keys import STOCK_PENDING, STOCK_RECORDS, STOCK_RESERVED
from queuing_system.replication import Confirmation
from queuing_system.settings import env_int
from queuing_system.web import idempotent

# How long a confirmation (or the give-back of one nobody heard) is repeated before the server
# gives up on it for this request: the unit must end up either confirmed to someone or on sale.
SETTLE_PATIENCE = 5.0


def pending_ms() -> int:
    """How long a pending reservation holds its unit before it may go back on sale (ms;
    QUEUING_RESERVATION_HOLD_MS, 100 to 3600000, default 30000). A server confirms within a
    few seconds; a confirmation that comes later finds the unit given back (RELEASED)."""
    return env_int("QUEUING_RESERVATION_HOLD_MS", 30_000, 100, 3_600_000)


# Reserve one unit for a reservation, at most once however many copies of this step arrive.
# KEYS[1] item.<id>: units reserved (pending or confirmed); missing = Redis lost what was sold
# KEYS[2] item.<id>.reservations: hash, reservation id -> 'pending' | 'confirmed'
# KEYS[3] item.<id>.pending: sorted set, pending reservation id -> deadline (ms, Redis's clock)
# ARGV: the product's initial stock, the reservation id, how long it may stay pending (ms), and the
#       state to record: 'pending' (a second step confirms it) or 'confirmed' (this step does)
# Returns the state recorded ('pending': the unit is held; 'confirmed'), the state of a repeat,
# 'sold_out' or 'lost'.
RESERVE = """
local reserved_key, records, pending = KEYS[1], KEYS[2], KEYS[3]
local stock, id, pending_ms, record_as = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local reserved = redis.call('GET', reserved_key)
if not reserved then
  return 'lost'
end
local state = redis.call('HGET', records, id)
if state then
  return state
end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
reserved = tonumber(reserved)
for _, expired in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', now)) do
  redis.call('HDEL', records, expired)
  redis.call('ZREM', pending, expired)
  reserved = redis.call('DECR', reserved_key)
end
if reserved >= stock then
  return 'sold_out'
end
redis.call('INCR', reserved_key)
redis.call('HSET', records, id, record_as)
if record_as == 'pending' then
  redis.call('ZADD', pending, now + pending_ms, id)
end
return record_as
"""

# Confirm a pending reservation (a repeat changes nothing).
# KEYS[1] item.<id>.reservations   KEYS[2] item.<id>.pending
# ARGV: the reservation id
# Returns 'confirmed', or 'released' when it is no longer held (given back, or Redis lost it).
CONFIRM = """
local records, pending = KEYS[1], KEYS[2]
local id = ARGV[1]
local state = redis.call('HGET', records, id)
if state == 'pending' then
  redis.call('HSET', records, id, 'confirmed')
  redis.call('ZREM', pending, id)
  return 'confirmed'
end
return state or 'released'
"""

# Give a reservation's unit back, pending or confirmed (a repeat changes nothing).
# KEYS[1] item.<id>   KEYS[2] item.<id>.reservations   KEYS[3] item.<id>.pending
# ARGV: the reservation id
# Returns 'released'.
CANCEL = """
local reserved_key, records, pending = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
if redis.call('HDEL', records, id) == 1 then
  redis.call('ZREM', pending, id)
  if redis.call('EXISTS', reserved_key) == 1 then
    redis.call('DECR', reserved_key)
  end
end
return 'released'
"""


class Outcome(str, Enum):
    """What a step found or did (the scripts' replies)."""

    PENDING = "pending"
    CONFIRMED = "confirmed"
    SOLD_OUT = "sold_out"
    LOST = "lost"
    RELEASED = "released"


def new_reservation_id() -> str:
    return secrets.token_hex(12)


class StockReservations:
    """The steps above on `client` (each call one command on the caller's connection)."""

    def __init__(self, client: redis.Redis, hold_ms: int | None = None) -> None:
        self._client = client
        self._pending_ms = pending_ms() if hold_ms is None else hold_ms
        self._unheard: collections.deque[tuple[int, str]] = collections.deque()  # confirmations to give back
        # The hot steps (a count read, a reservation) as one command on the caller's connection, the
        # cheapest way the client has (a server's PerThreadClient: web.py), else as any command.
        self._command: Callable[..., Any] = getattr(client, "one_command", None) or client.execute_command
        self._reserve = client.register_script(RESERVE)
        self._confirm = client.register_script(CONFIRM)
        self._cancel = client.register_script(CANCEL)
        # Confirm and cancel answer only once replicated (with a Sentinel group; nothing otherwise):
        # a confirmation a failover could take back would sell the unit again.
        self._replicated = Confirmation.of(client)

    @staticmethod
    def _keys(item_id: int) -> list[str]:
        return [
            STOCK_RESERVED.format(item_id=item_id),
            STOCK_RECORDS.format(item_id=item_id),
            STOCK_PENDING.format(item_id=item_id),
        ]

    def reserve(self, item_id: int, stock: int, reservation_id: str, *, confirmed: bool = False) -> Outcome:
        record_as = Outcome.CONFIRMED if confirmed else Outcome.PENDING
        args: list[int | str] = [stock, reservation_id, self._pending_ms, record_as.value]
        return Outcome(_text(self._run(self._reserve, self._keys(item_id), args)))

    def _run(self, script: Script, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        """`script` as one EVALSHA, as `Script.__call__` runs it: loaded first if Redis lacks it (after a
        restart): a NOSCRIPT reply means nothing ran, so the step is sent again."""
        try:
            return self._command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.sha = self._client.script_load(script.script)
            return self._command("EVALSHA", script.sha, len(keys), *keys, *args)

    def confirm(self, item_id: int, reservation_id: str) -> Outcome:
        keys = self._keys(item_id)[1:]
        return Outcome(_text(self._replicated.run(self._client, lambda on: self._confirm(keys, [reservation_id], on))))

    def cancel(self, item_id: int, reservation_id: str) -> Outcome:
        keys = self._keys(item_id)
        return Outcome(_text(self._replicated.run(self._client, lambda on: self._cancel(keys, [reservation_id], on))))

    def reserve_one(self, item_id: int, stock: int) -> Outcome:
        """A whole reservation: reserve, then confirm, each repeated safely after a lost connection or a
        timeout. CONFIRMED only once the confirmation is known to have landed; when it cannot be known,
        the reservation is given back (now, or by a later call) and the error raised: the client hears
        "try again", and the unit is not sold to nobody."""
        reservation = new_reservation_id()
        if not self._replicated.needed():
            return self._reserve_confirmed(item_id, stock, reservation)
        self._give_back_unheard()
        outcome = idempotent(lambda: self.reserve(item_id, stock, reservation))
        if outcome is not Outcome.PENDING:
            return outcome
        try:
            return idempotent(lambda: self.confirm(item_id, reservation), patience=SETTLE_PATIENCE)
        except REDIS_DOWN:
            self._unheard.append((item_id, reservation))
            self._give_back_unheard()
            raise

    def _reserve_confirmed(self, item_id: int, stock: int, reservation: str) -> Outcome:
        """With no replica to wait for between the steps, both in one: reserved and confirmed in one
        round trip. Its outcome unknown after the repeats, it is given back before the error is raised,
        as a confirmation nobody heard; when no copy of it could have been sent (Redis refused the
        connection), there is nothing to give back and the client hears "try again" at once."""
        self._give_back_unheard(patience=0.0)  # others' (tried once here, so an outage costs a moment)
        sent = False

        def step() -> Outcome:
            nonlocal sent
            connection = getattr(self._client, "connection", None)  # a client of one connection: connected first
            if connection is not None and not connection.is_connected:
                connection.connect()
            sent = True
            return self.reserve(item_id, stock, reservation, confirmed=True)

        try:
            return idempotent(step)
        except REDIS_DOWN:
            if sent:
                self._unheard.append((item_id, reservation))
                self._give_back_unheard()
            raise

    def _give_back_unheard(self, patience: float = SETTLE_PATIENCE) -> None:
        while self._unheard:
            try:
                item_id, reservation = self._unheard.popleft()
            except IndexError:  # another request thread took the last one
                return
            try:
                idempotent(functools.partial(self.cancel, item_id, reservation), patience=patience)
            except REDIS_DOWN:
                self._unheard.appendleft((item_id, reservation))  # the next reservation tries again
                return

    def reserved(self, item_id: int) -> int | None:
        """Units reserved (pending or confirmed), or None when Redis lost the count."""
        value = self._command("GET", STOCK_RESERVED.format(item_id=item_id))
        return None if value is None else int(value)

    def initialise(self, item_ids: Iterable[int]) -> None:
        """A count of 0 for every product that has none: the first start on this Redis. Safe to repeat."""
        with self._client.pipeline(transaction=False) as pipeline:
            for item_id in item_ids:
                pipeline.set(STOCK_RESERVED.format(item_id=item_id), 0, nx=True)
            pipeline.execute()

    def reset(self, item_ids: Iterable[int]) -> None:
        """Everything on sale again, no reservation known (the operator's `--reset`). Safe to repeat."""
        with self._client.pipeline(transaction=True) as pipeline:
            for item_id in item_ids:
                reserved, records, pending = self._keys(item_id)
                pipeline.set(reserved, 0)
                pipeline.delete(records, pending)
            pipeline.execute()


def _text(reply: object) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)
