"""A Sentinel group (a primary, two replicas, three sentinels) for the test session, on free ports.

Import the fixtures into a test module (`from tests.sentinel_group import group, sentinel_group`).
Tests may fail the group over; the per-test fixture waits until Sentinel reports it settled again
(one primary every sentinel names, every replica in sync) and empties the primary.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import redis

from queuing_system.replication import Confirmation
from queuing_system.sentinel_group import Node, SentinelGroup


@pytest.fixture(scope="session")
def sentinel_group() -> Iterator[SentinelGroup]:
    with SentinelGroup() as started:
        yield started


@pytest.fixture
def group(sentinel_group: SentinelGroup, monkeypatch: pytest.MonkeyPatch) -> SentinelGroup:
    """The session's group, settled, its primary's database emptied, REDIS_URL naming it."""
    for node in sentinel_group.servers:
        if node.process is None:  # a test that killed it failed before restarting it
            sentinel_group.restart(node)
    primary = sentinel_group.wait_until_settled(timeout=60)
    primary.client().flushdb()
    monkeypatch.setenv("REDIS_URL", sentinel_group.url)
    return sentinel_group


def wait_for(check: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until `check()` is true (polling, no fixed sleep); fails the test after `timeout`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - start


def named_primary(group: SentinelGroup) -> Node | None:
    try:
        return group.primary()
    except Exception:
        return None


@dataclass
class CountedWriter:
    """Writes `SET <run>:<n> 1` for n = 1, 2, … through a Confirmation, counting what was acknowledged."""

    client: redis.Redis
    confirmation: Confirmation
    run: str = field(default_factory=lambda: f"run{time.monotonic_ns()}")
    acknowledged: list[int] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> CountedWriter:
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _write(self) -> None:
        number = 0
        while not self._stop.is_set():
            number += 1
            try:
                self.confirmation.write(self.client, lambda pipe, key=f"{self.run}:{number}": pipe.set(key, 1))
                self.acknowledged.append(number)
            except redis.exceptions.RedisError as error:
                name = type(error).__name__
                self.refused[name] = self.refused.get(name, 0) + 1
                self._stop.wait(0.02)

    def wait_for_writes(self, count: int, timeout: float = 30.0) -> None:
        start = len(self.acknowledged)
        wait_for(lambda: len(self.acknowledged) >= start + count, timeout, f"{count} acknowledged writes")

    def lost_on(self, primary: redis.Redis) -> list[int]:
        """The acknowledged writes `primary` does not have."""
        lost: list[int] = []
        for start in range(0, len(self.acknowledged), 1000):
            chunk = self.acknowledged[start : start + 1000]
            with primary.pipeline(transaction=False) as pipe:
                for number in chunk:
                    pipe.exists(f"{self.run}:{number}")
                lost += [number for number, present in zip(chunk, pipe.execute(), strict=True) if not present]
        return lost
