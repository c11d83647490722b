"""Where Redis is: one function every script, server, worker, test and benchmark uses."""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import quote

import redis
import redis.asyncio
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A malformed setting or option: one line naming it and what is wrong (exit 2)."""


def env_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer setting from the environment (unset or empty: `default`), within bounds."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a whole number from {minimum} to {maximum}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={raw!r}: expected a whole number from {minimum} to {maximum}")
    return value


def env_float(name: str, default: float, minimum: float, maximum: float) -> float:
    """A number setting from the environment (unset or empty: `default`), within bounds."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number from {minimum:g} to {maximum:g}") from None
    if not minimum <= value <= maximum:  # also refuses nan and inf
        raise ConfigError(f"{name}={raw!r}: expected a number from {minimum:g} to {maximum:g}")
    return value


def redis_url(env: Mapping[str, str] | None = None) -> str:
    """`REDIS_URL`; else the seed's `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`; else the default."""
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    host, port, password = env.get("REDIS_HOST"), env.get("REDIS_PORT"), env.get("REDIS_PASSWORD")
    if not (host or port or password):
        return DEFAULT_REDIS_URL
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{host or '127.0.0.1'}:{port or 6379}/0"


def connect(
    url: str | None = None,
    *,
    decode_responses: bool = True,
    retries: int = 2,
    socket_timeout: float | None = 5.0,
) -> redis.Redis:
    """A client for `url` (default: `redis_url()`).

    A few quick retries ride out a blip; anything longer surfaces as
    `redis.exceptions.ConnectionError` so the caller can say so in one line.
    RQ needs `decode_responses=False`; the lessons print text, so they decode.
    """
    return redis.Redis.from_url(
        url or redis_url(),
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
    )


def connect_async(url: str | None = None, *, retries: int = 2) -> redis.asyncio.Redis:
    """The `redis.asyncio` twin of `connect()` (text replies)."""
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(
        url or redis_url(),
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
        retry=AsyncRetry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
    )


def url_of(client: redis.Redis) -> str:
    """The redis:// URL a client talks to (to open a twin connection with other options)."""
    kwargs = client.connection_pool.connection_kwargs
    password = kwargs.get("password")
    user = kwargs.get("username") or ""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
