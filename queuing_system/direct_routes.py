"""A JSON app's busiest GET routes answered without Flask's per-request machinery.

Under load, Flask's request and application contexts, URL matching, `jsonify` and werkzeug's
Response cost several times what the route itself does (measured: bench/stock.py, README). For the
routes an app names, `DirectRoutes` (its `wsgi_app`) matches the path itself, calls the view
function as it is, and writes its JSON answer; everything else goes through Flask as before:
other paths and methods, and any answer that is not plain data (a Response), or an error, which
Flask's error handlers turn into their JSON answer exactly as if Flask had called the view.

A direct view may return what a Flask view returns for JSON: a dict or a list (200), or a tuple
(data, status) or (data, status, headers). It must not need a request context (no `request`,
no `jsonify`): the app's before/after-request hooks do not run for its answers (json_app's only
hook concerns OPTIONS). Its path is a fixed one or one `<argument>` at the end (werkzeug's default
converter: one segment, no slash); `/route/` and other variants go through Flask.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@functools.cache
def _status_line(code: int) -> str:
    return f"{code} {HTTP_STATUS_CODES.get(code, 'UNKNOWN').upper()}"  # as werkzeug writes it


class DirectRoutes:
    """`app.wsgi_app` for an app whose `endpoints` are answered directly (see the module)."""

    def __init__(self, app: Flask, endpoints: Iterable[str], encoder: json.JSONEncoder) -> None:
        self._app = app
        self._flask: WSGIApp = app.wsgi_app
        self._encode = encoder.encode
        self._fixed: dict[str, Callable[[], Any]] = {}
        self._with_argument: dict[str, tuple[str, Callable[..., Any]]] = {}  # "/prefix" -> (argument, view)
        wanted = set(endpoints)
        for rule in app.url_map.iter_rules():
            if rule.endpoint not in wanted or "GET" not in (rule.methods or ()):
                continue
            view = app.view_functions[rule.endpoint]
            prefix, bracket, argument = rule.rule.partition("/<")
            if not bracket:
                self._fixed[rule.rule] = view
            elif argument.count(">") == 1 and argument.endswith(">") and ":" not in argument:
                self._with_argument[prefix] = (argument[:-1], view)
            else:
                raise ValueError(f"{rule.rule}: not a route answered directly")
            wanted.discard(rule.endpoint)
        if wanted:
            raise ValueError(f"no GET route for {sorted(wanted)}")
        self._plain = {"Content-Type": app.json.mimetype}  # type: ignore[attr-defined]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET":
            return self._flask(environ, start_response)
        path: str = environ.get("PATH_INFO") or "/"
        view = self._fixed.get(path)
        kwargs: dict[str, str] = {}
        if view is None:
            prefix, _, segment = path.rpartition("/")
            found = self._with_argument.get(prefix) if segment else None
            if found is None:
                return self._flask(environ, start_response)
            # As werkzeug reads a path: WSGI gives its bytes as latin-1, they are UTF-8.
            kwargs[found[0]] = segment if segment.isascii() else segment.encode("latin-1").decode(errors="replace")
            view = found[1]
        try:
            answer = view(**kwargs)
        except Exception as error:  # answered by the app's error handlers, as Flask would
            with self._app.request_context(environ):
                response = self._app.finalize_request(self._app.handle_user_exception(error))
            return response(environ, start_response)
        return self._write(environ, start_response, answer)

    def _write(self, environ: dict[str, Any], start_response: StartResponse, answer: Any) -> Iterable[bytes]:
        data, code, extra = answer, 200, None
        if isinstance(answer, tuple):
            data, code, *rest = answer
            extra = rest[0] if rest else None
        if not isinstance(data, (dict, list)):  # a Response, or anything else Flask knows how to answer
            with self._app.request_context(environ):
                response = self._app.finalize_request(answer)
            return response(environ, start_response)
        body = self._encode(data).encode()
        headers = {**self._plain, "Content-Length": str(len(body)), **(extra or {})}
        start_response(_status_line(code), list(headers.items()))
        return [body]
