"""Serving 9_stock and 100_seat: Flask's development server (hardened), or granian with N processes.

    python 9_stock.py                 the development server: one process, a fixed pool of request threads
    python 9_stock.py --workers 4     granian: 4 processes sharing the port, a dead one replaced

Either way: the port is bound before anything touches Redis (a failed start changes nothing), the
banner is printed once it listens (and a second line when it listens beyond this machine), every
answer is JSON, and one Ctrl+C or SIGTERM stops it all within a few seconds. How each server
holds up against slow clients: `dev_server.py`, `granian_server.py`.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ipaddress
import logging
import multiprocessing.util
import os
import socket
import sys
import threading
from collections.abc import Callable

from flask import Flask

from queuing_system.console import say
from queuing_system.dev_server import DevelopmentServer, serve_development
from queuing_system.granian_server import GranianBindError, serve_granian
from queuing_system.jobs import bounded
from queuing_system.settings import ConfigError
from queuing_system.web import DEFAULT_PORT

__all__ = [  # DevelopmentServer too: the dashboard serves on it
    "CannotListenError",
    "DevelopmentServer",
    "add_server_options",
    "listen",
    "on_exit",
    "quiet_logs",
    "run_server",
    "server_address",
]


def server_address() -> tuple[str, int]:
    """HOST and PORT, checked: a malformed or unknown one is a ConfigError naming it."""
    host = os.environ.get("HOST", "127.0.0.1").strip() or "127.0.0.1"
    raw_port = os.environ.get("PORT", str(DEFAULT_PORT)).strip()
    if not raw_port.isdigit() or int(raw_port) > 65535:
        raise ConfigError(f"PORT={raw_port!r}: expected a port number from 0 to 65535 (0: any free port)")
    try:
        socket.getaddrinfo(host, int(raw_port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ConfigError(f"HOST={host!r}: no such address to listen on ({reason})") from None
    return host, int(raw_port)


class CannotListenError(Exception):
    """The port could not be bound (taken, or not ours to take): one line, exit 1."""


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6, as the host says)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    try:
        return socket.create_server(address[:2], family=family, backlog=1024)
    except OSError as error:
        raise CannotListenError(f"Cannot listen on {host}:{port}: {_reason(error)}") from None


def _reason(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)


def beyond_loopback(host: str) -> bool:
    """Whether HOST lets other machines connect (0.0.0.0, ::, a LAN address, a name that is not local)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError:
        return True
    return not all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def banner(host: str) -> Callable[[int], None]:
    """What the server says once it listens: the curriculum's line, and, only when HOST lets other
    machines in, a second line saying so plainly (the first still says localhost, as the original)."""

    def listening(port: int) -> None:
        say(f"API available on localhost port {port}")
        if beyond_loopback(host):
            say(f"Listening on {host} port {port}: reachable from other machines, not only this one")

    return listening


def add_server_options(parser: argparse.ArgumentParser, worker_threads: int = 4) -> None:
    """--workers, --threads (default with --workers: `worker_threads` per process), --verbose."""
    parser.set_defaults(worker_threads=worker_threads)
    parser.add_argument(
        "--workers",
        type=bounded(1, 64),
        metavar="N",
        help="serve with granian, N processes (1 to 64; default: Flask's development server)",
    )
    parser.add_argument(
        "--threads",
        type=bounded(1, 256),
        metavar="N",
        help=f"requests served at once per process (1 to 256; default 32, or {worker_threads} with --workers)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request (and RQ's worker log)")


def run_server(
    target: str, create: Callable[[], Flask], args: argparse.Namespace, prepare: Callable[[], None] | None = None
) -> int:
    """Serve the app `create()` builds (`target`, "module:factory", for granian's processes).

    `prepare` runs once, after the port is bound and before the first request (100_seat's --reset).
    Returns the exit code.
    """
    host, port = server_address()
    threads = args.threads or (getattr(args, "worker_threads", 4) if args.workers else 32)
    quiet_logs(args.verbose)
    _allow_many_connections()
    try:
        if args.workers:
            with listen(host, port) as probe:  # a port that is taken is refused here, in one line, before anything
                port = probe.getsockname()[1]  # (and for PORT=0, granian would not say which port it got)
            try:
                return serve_granian(target, host, port, args.workers, threads, prepare, banner(host), args.verbose)
            except GranianBindError as error:
                raise CannotListenError(f"Cannot listen on {host}:{port}: {error}") from None
        with listen(host, port) as listener:
            if prepare is not None:
                prepare()
            return serve_development(create(), listener, threads, banner(host))
    except CannotListenError as error:
        print(error, file=sys.stderr, flush=True)
        return 1


def quiet_logs(verbose: bool) -> None:
    """The request log only with --verbose (Flask's development server logs every request by default)."""
    logging.getLogger("werkzeug").setLevel(logging.INFO if verbose else logging.ERROR)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)


def on_exit(callback: Callable[[], None]) -> None:
    """Run `callback` when this process ends normally: the main process, or a granian worker
    (multiprocessing ends its children with os._exit, which skips atexit, so it is told too)."""
    done = threading.Event()

    def once() -> None:
        if not done.is_set():
            done.set()
            callback()

    atexit.register(once)
    multiprocessing.util.Finalize(None, once, exitpriority=10)


def _allow_many_connections() -> None:
    """Raise this process's open-file limit to its hard limit: each waiting client is a descriptor."""
    with contextlib.suppress(ValueError, OSError, ImportError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
