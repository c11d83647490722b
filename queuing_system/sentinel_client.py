"""Clients for a Sentinel group's primary (settings.connect() makes them for redis+sentinel:// URLs)."""

from __future__ import annotations

import threading
import time
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from queuing_system.connection_policy import (
    PRIMARY_CHECK_INTERVAL,
    SENTINEL_TIMEOUT,
    AsyncFollowingConnection,
    FollowingConnection,
    PrimaryWatch,
    no_primary,
    no_resend,
    no_resend_async,
    reconnecting,
)
from queuing_system.sentinel_url import SentinelAddress


def _sentinel_options(address: SentinelAddress) -> dict[str, Any]:
    return {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "password": address.sentinel_password,
        "retry": no_resend(),
    }


def _server_options(address: SentinelAddress) -> dict[str, Any]:
    return {"db": address.db, "password": address.password, "username": address.username}


class GroupSentinel(redis.sentinel.Sentinel):
    """redis-py's Sentinel, not taking the word of a sentinel in the middle of a failover.

    The sentinel leading a failover goes on naming the old primary in SENTINEL MASTERS until the
    failover is over (~5 s after the promotion, measured), while the others already name the new
    one; redis-py asks first whichever sentinel answered last time, often the leader. So a
    sentinel with `failover_in_progress` is asked last (its answer is taken only if none other has one).
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        mid_failover: tuple[str, int] | None = None
        for sentinel in self.sentinels:
            try:
                masters = sentinel.sentinel_masters()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if not state or not self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                continue
            address = (str(state["ip"]), int(state["port"]))
            if not _failing_over(state):
                return address
            mid_failover = mid_failover or address
        if mid_failover is None:
            raise no_primary(service_name)
        return mid_failover


class GroupPool(redis.sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool with our connections, remembering the address it was made from
    (url_of() gives it back, so a twin client with other options goes to the same group)."""

    def __init__(self, address: SentinelAddress, **options: Any) -> None:
        sentinel = GroupSentinel(list(address.sentinels), sentinel_kwargs=_sentinel_options(address))  # type: ignore[no-untyped-call]
        self.watch = PrimaryWatch()
        super().__init__(address.master, sentinel, primary_watch=self.watch, **options)  # type: ignore[no-untyped-call]
        self.address = address
        self.replica_count = ReplicaCount(self)

    def primary(self) -> tuple[str, int]:
        """Where this pool's connections write now (asked of the sentinels at most once a second)."""
        return self.watch.primary(self._ask)

    def _ask(self) -> tuple[str, int]:
        host, port = self.get_master_address()  # type: ignore[no-untyped-call]
        return str(host), int(port)


class ReplicaCount:
    """How many replicas must confirm a write to the group's primary (what WAIT asks for), from
    what the sentinels report, asked at most once a second.

    The safe answer is every replica Sentinel knows (down ones too): an old primary still taking
    writes after a replica was promoted has fewer replicas than that, so its writes are never
    confirmed. But then writes wait, after every fault, until the old primary has been demoted
    and resynced (10-15 s measured: Sentinel leaves a server reporting the wrong role alone for
    ~8 s). So when a sentinel that is not in the middle of a failover names as primary the very
    server this client writes to, that server is the primary and its replicas are known: count
    only those Sentinel sees up, replicating (role slave) with their link up; a dead or demoted
    old primary is not waited for. In every other case (the sentinels name another server, one
    is mid-failover, none answers), count every known replica. Never fewer than one: an
    acknowledged write is always on two servers (so with every replica down, nothing is confirmed).
    """

    def __init__(self, pool: GroupPool, interval: float = PRIMARY_CHECK_INTERVAL) -> None:
        self.pool = pool
        self.interval = interval
        self._lock = threading.Lock()
        self._counted_at = float("-inf")
        self._count = 0

    def now(self) -> int:
        with self._lock:
            if time.monotonic() - self._counted_at >= self.interval:
                self._count = self._ask()
                self._counted_at = time.monotonic()
            return self._count

    def _ask(self) -> int:
        writing_to = self.pool.primary()
        for sentinel in self.pool.sentinel_manager.sentinels:
            try:
                state = sentinel.sentinel_master(self.pool.service_name)
                replicas = sentinel.sentinel_slaves(self.pool.service_name)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError):
                continue
            named = (str(state["ip"]), int(state["port"]))
            if named != writing_to or _failing_over(state):
                return max(1, len(replicas))
            return max(1, sum(1 for replica in replicas if _in_sync(replica)))
        raise redis.exceptions.ConnectionError(f"no sentinel of {self.pool.service_name!r} answered")


def _flags(state: dict[str, Any]) -> set[str]:
    flags = state.get("flags", "")
    return flags if isinstance(flags, set) else set(str(flags).split(","))


def _failing_over(state: dict[str, Any]) -> bool:
    return "failover_in_progress" in _flags(state)


def _in_sync(replica: dict[str, Any]) -> bool:
    return (
        not _flags(replica) & {"s_down", "o_down", "disconnected"}
        and replica.get("role-reported") == "slave"
        and replica.get("master-link-status") == "ok"
    )


def group_client(
    address: SentinelAddress,
    *,
    decode_responses: bool,
    socket_timeout: float,
    socket_connect_timeout: float,
    connect_retries: int,
    single_connection: bool,
) -> redis.Redis:
    pool = GroupPool(
        address,
        connection_class=reconnecting(FollowingConnection, connect_retries),
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        retry=no_resend(),
        **_server_options(address),
    )
    return redis.Redis(connection_pool=pool, single_connection_client=single_connection)


def group_client_async(
    address: SentinelAddress, *, socket_timeout: float, socket_connect_timeout: float, connect_retries: int
) -> redis.asyncio.Redis:
    sentinel = redis.asyncio.sentinel.Sentinel(
        list(address.sentinels), sentinel_kwargs=_sentinel_options_async(address)
    )
    pool = redis.asyncio.sentinel.SentinelConnectionPool(
        address.master,
        sentinel,
        connection_class=reconnecting(AsyncFollowingConnection, connect_retries),
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        retry=no_resend_async(),
        **_server_options(address),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def _sentinel_options_async(address: SentinelAddress) -> dict[str, Any]:
    return {**_sentinel_options(address), "retry": no_resend_async()}


def group_of(client: redis.Redis) -> SentinelAddress | None:
    """The group a client of ours talks to (None: a plain Redis)."""
    pool = client.connection_pool
    return pool.address if isinstance(pool, GroupPool) else None


def primary_of(address: SentinelAddress) -> tuple[str, int]:
    """Where the sentinels say the primary is now (MasterNotFoundError, a ConnectionError, if none does)."""
    sentinel = GroupSentinel(list(address.sentinels), sentinel_kwargs=_sentinel_options(address))  # type: ignore[no-untyped-call]
    try:
        host, port = sentinel.discover_master(address.master)
        return str(host), int(port)
    except redis.sentinel.MasterNotFoundError:
        raise no_primary(address.master) from None
    finally:
        sentinel.close()


def replicas_to_confirm(client: redis.Redis) -> int:
    """What WAIT asks for on a write through `client` now (0: a plain Redis, nothing to wait for)."""
    pool = client.connection_pool
    return pool.replica_count.now() if isinstance(pool, GroupPool) else 0
