"""Serving 9_stock and 100_seat: Flask's development server (hardened), or granian with N processes.

    python 9_stock.py                 the development server: one process, a fixed pool of request threads
    python 9_stock.py --workers 4     granian: 4 processes sharing the port, a dead one replaced

Either way: the port is bound before anything touches Redis (a failed start changes nothing), the
banner is printed once it listens, every answer is JSON, and one Ctrl+C or SIGTERM stops it all
within a few seconds. Slow clients cannot wedge it: request threads are bounded, and a client gets
HEADER_TIMEOUT seconds to send its request line and headers.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import io
import json
import logging
import multiprocessing.util
import os
import queue
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

from queuing_system.console import say
from queuing_system.jobs import bounded
from queuing_system.processes import ROOT
from queuing_system.settings import ConfigError
from queuing_system.web import DEFAULT_PORT

HEADER_TIMEOUT = 10  # seconds a client has to send its request line and headers
IDLE_TIMEOUT = 10  # seconds a connection may stay silent while its request is read or answered
MAX_PENDING = 8192  # connections still sending their request, or waiting for a thread; past that: busy


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


def add_server_options(parser: argparse.ArgumentParser) -> None:
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
        help="requests served at once per process (1 to 256; default 32, or 4 with --workers)",
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
    threads = args.threads or (4 if args.workers else 32)
    os.environ["QUEUING_SERVER_THREADS"] = str(threads)  # web.server_client() sizes its pool by it
    quiet_logs(args.verbose)
    try:
        if args.workers:
            return serve_granian(target, host, port, args.workers, threads, prepare, args.verbose)
        with listen(host, port) as listener:
            if prepare is not None:
                prepare()
            return serve_development(create(), listener, threads)
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


# -- the development server ----------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A connection's bytes: first the request head the server already read, then the socket."""

    def __init__(self, head: bytes, connection: socket.socket) -> None:
        self._head = memoryview(head)
        self._connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        return self._connection.recv_into(buffer)


class _JSONRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, reading the head the server read for it, with a silence limit for the rest,
    and JSON for what it answers before Flask sees the request (a request line or header too long)."""

    timeout = IDLE_TIMEOUT  # socketserver sets it on the connection
    # Reasons as RFC 9110 spells them, on every Python: 3.13 renamed 414 "Request-URI Too Long" to
    # "URI Too Long" (and 413, 416, 422), and a client should get the same JSON whichever Python serves.
    responses: ClassVar[dict[int, tuple[str, str]]] = {
        **WSGIRequestHandler.responses,
        413: ("Content Too Large", "Request content is larger than the server will process"),
        414: ("URI Too Long", "URI is longer than the server will interpret"),
        416: ("Range Not Satisfiable", "Cannot satisfy request range"),
        422: ("Unprocessable Content", "The content could not be processed"),
    }

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_Prefixed(self.server.take_head(self.connection), self.connection))  # type: ignore[attr-defined]

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        phrase = message or self.responses.get(code, ("Error",))[0]
        body = json.dumps({"status": phrase}, separators=(",", ":")).encode()
        self.log_error("code %d, message %s", code, phrase)
        self.send_response(code, phrase)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)
        self.close_connection = True


@dataclass
class _Arriving:
    """A connection whose request head is still arriving."""

    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class DevelopmentServer(BaseWSGIServer):
    """Flask's development server (werkzeug), hardened against slow clients.

    One thread accepts connections and reads each request's head (request line and headers) as
    it arrives, for every connection at once; only a complete head is handed to one of a fixed
    pool of request threads. So a burst of slow clients holds no thread (werkzeug's threaded
    server starts a thread per connection: thousands), a client gets HEADER_TIMEOUT seconds for
    its head, and Ctrl+C / SIGTERM stop the server at once.
    """

    def __init__(self, app: Flask, listener: socket.socket, threads: int) -> None:
        self._requests: queue.Queue[tuple[socket.socket, Any] | None] = queue.Queue()
        self._heads: dict[socket.socket, bytes] = {}
        self._threads = [
            threading.Thread(target=self._serve_requests, daemon=True, name=f"request-{n}") for n in range(threads)
        ]
        self._started = False  # werkzeug calls server_close() while it sets up (for a socket it does not use)
        host, port = listener.getsockname()[:2]
        super().__init__(host, port, app, handler=_JSONRequestHandler, fd=listener.fileno())
        for thread in self._threads:
            thread.start()
        self._started = True

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept, read heads, hand complete requests to the threads; until Ctrl+C or SIGTERM."""
        arriving: dict[socket.socket, _Arriving] = {}
        with selectors.DefaultSelector() as selector:
            self.socket.setblocking(False)
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in selector.select(timeout=0.5):
                        if key.fileobj is self.socket:
                            self._accept(selector, arriving)
                        else:
                            self._read_head(selector, arriving, key.fileobj)  # type: ignore[arg-type]
                    now = time.monotonic()
                    for connection in [c for c, state in arriving.items() if state.deadline < now]:
                        self._drop(selector, arriving, connection)  # too slow: cut off, its slot freed
            except KeyboardInterrupt:
                pass
            finally:
                for connection in list(arriving):
                    self._drop(selector, arriving, connection)
                self.server_close()

    def _accept(self, selector: selectors.BaseSelector, arriving: dict[socket.socket, _Arriving]) -> None:
        while True:
            try:
                connection, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, say: leave the rest in the backlog for now
                time.sleep(0.05)
                return
            connection.setblocking(False)
            if len(arriving) + self._requests.qsize() >= MAX_PENDING:
                with contextlib.suppress(OSError):
                    connection.send(BUSY)
                connection.close()
                continue
            arriving[connection] = _Arriving(address, time.monotonic() + HEADER_TIMEOUT)
            selector.register(connection, selectors.EVENT_READ)

    def _read_head(
        self, selector: selectors.BaseSelector, arriving: dict[socket.socket, _Arriving], connection: socket.socket
    ) -> None:
        state = arriving[connection]
        try:
            data = connection.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(selector, arriving, connection)
            return
        state.head += data
        if b"\r\n\r\n" in state.head or len(state.head) > 65536:  # complete (or too long: the handler says so)
            selector.unregister(connection)
            del arriving[connection]
            connection.setblocking(True)
            self._heads[connection] = bytes(state.head)
            self._requests.put((connection, state.address))

    @staticmethod
    def _drop(
        selector: selectors.BaseSelector, arriving: dict[socket.socket, _Arriving], connection: socket.socket
    ) -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection)
        arriving.pop(connection, None)
        connection.close()

    def take_head(self, connection: socket.socket) -> bytes:
        return self._heads.pop(connection, b"")

    def _serve_requests(self) -> None:
        while (item := self._requests.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self._heads.pop(request, None)
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request is not an error worth a traceback."""
        if logging.getLogger("werkzeug").isEnabledFor(logging.INFO):
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        """Stop taking requests; give the ones in progress a moment to finish (threads are daemons)."""
        super().server_close()
        if not self._started:
            return
        for _ in self._threads:
            self._requests.put(None)
        deadline = time.monotonic() + 3
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))


BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + b'{"status":"Server busy, try again shortly"}'
)


def serve_development(app: Flask, listener: socket.socket, threads: int) -> int:
    _allow_many_connections()
    server = DevelopmentServer(app, listener, threads)
    say(f"API available on localhost port {server.port}")
    server.serve_forever()  # returns on Ctrl+C / SIGTERM (werkzeug catches the KeyboardInterrupt)
    return 0


def _announce_when_listening(host: str, port: int) -> None:
    """The banner, once a worker answers on the port (granian's workers each listen when they are ready)."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                say(f"API available on localhost port {port}")
                return
        except OSError:
            time.sleep(0.05)


def _allow_many_connections() -> None:
    """Raise this process's open-file limit to its hard limit: each waiting client is a descriptor."""
    with contextlib.suppress(ValueError, OSError, ImportError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


# -- granian -----------------------------------------------------------------------------------------


def serve_granian(
    target: str, host: str, port: int, workers: int, threads: int, prepare: Callable[[], None] | None, verbose: bool
) -> int:
    """`target` on granian: `workers` processes, each `threads` request threads; a worker that dies
    is replaced; clients get HEADER_TIMEOUT seconds for their headers; a stop takes at most ~5 s."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    _allow_many_connections()
    with listen(host, port) as probe:  # a port that is taken is refused here, in one line, before anything
        port = probe.getsockname()[1]  # (and for PORT=0, granian would not say which port it got)
    server = Granian(
        target,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        factory=True,
        working_dir=ROOT,
        workers=workers,
        blocking_threads=threads,
        backpressure=4096,
        backlog=4096,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_TIMEOUT * 1000),
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=5,
        log_enabled=verbose,
        log_access=verbose,
    )

    @server.on_startup
    def announce() -> None:  # runs once granian has bound the port, before its workers start
        if prepare is not None:
            prepare()
        threading.Thread(target=_announce_when_listening, args=(host, port), daemon=True).start()

    try:
        server.serve()
    except OSError as error:
        raise CannotListenError(f"Cannot listen on {host}:{port}: {_reason(error)}") from None
    except RuntimeError as error:  # granian's bind, in Rust: "Address already in use (os error 98)\n\nStack…"
        raise CannotListenError(f"Cannot listen on {host}:{port}: {str(error).splitlines()[0]}") from None
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0
