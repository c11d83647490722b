"""Clients for a Sentinel group's primary (settings.connect() makes them for redis+sentinel:// URLs)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from queuing_system.connection_policy import (
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
                state = sentinel.sentinel_masters().get(service_name)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                continue
            if not state or not self.check_master_state(state, service_name):
                continue
            address = (str(state["ip"]), int(state["port"]))
            flags = state.get("flags", "")
            if "failover_in_progress" not in (flags if isinstance(flags, set) else str(flags).split(",")):
                return address
            mid_failover = mid_failover or address
        if mid_failover is None:
            raise no_primary(service_name)
        return mid_failover


class GroupPool(redis.sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool with our connections, remembering the address it was made from
    (url_of() gives it back, so a twin client with other options goes to the same group)."""

    def __init__(self, address: SentinelAddress, **options: Any) -> None:
        sentinel = GroupSentinel(list(address.sentinels), sentinel_kwargs=_sentinel_options(address))
        super().__init__(address.master, sentinel, primary_watch=PrimaryWatch(), **options)
        self.address = address


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
    sentinel = GroupSentinel(list(address.sentinels), sentinel_kwargs=_sentinel_options(address))
    try:
        host, port = sentinel.discover_master(address.master)
        return str(host), int(port)
    except redis.sentinel.MasterNotFoundError:
        raise no_primary(address.master) from None
    finally:
        sentinel.close()


def known_replicas(client: redis.Redis) -> int:
    """How many replicas the sentinels know for the client's group (those down for now included:
    Sentinel remembers every replica it has seen, the old primary too once it has been demoted)."""
    address = group_of(client)
    if address is None:
        return 0
    sentinel = redis.sentinel.Sentinel(list(address.sentinels), sentinel_kwargs=_sentinel_options(address))
    try:
        for node in sentinel.sentinels:
            try:
                return len(node.sentinel_slaves(address.master))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                continue
        raise redis.exceptions.ConnectionError(f"no sentinel of {address.master!r} answered")
    finally:
        sentinel.close()
