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
