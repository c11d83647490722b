"""One throwaway redis-server per test session; every test starts from an empty database."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from queuing_system.embedded import EmbeddedRedis, free_port
from tests.sentinel_group import group, sentinel_group  # noqa: F401  (fixtures: one Sentinel group per session)

# No test may reach a Redis it did not start: clear every address setting
# before anything reads them, and point the defaults at nothing.
for _name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
    os.environ.pop(_name, None)
os.environ["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # closed port until the fixture opens one


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session server's URL, its database emptied, and REDIS_URL set to it for children."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A text client on the clean test database."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def closed_url() -> str:
    """An address where nothing listens."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def own_redis() -> Iterator[EmbeddedRedis]:
    """A private server a test may stop and restart (same port) to play 'Redis went away'."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def rq_connection(redis_url: str) -> Iterator[redis.Redis]:
    """A client RQ can use (bytes, no decoding) on the clean test database."""
    from queuing_system.jobs import queue_connection

    connection = queue_connection(redis_url)
    yield connection
    connection.close()
