"""A web dashboard of the lessons' queues: watch jobs move while task 7 runs.

    python -m queuing_system.dashboard                 http://127.0.0.1:9181 (Ctrl+C stops it)
    python -m queuing_system.dashboard --port 8080     another port
    python -m queuing_system.dashboard --host 0.0.0.0  reachable from other machines (think first: anyone
                                                       who reaches it can requeue and delete jobs)

It is rq-dashboard (queues, their jobs by state, workers, job details) for the Redis
of REDIS_URL (and RQ_KEY_PREFIX), with every lesson queue listed from the start and
each job's Kue-style progress and failure reason. It is safe to keep open while
browsing: another site's page can change nothing and read nothing, what is in Redis
is shown as text, and the Redis password is shown nowhere.
"""

# How it is built, on top of rq-dashboard, each concern in its own module:
# - dashboard_data.py: read with RQ's JSON serializer and RQ's classes (so RQ_KEY_PREFIX is followed), the
#   progress and failure reason in the job lists, and what someone else wrote into Redis shown with its
#   reason, never breaking a page, and never written to by a read;
# - dashboard_guard.py: CSRF tokens, no change by GET, the Host header checked;
# - dashboard_pages.py: rq-dashboard's templates with everything escaped, the banner while Redis is away;
# - here: the app, Redis being away said plainly (the pages come back by themselves), URLs shown without
#   their password, a warning when served beyond this machine.

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterable

from flask import Flask, Response, abort, jsonify, request
from markupsafe import escape

from queuing_system.console import REDIS_DOWN, arguments, clean, not_connected, run_lesson, say
from queuing_system.dashboard_data import ReadOnlyQueue, read_with_care, say_what_cannot_be_read
from queuing_system.dashboard_guard import guard, is_loopback, served_names, token_script
from queuing_system.dashboard_pages import EscapingLoader, with_additions
from queuing_system.jobs import bounded, queues_by_priority
from queuing_system.keys import QUEUE_6, QUEUE_7, QUEUE_8, SEAT_QUEUE
from queuing_system.serving import CannotListenError, DevelopmentServer, listen, quiet_logs
from queuing_system.settings import redis_url, shown_url

DEFAULT_PORT = 9181
LESSON_QUEUES = (QUEUE_6, QUEUE_7, QUEUE_8, SEAT_QUEUE)


def _shown_instances(urls: str | Iterable[str]) -> list[str]:
    """rq-dashboard's list of Redis instances for its navbar, passwords hidden (its own masking
    misses a password in the query string)."""
    return [shown_url(url) for url in ([urls] if isinstance(urls, str) else urls)]


def create_app(url: str | None = None, served: Iterable[str] = ()) -> Flask:
    """rq-dashboard's app, set up for the lessons (see the module docstring). Host names other than
    `localhost` (and addresses) are served only if in `served`."""
    from rq_dashboard import web as dashboard
    from rq_dashboard.cli import make_flask_app

    read_with_care(dashboard)
    # Every lesson queue and its priority siblings, listed from the start: a learner sees where jobs will go.
    ReadOnlyQueue.always_listed = tuple(name for base in LESSON_QUEUES for name in queues_by_priority(base))
    dashboard.escape_format_instance_list = _shown_instances

    app: Flask = make_flask_app(None, None, None, "")
    guard(app, frozenset({"localhost", *(name.lower() for name in served)}))  # first: before anything reads Redis
    app.config["RQ_DASHBOARD_REDIS_URL"] = [url or redis_url()]
    dashboard.setup_rq_connection(app)
    # rq-dashboard opens a new client (and pool) on every request naming its instance, leaving the
    # last one to the garbage collector; one Redis here, so one client for the app's life.
    app.before_request_funcs["rq_dashboard"] = [_only_instance_0]
    templates = app.blueprints["rq_dashboard"].jinja_loader
    assert templates is not None  # rq-dashboard's blueprint has its template folder
    app.jinja_loader = EscapingLoader(templates)
    _say_when_redis_is_away(app)
    say_what_cannot_be_read(app)
    return app


def _only_instance_0() -> None:
    if (request.view_args or {}).get("instance_number", 0) != 0:
        abort(404)


def _say_when_redis_is_away(app: Flask) -> None:
    """Redis away: the data endpoints answer a JSON 503, a page opened then a short page that retries by
    itself, an open page a banner; the not-connected line once per outage on the console."""
    away = threading.Event()

    @app.before_request
    def redis_is_there() -> None:
        if request.method == "GET" and not request.path.endswith(".json") and "/static/" not in request.path:
            app.redis_conn.ping()  # type: ignore[attr-defined]  # a page is no use without Redis: say so

    @app.after_request
    def back(response: Response) -> Response:
        if response.status_code < 500:
            away.clear()
        if response.mimetype == "text/html" and response.status_code == 200 and not response.direct_passthrough:
            response.set_data(with_additions(response.get_data(as_text=True), token_script()))
        return response

    def redis_down(error: Exception) -> tuple[Response | str, int]:
        if not away.is_set():
            away.set()
            not_connected(error)
        if request.path.endswith(".json"):
            return jsonify(status="Redis unavailable, try again shortly"), 503
        page = (
            f"<!doctype html><meta http-equiv='refresh' content='2'><title>Redis unavailable</title>"
            f"<p>Redis is not reachable at {escape(shown_url(redis_url()))} ({escape(clean(error))}). "
            f"This page tries again every 2 seconds.</p>"
        )
        return page, 503

    for kind in REDIS_DOWN:
        app.register_error_handler(kind, redis_down)


def serve(host: str, port: int, served: Iterable[str] = ()) -> int:
    try:
        listener = listen(host, port)
    except CannotListenError as error:
        print(error, file=sys.stderr, flush=True)
        return 1
    with listener:
        names = served_names(host, served)
        app = create_app(served=names)
        server = DevelopmentServer(app, listener, threads=8)
        # Two dashboards on one machine (other ports) must not overwrite each other's session cookie.
        app.config["SESSION_COOKIE_NAME"] = f"queuing_dashboard_{server.port}"
        shown = f"[{host}]" if ":" in host else host
        say(f"Dashboard of {shown_url(redis_url())} at http://{shown}:{server.port}/ (Ctrl+C stops it)")
        if not is_loopback(host):
            print(
                f"Warning: the dashboard is reachable from other machines ({shown}:{server.port}): anyone who "
                f"reaches it sees every job's data and can delete jobs; it answers the names "
                f"{', '.join(sorted(names))} and any address (--allowed-host adds a name).",
                file=sys.stderr,
                flush=True,
            )
        server.serve_forever()
    return 0


def main(argv: list[str] | None = None) -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.prog = "python -m queuing_system.dashboard"
        parser.add_argument(
            "--port",
            type=bounded(0, 65535),
            default=DEFAULT_PORT,
            help=f"the port to serve on (default {DEFAULT_PORT}; 0: any free port)",
        )
        parser.add_argument(
            "--host", default="127.0.0.1", help="the address to serve on (default 127.0.0.1: this machine only)"
        )
        parser.add_argument(
            "--allowed-host",
            action="append",
            default=[],
            metavar="NAME",
            help="another host name browsers use to reach it (localhost and addresses always work)",
        )
        parser.add_argument("--verbose", action="store_true", help="log every request")

    args = arguments(__doc__, options, argv)
    quiet_logs(args.verbose)
    run_lesson(lambda: sys.exit(serve(args.host, args.port, args.allowed_host)), interrupted_exit=0)


if __name__ == "__main__":
    main()
