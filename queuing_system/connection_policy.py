"""How every connection the port makes behaves when Redis goes away or a Sentinel group fails over.

Two rules, for every client `settings.connect()` makes:

* Connecting is retried (a few quick attempts with backoff: nothing has been sent yet, so it is
  always safe); a command is never re-sent. redis-py's `Retry` re-sends a command (or a whole
  MULTI) on a new connection after a timeout while the first copy may still run: a write whose
  outcome is unknown surfaces as ConnectionError/TimeoutError, and the caller repeats it only if
  the write carries an identity that makes the repeat harmless (a job id, a reservation id).
* With a Sentinel group, a connection goes wherever the sentinels say the primary is: every
  (re)connect asks them (redis-py reconnects a dropped connection to its old address, redis-py
  #3874), and a connection in use checks about once a second that its server is still the one the
  sentinels name (an old primary stays writable for seconds before Sentinel demotes it, and
  redis-py only asks Sentinel when it opens a connection). When it is not, the command fails
  unsent (PrimaryMoved, a ConnectionError) and the next one goes to the new primary: a connection
  never changes server under its caller, so a WAIT always runs where the write it confirms ran.
  `READONLY` drops the connection too (redis-py's SentinelManagedConnection does that).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.retry import Retry

PRIMARY_CHECK_INTERVAL = 1.0  # s between "is my server still the primary?" checks of a busy pool
SENTINEL_TIMEOUT = 1.0  # s for a sentinel's answer: three are asked in turn, the group is local to its clients


def no_resend() -> Retry:
    """The `retry` of every connection: redis-py uses it to re-send commands, so: never."""
    return Retry(NoBackoff(), 0)


def no_resend_async() -> AsyncRetry:
    return AsyncRetry(NoBackoff(), 0)


def _connect_attempts(retries: int) -> Retry:
    return Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries)


class _Reconnecting:
    """Mixin for a redis-py Connection: `connect_retries` extra attempts to connect (safe)."""

    connect_retries = 2

    def connect(self) -> None:
        this: Any = self
        _connect_attempts(self.connect_retries).call_with_retry(
            lambda: this.connect_check_health(check_health=True, retry_socket_connect=False),
            lambda error: this.disconnect(error),
        )


class _AsyncReconnecting:
    connect_retries = 2

    async def connect(self) -> None:
        this: Any = self
        await AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), self.connect_retries).call_with_retry(
            lambda: this.connect_check_health(check_health=True, retry_socket_connect=False),
            lambda error: this.disconnect(),
        )


_RECONNECTING: dict[tuple[type, int], type] = {}


def reconnecting(base: type, retries: int) -> type:
    """`base` (a redis-py connection class) that retries connecting `retries` times (one class per
    pair: redis-py compares connection classes, e.g. url_of's TLS and socket checks)."""
    made = _RECONNECTING.get((base, retries))
    if made is None:
        if hasattr(base, "connect_retries"):  # ours already: only the count changes
            made = type(base.__name__, (base,), {"connect_retries": retries})
        else:
            is_async = issubclass(base, redis.asyncio.connection.AbstractConnection)
            mixin = _AsyncReconnecting if is_async else _Reconnecting
            made = type(f"Reconnecting{base.__name__}", (mixin, base), {"connect_retries": retries})
        made = _RECONNECTING.setdefault((base, retries), made)
    return made


def no_primary(master: str) -> redis.sentinel.MasterNotFoundError:
    return redis.sentinel.MasterNotFoundError(
        f"no sentinel names a primary for {master!r} (a failover may be under way)"
    )


class PrimaryMoved(redis.exceptions.ConnectionError):
    """The command was not sent: its connection was to a server that is no longer the primary."""


class PrimaryWatch:
    """Where the sentinels say the primary is, asked at most once per PRIMARY_CHECK_INTERVAL per pool
    (shared by the pool's connections, so 32 busy threads cost one sentinel query a second)."""

    def __init__(self, interval: float = PRIMARY_CHECK_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._address: tuple[str, int] | None = None

    def primary(self, ask: Callable[[], tuple[str, int]], *, fresh: bool = False) -> tuple[str, int]:
        with self._lock:
            now = time.monotonic()
            if fresh or self._address is None or now - self._checked_at >= self.interval:
                self._address = ask()  # MasterNotFoundError (a ConnectionError) while there is none
                self._checked_at = now
            return self._address

    def forget(self) -> None:
        with self._lock:
            self._checked_at = float("-inf")


class FollowingConnection(redis.sentinel.SentinelManagedConnection):
    """A connection to a Sentinel group's primary, wherever it is now (see the module's docstring)."""

    connect_retries = 2

    def __init__(self, **kwargs: Any) -> None:
        self.watch: PrimaryWatch = kwargs.pop("sentinel_group").watch  # sentinel_client.GroupLink
        super().__init__(**kwargs)  # type: ignore[no-untyped-call]

    def _primary(self, *, fresh: bool = False) -> tuple[str, int]:
        return self.watch.primary(self._ask_sentinels, fresh=fresh)

    def _ask_sentinels(self) -> tuple[str, int]:
        try:
            host, port = self.connection_pool.get_master_address()
        except redis.sentinel.MasterNotFoundError:
            raise no_primary(self.connection_pool.service_name) from None  # not redis-py's page-long repr
        return str(host), int(port)

    def connect(self) -> None:
        _connect_attempts(self.connect_retries).call_with_retry(self._connect_to_primary, self._failed_to_connect)

    def _connect_to_primary(self) -> None:
        self.connect_check_health(check_health=True, retry_socket_connect=False)

    def _failed_to_connect(self, error: Exception) -> None:
        self.disconnect()  # type: ignore[no-untyped-call]
        self.watch.forget()  # the next attempt asks the sentinels again

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        # Every path that opens a socket (the pool's connect(), redis-py's reconnect on send) comes here.
        if self._sock:
            return
        self.host, self.port = self._primary(fresh=True)
        super().connect_check_health(check_health=check_health, retry_socket_connect=False)

    def check_health(self) -> None:
        primary = self._primary()
        if self._sock and (self.host, self.port) != primary:
            # Never move a connection under its caller: a WAIT must run where the write it confirms
            # ran. This command is not sent (its outcome is known); the next one opens a connection
            # to the new primary.
            self.disconnect()
            raise PrimaryMoved(f"the primary moved from {self.host}:{self.port} to {primary[0]}:{primary[1]}")
        super().check_health()  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self.watch.forget()  # the next command asks where the primary is before it goes
            raise


class AsyncFollowingConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """The asyncio twin, for the one-shot async lessons: asks the sentinels on every connect."""

    connect_retries = 2

    async def connect(self) -> None:
        await AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), self.connect_retries).call_with_retry(
            self._connect_retry, lambda error: self.disconnect()
        )

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if self.is_connected:
            return
        self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=False)

    async def _connect_retry(self) -> None:
        await self.connect_check_health(check_health=self.connection_pool.check_connection)
