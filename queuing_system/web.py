"""What both Flask apps (9_stock, 100_seat) share: every answer JSON, and a Redis connection per request thread.

Every answer is JSON: unknown routes and methods get a JSON 404/405, OPTIONS a
JSON 200 with its Allow header, a Redis that is away a JSON 503 (and the
not-connected line on the console; the client reconnects by itself on a later
request), a Redis that answers with an error (out of memory, busy with a script,
read-only, …) a JSON 503 naming it (and a line on the console, at most one a
second), and anything unexpected a JSON 500 — never an
HTML page, never a traceback on the console. How the apps are served is
`serving.py`.

No client here repeats a command by itself (redis-py's Retry would re-send a write
whose first copy may still run): a step that is safe to repeat is repeated by
`idempotent()`, and a write is made safe to repeat by the identity it carries.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import redis
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from redis.commands.core import Script
from redis.exceptions import InvalidResponse, ResponseError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from queuing_system.console import REDIS_DOWN, means_not_connected, not_connected, say
from queuing_system.direct_routes import DirectRoutes
from queuing_system.refusals import code_of, in_words, said
from queuing_system.settings import connect

T = TypeVar("T")

DEFAULT_PORT = 1245
UNAVAILABLE = "Redis unavailable, try again shortly"
# A product id in a URL, as the original's parseInt read it: digits, leading zeros too ("01" is 1),
# of sane length. Anything else ("1.5", "2abc", "-1") is an id of no product.
ID_PATTERN = re.compile(r"[0-9]{1,12}")


def parse_id(raw: str) -> int | None:
    return int(raw) if ID_PATTERN.fullmatch(raw) else None


# Repeats of a step that is safe to repeat, after a lost connection or a timeout (seconds between).
REPEAT_DELAYS = (0.05, 0.2)


def say_refused(error: BaseException) -> None:
    """A server's line for Redis answering with an error: what Redis said, code first."""
    say(f"Redis refused the request: {said(error)}")


def say_fault(error: BaseException) -> None:
    """A server's line for a failed step: not connected, or what Redis refused."""
    if means_not_connected(error):
        not_connected(error)
    else:
        say_refused(error)


class NotServingYet(Exception):
    """The counts this process serves are not there yet (granian's main process still waits for
    Redis to create them): a JSON 503, said by the main process, not by every request."""


def idempotent(step: Callable[[], T], patience: float = 0.0) -> T:
    """`step()`, repeated on a fresh connection after a lost connection or a timeout: only for a
    step whose repeat changes nothing its first copy did (a read, or a write carrying its identity).
    Repeated twice, or for `patience` seconds if that is longer (a step whose outcome matters)."""
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        try:
            return step()
        except REDIS_DOWN:
            delay = REPEAT_DELAYS[min(attempt, len(REPEAT_DELAYS) - 1)]
            attempt += 1
            if attempt > len(REPEAT_DELAYS) and time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)


class PerThreadClient:
    """A Redis client per request thread, each with a connection of its own (redis-py's
    `single_connection_client`): as many connections as the server has threads, and no pool to
    take a connection from and give it back to on every command, which here cost half of a
    GET's CPU. Use it like a `redis.Redis` (a `register_script` works per thread too)."""

    def __init__(self, url: str | None = None, *, decode_responses: bool = True) -> None:
        self._url = url
        self._decode = decode_responses
        self._local = threading.local()
        # Connects only when used (a thread's own client connects at once): what needs no connection
        # (the encoder a script is encoded with) comes from here, so building an app touches no Redis.
        self._unconnected = connect(url, decode_responses=decode_responses, retries=0)

    def get_encoder(self) -> Any:
        return self._unconnected.get_encoder()

    @property
    def connection_pool(self) -> redis.ConnectionPool:
        """The address and options (settings.url_of reads them), without connecting."""
        return self._unconnected.connection_pool

    def _client(self) -> redis.Redis:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(
                self._url, decode_responses=self._decode, single_connection=True, retries=0
            )
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)

    def one_command(self, *args: Any) -> Any:
        """One command on this thread's connection, its reply as `execute_command` gives it for a command
        with no reply callback (GET, EVALSHA): sent and read by the connection itself, which disconnects
        on an error and reconnects on the next command (a Sentinel group's connection checks first where
        the primary is). What `execute_command` adds around that (a lock for a connection shared between
        threads, a retry policy that here never re-sends) has nothing to do, and cost two thirds of a GET's
        CPU (measured: 38 µs a GET through `client.get`, 13 µs through the connection)."""
        connection = self._client().connection
        assert connection is not None  # a single-connection client's
        connection.send_packed_command(connection.pack_command(*args))
        return connection.read_response()

    def register_script(self, script: str) -> Script:
        # Run on the calling thread's client, not the registering one's (a PerThreadClient acts as a Redis).
        return Script(self, script)  # type: ignore[arg-type]


def per_thread_client(url: str | None = None, *, decode_responses: bool = True) -> redis.Redis:
    """A PerThreadClient, typed as the `redis.Redis` it acts as (every command, pipelines, scripts)."""
    return cast(redis.Redis, PerThreadClient(url, decode_responses=decode_responses))


class ExpressJSON(DefaultJSONProvider):
    """JSON bodies byte for byte like Express's `res.json`: keys in the order written,
    no spaces, UTF-8 as is, and no trailing newline (Flask adds one)."""

    sort_keys = False
    ensure_ascii = False

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self.dumps(self._prepare_response_obj(args, kwargs), separators=(",", ":"))
        return cast(Response, self._app.response_class(body, mimetype=self.mimetype))  # a Flask app's class

    def encoder(self) -> json.JSONEncoder:
        """What `response` writes, as one reusable encoder (json.dumps with options builds one per call)."""
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=self.default)


def answer_directly(app: Flask, *endpoints: str) -> None:
    """The GET routes `endpoints` of a json_app answered without Flask's per-request machinery
    (direct_routes.py: what their views may return, and what still goes through Flask)."""
    app.wsgi_app = DirectRoutes(app, endpoints, cast(ExpressJSON, app.json).encoder())  # type: ignore[method-assign]


def _answer(status: str, code: int, **headers: str) -> Response:
    response: Response = jsonify(status=status)
    response.status_code = code
    response.headers.update(headers)
    return response


def json_app(name: str) -> Flask:
    """A Flask app that answers JSON, for errors and OPTIONS too, and routes `/x/` like `/x` (as Express)."""
    app = Flask(name)
    app.json = ExpressJSON(app)
    app.url_map.strict_slashes = False
    app.url_map.merge_slashes = False  # werkzeug would redirect `//` with an HTML body; Express answers 404

    @app.after_request
    def options_as_json(response: Response) -> Response:
        if request.method == "OPTIONS" and response.mimetype != "application/json":
            return _answer("OK", 200, Allow=response.headers.get("Allow", ""))
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = _answer(error.name, error.code or 500)
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(REDIS_DOWN[0])
    @app.errorhandler(REDIS_DOWN[1])
    @app.errorhandler(InvalidResponse)  # what answers on that port does not speak Redis
    def redis_down(error: Exception) -> Response:
        not_connected(error)
        return _answer(UNAVAILABLE, 503, **{"Retry-After": "1"})

    @app.errorhandler(NotServingYet)
    def not_yet(error: NotServingYet) -> Response:
        return _answer(UNAVAILABLE, 503, **{"Retry-After": "1"})

    last_said: dict[str, float] = {}

    @app.errorhandler(ResponseError)
    def redis_refused(error: ResponseError) -> Response:
        if means_not_connected(error):  # the database in REDIS_URL does not exist: no Redis to use
            return redis_down(error)
        code, now = code_of(error), time.monotonic()
        if now - last_said.get(code, -10.0) >= 1.0:  # one line a second at most, however many requests
            last_said[code] = now
            say_refused(error)
        return _answer(f"Redis refused the request: {in_words(error)}, try again shortly", 503, **{"Retry-After": "1"})

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        app.logger.error("unexpected error: %s: %s", type(error).__name__, error)
        return _answer("Internal Server Error", 500)

    return app
