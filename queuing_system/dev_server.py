"""Flask's development server (werkzeug), hardened against slow and malformed clients.

- Heads: one thread reads every connection's request line and headers as they arrive; only a
  complete head is handed to one of a fixed pool of request threads, so slow heads hold no
  thread. A client gets HEADER_TIMEOUT seconds for its head.
- Bodies: no route reads one, but a client may send one, slowly or without end. Before the
  answer, a request may read at most MAX_BODY bytes within BODY_TIMEOUT seconds of its head;
  after it, werkzeug's drain of the unread rest takes only what has already arrived, at most
  MAX_DRAIN bytes, without waiting. So a trickling body holds a thread for no time at all.
- Errors werkzeug answers itself (a head too long, a bad request line) are JSON, with phrases
  fixed here (Python 3.13 renamed 414's), and are logged only with --verbose.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler

HEADER_TIMEOUT = 10  # seconds a client has to send its request line and headers
IDLE_TIMEOUT = 10  # seconds a connection may stay silent while its answer is written
BODY_TIMEOUT = 5  # seconds after its head within which a request's body may be read
MAX_BODY = 1 << 20  # bytes of body a request may read before its answer
MAX_DRAIN = 1 << 20  # bytes of unread body taken off the socket after the answer (never waited for)
MAX_HEAD = 65536  # bytes of request line and headers; past that the handler answers 414 / 431
MAX_PENDING = 8192  # connections still sending their head, or waiting for a thread; past that: busy

# The phrases of the answers the server itself gives, the same on every Python (http.server's
# differ between versions: 414 is "Request-URI Too Long" before 3.13, "URI Too Long" after).
PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}

BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\n\r\n" + b'{"status":"Server busy, try again shortly"}'
)


class _BoundedBody(io.RawIOBase):
    """A connection's bytes for the handler: first the head the server already read, then the
    socket, within the body limits above (past them: end of stream)."""

    def __init__(self, head: bytes, connection: socket.socket) -> None:
        self._head = memoryview(head)
        self._connection = connection
        self._deadline = time.monotonic() + BODY_TIMEOUT
        self._left = MAX_BODY
        self.answered = False  # set once the answer starts: from then on, drain without waiting
        self._drained = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            size = min(len(buffer), len(self._head))
            buffer[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        if self.answered:
            return self._drain(buffer)
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        try:
            self._connection.settimeout(remaining)
            size = self._connection.recv_into(view)
        except TimeoutError:
            return 0
        finally:
            self._connection.settimeout(IDLE_TIMEOUT)  # for the answer's writes
        self._left -= size
        return size

    def _drain(self, buffer: Any) -> int:
        """What has already arrived, never waiting, and at most MAX_DRAIN bytes in all."""
        view = memoryview(buffer)[: MAX_DRAIN - self._drained]
        if not view:
            return 0
        try:
            self._connection.settimeout(0)  # Python waits for data on a socket with a timeout, flags or not
            size = self._connection.recv_into(view)
        except OSError:  # nothing there yet (BlockingIOError), or the client went away
            return 0
        finally:
            self._connection.settimeout(IDLE_TIMEOUT)
        self._drained += size
        return size


class _JSONRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, reading the head the server read for it and the body within bounds,
    with JSON for what it answers before Flask sees the request (a head too long, say)."""

    timeout = IDLE_TIMEOUT  # socketserver sets it on the connection

    def setup(self) -> None:
        super().setup()
        self._body = _BoundedBody(self.server.take_head(self.connection), self.connection)  # type: ignore[attr-defined]
        self.rfile = io.BufferedReader(self._body)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._body.answered = True  # werkzeug drains the unread body after this: only what is there
        super().send_response(code, message)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        phrase = PHRASES.get(code, "Error")
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

    def log_error(self, format: str, *args: Any) -> None:
        """Request errors (`code 414, message URI Too Long`) are part of the request log: --verbose only."""
        if logging.getLogger("werkzeug").isEnabledFor(logging.INFO):
            super().log_error(format, *args)


def _head_complete(head: bytearray) -> bool:
    """An empty line ends the head; http.server reads lines ending in a bare LF too."""
    return b"\n\r\n" in head or b"\n\n" in head


@dataclass
class _Arriving:
    """A connection whose request head is still arriving."""

    address: Any
    deadline: float
    head: bytearray = field(default_factory=bytearray)


class DevelopmentServer(BaseWSGIServer):
    """Flask's development server with the head reader and the bounded thread pool described above;
    Ctrl+C / SIGTERM stop it at once."""

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
            data = connection.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(selector, arriving, connection)
            return
        state.head += data
        if _head_complete(state.head) or len(state.head) > MAX_HEAD:  # complete (or too long: the handler says so)
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


def serve_development(app: Flask, listener: socket.socket, threads: int, listening: Callable[[int], None]) -> int:
    """Serve `app` until Ctrl+C / SIGTERM; `listening(port)` once it accepts connections."""
    server = DevelopmentServer(app, listener, threads)
    listening(server.port)
    server.serve_forever()  # returns on Ctrl+C / SIGTERM (werkzeug catches the KeyboardInterrupt)
    return 0
