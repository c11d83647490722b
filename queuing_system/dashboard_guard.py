"""What makes the dashboard safe to open in a browser that also visits other sites.

rq-dashboard protects nothing by itself (its docs leave that to the hosting app): any page
the learner visits could empty a queue with a cross-origin form, requeue with an `<img src>`,
or read every job through DNS rebinding. Here:

- **A token on every state-changing request** (Flask-WTF's `CSRFProtect`, the Flask
  ecosystem's CSRF guard). rq-dashboard's pages already send an `X-CSRFToken` header
  with their `$.post`s when they know a token; `token_script()` hands them ours. Another
  site can neither read the token nor send that header without CORS.
- **No change by GET**: rq-dashboard also accepts `GET /requeue/<queue>`; a route that
  takes POST answers GET with 405 and does nothing.
- **The Host header checked** (DNS rebinding: a page on `evil.example`, renamed to
  127.0.0.1, reaches us as same-origin but still says `Host: evil.example`). An address
  (`127.0.0.1:9181`, `[::1]:9181`, a LAN address) is always served, as no DNS answer can
  turn it into another site; a name only if it is this machine's (`localhost`, its host
  name) or given with `--allowed-host`. Flask's own `TRUSTED_HOSTS` cannot say "any
  address" and does not match IPv6 literals, hence this small check.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from collections.abc import Iterable

from flask import Flask, Response, request
from flask_wtf.csrf import CSRFError, CSRFProtect, generate_csrf

STALE_PAGE = "Refused: this page has no valid token (the dashboard restarted?). Reload the page and try again."


def is_loopback(host: str) -> bool:
    """Whether `host` (as given to --host) reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: assume it is reachable from elsewhere


def served_names(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a browser may use to reach a dashboard bound to `host` (addresses are always fine)."""
    names = {"localhost", *extra}
    if not is_loopback(host):
        names.update({socket.gethostname(), socket.getfqdn()})
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            names.add(host)  # bound to a name: that name is what it serves
    return frozenset(name.lower().rstrip(".") for name in names if name)


def host_is_served(host_header: str, names: frozenset[str]) -> bool:
    """Whether a request's Host header names this server (see the module docstring)."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(host) and host.rstrip(".") in names


def guard(app: Flask, names: frozenset[str]) -> None:
    """Host check, CSRF tokens, and no state change by GET, on `app` (before anything else runs)."""

    @app.before_request
    def check_host() -> Response | None:
        if not host_is_served(request.headers.get("Host", ""), names):
            return Response("Host not served here\n", 400, mimetype="text/plain")
        return None

    state_changing = {rule.endpoint for rule in app.url_map.iter_rules() if "POST" in (rule.methods or ())}

    @app.before_request
    def no_change_by_get() -> Response | None:
        if request.endpoint in state_changing and request.method != "POST":
            return Response("Method Not Allowed: use the dashboard's buttons\n", 405, {"Allow": "POST"})
        return None

    app.secret_key = secrets.token_bytes(32)  # per process: a token outlives no restart
    app.config.update(
        WTF_CSRF_TIME_LIMIT=None,  # a page left open all day still works (the session cookie bounds it)
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="queuing_dashboard",
    )
    CSRFProtect(app)

    @app.errorhandler(CSRFError)
    def refused(error: CSRFError) -> Response:
        return Response(json.dumps({"status": STALE_PAGE}), 403, mimetype="application/json")


def token_script() -> str:
    """A script for a page: its `$.ajax` requests carry this session's CSRF token."""
    token = json.dumps(generate_csrf()).replace("<", "\\u003c")
    return f"<script>$.ajaxSetup({{headers: {{'X-CSRFToken': {token}}}}});</script>\n"
