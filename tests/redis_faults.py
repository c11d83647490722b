"""Faults an operator's Redis has, caused on a test's own Redis: a stall, a loop of killed connections."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import redis

# Keeps Redis busy (as DEBUG SLEEP does, which redis-server refuses unless configured for it) for
# ARGV[1] microseconds: every other client waits, its commands read but not run until it ends.
# Under the 5 s busy-reply threshold, so nobody is answered BUSY meanwhile.
STALL = """
local started = redis.call('TIME')
local stop = tonumber(started[1]) * 1000000 + tonumber(started[2]) + tonumber(ARGV[1])
repeat
  local now = redis.call('TIME')
until tonumber(now[1]) * 1000000 + tonumber(now[2]) >= stop
return 1
"""


@contextlib.contextmanager
def stalled(url: str, seconds: float = 4.5) -> Iterator[None]:
    """Redis stalled for `seconds` from the moment the block starts (it waits until the stall shows)."""
    stalling = threading.Thread(
        target=lambda: redis.Redis.from_url(url, socket_timeout=None).eval(STALL, 0, int(seconds * 1_000_000)),
        daemon=True,
    )
    stalling.start()
    probe = redis.Redis.from_url(url, socket_timeout=0.2, retry=None)
    with contextlib.suppress(redis.TimeoutError):
        while True:  # until a PING goes unanswered: the stall has begun
            probe.ping()
    probe.close()
    yield
    stalling.join(seconds + 10)


@contextlib.contextmanager
def killing_connections(url: str, every: float = 0.002) -> Iterator[list[int]]:
    """`CLIENT KILL TYPE normal` every `every` seconds for as long as the block runs (the list
    it yields counts the connections killed)."""
    stop = threading.Event()
    killed = [0]

    def kill_loop() -> None:
        killer = redis.Redis.from_url(url)  # CLIENT KILL spares the connection that sends it
        while not stop.wait(every):
            with contextlib.suppress(redis.RedisError):
                killed[0] += killer.client_kill_filter(_type="normal")

    thread = threading.Thread(target=kill_loop, daemon=True)
    thread.start()
    try:
        yield killed
    finally:
        stop.set()
        thread.join(10)


@contextlib.contextmanager
def refusing(url: str, kind: str, closed_port: int = 1) -> Iterator[None]:
    """Redis answering writes with an error for as long as the block runs: `oom` (maxmemory with
    noeviction), `busy` (a foreign script past the busy threshold), `readonly` (a replica of a
    primary it cannot reach, as a demoted primary is)."""
    client = redis.Redis.from_url(url, socket_timeout=None)
    if kind == "oom":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        yield
        client.config_set("maxmemory", 0)
    elif kind == "readonly":
        client.replicaof("127.0.0.1", closed_port)
        yield
        client.replicaof("NO", "ONE")
    elif kind == "busy":
        with _busy(url):
            yield
    else:
        raise ValueError(kind)


@contextlib.contextmanager
def _busy(url: str, seconds: float = 8.0) -> Iterator[None]:
    """A foreign script running `seconds`: past the 5 s threshold every other command gets BUSY."""
    busy = threading.Thread(
        target=lambda: redis.Redis.from_url(url, socket_timeout=None).eval(STALL, 0, int(seconds * 1_000_000)),
        daemon=True,
    )
    busy.start()
    probe = redis.Redis.from_url(url, socket_timeout=10, retry=None)
    while True:  # until Redis answers BUSY
        try:
            probe.ping()
        except redis.ResponseError as error:
            if str(error).startswith("BUSY"):
                break
            raise
    try:
        yield
    finally:
        busy.join(seconds + 10)
        probe.close()
