"""What both Flask apps (9_stock, 100_seat) share: every answer JSON, and Redis connections sized to the server
(one per request thread, or a pool as large as the threads with a bounded wait).

Every answer is JSON: unknown routes and methods get a JSON 404/405, OPTIONS a
JSON 200 with its Allow header, a Redis that is away a JSON 503 (and the
not-connected line on the console; the client reconnects by itself on a later
request), a Redis that answers with an error (out of memory, busy with a script,
read-only, …) a JSON 503 naming it (and a line on the console, at most one a
second), a server whose every connection is busy a JSON 503 saying so (no
console line: Redis is fine), and anything unexpected a JSON 500 — never an
HTML page, never a traceback on the console. How the apps are served is
`serving.py`.

No client here repeats a command by itself (redis-py's Retry would re-send a write
whose first copy may still run): a step that is safe to repeat is repeated by
`idempotent()`, and a write is made safe to repeat by the identity it carries.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from flask import Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from werkzeug.exceptions import HTTPException

from queuing_system.console import REDIS_DOWN, clean, not_connected, say
from queuing_system.settings import connect, env_int

T = TypeVar("T")

DEFAULT_PORT = 1245
# A product id in a URL, as the original's parseInt read it: digits, leading zeros too ("01" is 1),
# of sane length. Anything else ("1.5", "2abc", "-1") is an id of no product.
ID_PATTERN = re.compile(r"[0-9]{1,12}")
# How long a request waits for a free Redis connection before it is answered "busy".
CONNECTION_WAIT = 5.0


def parse_id(raw: str) -> int | None:
    return int(raw) if ID_PATTERN.fullmatch(raw) else None


class ServerBusyError(RedisConnectionError):
    """Every Redis connection of this server process stayed in use for CONNECTION_WAIT seconds."""


class _BoundedPool(redis.BlockingConnectionPool):
    """redis-py's blocking pool, saying "busy" rather than the ConnectionError it shares with "Redis is down"."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)
        except RedisConnectionError as error:
            if str(error) == "No connection available.":  # redis-py's words for a wait that timed out
                raise ServerBusyError("every Redis connection of this server is in use") from None
            raise


# What a Redis error reply means, in a few words, by its code (the first word Redis sends).
REFUSALS = {
    "OOM": "out of memory",
    "BUSY": "busy running a script",
    "READONLY": "read-only (a replica)",
    "MASTERDOWN": "cut off from its primary",
    "NOREPLICAS": "short of replicas",
    "MISCONF": "unable to save to disk",
    "WRONGTYPE": "a key holds another kind of value",
}
# Repeats of a step that is safe to repeat, after a lost connection or a timeout (seconds between).
REPEAT_DELAYS = (0.05, 0.2)


def refusal_code(error: ResponseError) -> str:
    """The code of a Redis error reply (redis-py keeps it for some, leaves it in the text of others)."""
    return error.status_code or str(error).split(" ", 1)[0]


def refusal(error: ResponseError) -> str:
    """`out of memory`, or what Redis said when it is not one of the common refusals."""
    return REFUSALS.get(refusal_code(error)) or said(error)


def said(error: ResponseError) -> str:
    """The error reply as Redis sent it, code first (`OOM command not allowed …`), on one line."""
    return clean(f"{error.status_code} {error}" if error.status_code else error)


def idempotent(step: Callable[[], T], patience: float = 0.0) -> T:
    """`step()`, repeated on a fresh connection after a lost connection or a timeout: only for a
    step whose repeat changes nothing its first copy did (a read, or a write carrying its identity).
    Repeated twice, or for `patience` seconds if that is longer (a step whose outcome matters)."""
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        try:
            return step()
        except ServerBusyError:
            raise  # no connection of ours was free: repeating would only wait again
        except REDIS_DOWN:
            delay = REPEAT_DELAYS[min(attempt, len(REPEAT_DELAYS) - 1)]
            attempt += 1
            if attempt > len(REPEAT_DELAYS) and time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)


def request_threads() -> int:
    """How many requests a server process serves at once (the serving command sets it for its workers)."""
    return env_int("QUEUING_SERVER_THREADS", 32, 1, 1024)


def server_client(url: str | None = None, *, decode_responses: bool = True) -> redis.Redis:
    """A client for a server process: one connection per request thread (so none waits for one),
    at most a few more; past that a request waits CONNECTION_WAIT seconds, then is answered busy."""
    base = connect(url, decode_responses=decode_responses, retries=0)
    pool = _BoundedPool(
        max_connections=request_threads() + 4,
        timeout=CONNECTION_WAIT,
        connection_class=base.connection_pool.connection_class,
        **base.connection_pool.connection_kwargs,
    )
    base.connection_pool.disconnect()
    return redis.Redis(connection_pool=pool)


class PerThreadClient:
    """A Redis client per request thread, each with a connection of its own (redis-py's
    `single_connection_client`): as many connections as the server has threads, and no pool to
    take a connection from and give it back to on every command, which here cost half of a
    GET's CPU. Use it like a `redis.Redis` (a `register_script` works per thread too)."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._local = threading.local()
        # Connects only when used (a thread's own client connects at once): what needs no connection
        # (the encoder a script is encoded with) comes from here, so building an app touches no Redis.
        self._unconnected = connect(url, retries=0)

    def get_encoder(self) -> Any:
        return self._unconnected.get_encoder()

    @property
    def connection_pool(self) -> redis.ConnectionPool:
        """The address and options (settings.url_of reads them), without connecting."""
        return self._unconnected.connection_pool

    def _client(self) -> redis.Redis:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = connect(self._url, single_connection=True, retries=0)
        return client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client(), name)

    def register_script(self, script: str) -> Script:
        return Script(self, script)  # run on the calling thread's client, not the registering one's


class ExpressJSON(DefaultJSONProvider):
    """JSON bodies byte for byte like Express's `res.json`: keys in the order written,
    no spaces, UTF-8 as is, and no trailing newline (Flask adds one)."""

    sort_keys = False
    ensure_ascii = False

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self.dumps(self._prepare_response_obj(args, kwargs), separators=(",", ":"))
        return self._app.response_class(body, mimetype=self.mimetype)


def _answer(status: str, code: int, **headers: str) -> Response:
    response = jsonify(status=status)
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
    def http_error(error: HTTPException):
        response = _answer(error.name, error.code or 500)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(ServerBusyError)
    def busy(error: ServerBusyError):
        return _answer("Server busy, try again shortly", 503, **{"Retry-After": "1"})

    @app.errorhandler(REDIS_DOWN[0])
    @app.errorhandler(REDIS_DOWN[1])
    @app.errorhandler(InvalidResponse)  # what answers on that port does not speak Redis
    def redis_down(error: Exception):
        not_connected(error)
        return _answer("Redis unavailable, try again shortly", 503, **{"Retry-After": "1"})

    last_said: dict[str, float] = {}

    @app.errorhandler(ResponseError)
    def redis_refused(error: ResponseError):
        code, now = refusal_code(error), time.monotonic()
        if now - last_said.get(code, -10.0) >= 1.0:  # one line a second at most, however many requests
            last_said[code] = now
            say(f"Redis refused the request: {said(error)}")
        return _answer(f"Redis refused the request: {refusal(error)}, try again shortly", 503, **{"Retry-After": "1"})

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        app.logger.error("unexpected error: %s: %s", type(error).__name__, error)
        return _answer("Internal Server Error", 500)

    return app
