"""What both Flask servers (9_stock, 100_seat) share: JSON-only errors, Redis-down answers, serving.

Every answer is JSON: unknown routes and methods get a JSON 404/405, a Redis
that is away gets a JSON 503 (and the not-connected line on the console; the
client reconnects by itself on a later request), and anything unexpected a JSON
500 — never an HTML page, never a traceback on the console.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import sys
from typing import Any

from flask import Flask, Response, jsonify
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from queuing_system.console import REDIS_DOWN, not_connected, say

DEFAULT_PORT = 1245
# A product or job id in a URL: a positive decimal integer of sane length, nothing else
# (the original's parseInt also took "1.5" as 1 and "2abc" as 2).
ID_PATTERN = re.compile(r"[1-9][0-9]{0,8}")


def parse_id(raw: str) -> int | None:
    return int(raw) if ID_PATTERN.fullmatch(raw) else None


class ExpressJSON(DefaultJSONProvider):
    """JSON bodies byte for byte like Express's `res.json`: keys in the order written,
    no spaces, UTF-8 as is, and no trailing newline (Flask adds one)."""

    sort_keys = False
    ensure_ascii = False

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = self.dumps(self._prepare_response_obj(args, kwargs), separators=(",", ":"))
        return self._app.response_class(body, mimetype=self.mimetype)


def json_app(name: str) -> Flask:
    """A Flask app that answers JSON, for errors too."""
    app = Flask(name)
    app.json = ExpressJSON(app)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        response = jsonify(status=error.name)
        response.status_code = error.code or 500
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(REDIS_DOWN[0])
    @app.errorhandler(REDIS_DOWN[1])
    def redis_down(error: Exception):
        not_connected(error)
        response = jsonify(status="Redis unavailable, try again shortly")
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        app.logger.error("unexpected error: %s: %s", type(error).__name__, error)
        response = jsonify(status="Internal Server Error")
        response.status_code = 500
        return response

    return app


def serve(app: Flask, host: str, port: int, verbose: bool = False) -> int:
    """Flask's development server, threaded; Ctrl+C/SIGTERM stop it. Returns an exit code."""
    if not verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # request log only with --verbose
    try:
        # Bind here, not in werkzeug: its own "address in use" path prints a paragraph and exits.
        listener = socket.create_server((host, port), reuse_port=False, backlog=1024)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        print(f"Cannot listen on {host}:{port}: {reason}", file=sys.stderr, flush=True)
        return 1
    with listener:
        server = make_server(host, port, app, threaded=True, fd=listener.fileno())  # takes a duplicate
    say(f"API available on localhost port {server.port}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
