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
    """redis-py's Sentinel, asking every sentinel and believing the newest configuration.

    redis-py takes the first sentinel's word. During a failover the sentinels disagree for a while:
    the leader goes on naming the old primary (flagged `failover_in_progress`) until the failover is
    over (~1-5 s after the promotion, measured), and a sentinel the news has not reached yet names
    it too, while the others name the new one under a higher `config-epoch`. A connection opened on
    a stale answer would write to the old primary, whose remaining replica can still confirm (WAIT)
    what the failover then throws away. So: every sentinel is asked; answers from a sentinel mid-
    failover count only if no other answers; the highest epoch wins; and once an epoch has been seen,
    an older one is never followed again (sentinels that only know the past mean: no primary now).
    """

    _newest_epoch = -1

    def discover_master(self, service_name: str) -> tuple[str, int]:
        settled: list[tuple[int, tuple[str, int]]] = []
        busy: list[tuple[int, tuple[str, int]]] = []
        for sentinel in self.sentinels:
            try:
                masters = sentinel.sentinel_masters()
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                continue
            state = masters.get(service_name) if isinstance(masters, dict) else None
            if not state or not self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                continue
            answer = (int(state.get("config-epoch", 0)), (str(state["ip"]), int(state["port"])))
            (busy if _failing_over(state) else settled).append(answer)
        answers = settled or busy
        if not answers:
            raise no_primary(service_name)
        epoch, address = max(answers, key=lambda answer: answer[0])
        if epoch < self._newest_epoch:
            raise no_primary(service_name)
        self._newest_epoch = epoch
        return address


class GroupLink:
    """What the connections of one client of a group share: its address (url_of() gives it back, so
    a twin client goes to the same group), its sentinels, where the primary is, how many replicas
    must confirm a write. It travels in the connection kwargs (`sentinel_group`), so a pool someone
    builds from a client's connection class and kwargs (web.server_client does) is still the group's."""

    def __init__(self, address: SentinelAddress) -> None:
        self.address = address
        self.sentinel = GroupSentinel(list(address.sentinels), sentinel_kwargs=_sentinel_options(address))  # type: ignore[no-untyped-call]
        self.watch = PrimaryWatch()
        self.replica_count = ReplicaCount(self)

    def primary(self) -> tuple[str, int]:
        """Where the connections write now (asked of the sentinels at most once a second)."""
        return self.watch.primary(lambda: self.sentinel.discover_master(self.address.master))


class GroupPool(redis.sentinel.SentinelConnectionPool):
    """redis-py's Sentinel pool with our connections (FollowingConnection) and their GroupLink."""

    def __init__(self, address: SentinelAddress, **options: Any) -> None:
        self.link = GroupLink(address)
        super().__init__(address.master, self.link.sentinel, sentinel_group=self.link, **options)  # type: ignore[no-untyped-call]


class ReplicaCount:
    """How many replicas must confirm a write to the group's primary (what WAIT asks for), from
    what the sentinels report, asked at most once a second.

    The safe answer is every replica Sentinel knows (down ones too): an old primary still taking
    writes after a replica was promoted has fewer replicas than that, so its writes are never
    confirmed. But then writes wait, after every fault, until the old primary has been demoted
    and resynced (10-15 s measured: Sentinel leaves a server reporting the wrong role alone for
    ~8 s). So when a sentinel that is not in the middle of a failover names as primary the very
    server this client writes to, that server is the primary and its replicas are known: count
    those Sentinel sees up, replicating (role slave) with their link up, but never fewer than the
    primary itself reports online (Sentinel's view of a replica is up to ~10 s old: one that
    rejoined may look demoted to it and still be promoted; counting it out lost writes, measured);
    a dead old primary, or one not yet turned into a replica, is not waited for. In every other
    case (the sentinels name another server, one is mid-failover, none answers), count every
    known replica. Never fewer than one: an acknowledged write is always on two servers (so with
    every replica down, nothing is confirmed).
    """

    def __init__(self, link: GroupLink, interval: float = PRIMARY_CHECK_INTERVAL) -> None:
        self.link = link
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
        writing_to = self.link.primary()
        master = self.link.address.master
        for sentinel in self.link.sentinel.sentinels:
            try:
                state = sentinel.sentinel_master(master)
                replicas = sentinel.sentinel_slaves(master)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError):
                continue
            if not isinstance(state, dict) or not isinstance(replicas, list):
                continue
            named = (str(state["ip"]), int(state["port"]))
            if named != writing_to or _failing_over(state):
                return max(1, len(replicas))
            in_sync = sum(1 for replica in replicas if _in_sync(replica))
            # Sentinel refreshes what it knows of a replica every ~10 s: one that rejoined lately may
            # still look demoted or detached to it while the primary already streams to it (and a
            # failover may promote it). So never ask for fewer than the primary itself has online.
            return max(1, in_sync, self._online_at(writing_to))
        raise redis.exceptions.ConnectionError(f"no sentinel of {master!r} answered")

    def _online_at(self, primary: tuple[str, int]) -> int:
        address = self.link.address
        with redis.Redis(
            *primary,
            db=address.db,
            password=address.password,
            username=address.username,
            socket_timeout=SENTINEL_TIMEOUT,
            socket_connect_timeout=SENTINEL_TIMEOUT,
            retry=no_resend(),
        ) as server:
            info = server.info("replication")
        return sum(
            1
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
        )


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
    link = _link_of(client)
    return link.address if link is not None else None


def _link_of(client: redis.Redis) -> GroupLink | None:
    link = client.connection_pool.connection_kwargs.get("sentinel_group")
    return link if isinstance(link, GroupLink) else None


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
    link = _link_of(client)
    return link.replica_count.now() if link is not None else 0
