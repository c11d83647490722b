"""A web dashboard of the lessons' queues: watch jobs move while task 7 runs.

    python -m queuing_system.dashboard                 http://127.0.0.1:9181 (Ctrl+C stops it)
    python -m queuing_system.dashboard --port 8080     another port
    python -m queuing_system.dashboard --host 0.0.0.0  reachable from other machines (think first: anyone
                                                       who reaches it can requeue and delete jobs)

It is rq-dashboard (queues, their jobs by state, workers, job details), set up for
these lessons: the Redis of REDIS_URL, RQ's JSON serializer and RQ_KEY_PREFIX, every
lesson queue and its priority siblings listed from the start. Ours on top: each job's
Kue-style progress (a bar, from its `meta`) and the reason a failed job failed, in the
job lists; workers read with the JSON serializer (rq-dashboard 0.9.0 reads their current
job as pickle); Redis being away said plainly (the pages come back by themselves when it
is back), and only when it is; and safe to open in a browser that visits other sites
(dashboard_guard.py: CSRF tokens, no change by GET, the Host checked; dashboard_pages.py:
everything from Redis shown as text; no password on any page or line).
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from collections.abc import Iterable
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from markupsafe import escape
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from queuing_system.console import REDIS_DOWN, arguments, clean, not_connected, run_lesson, say
from queuing_system.dashboard_guard import guard, is_loopback, served_names, token_script
from queuing_system.dashboard_pages import EscapingLoader, with_additions
from queuing_system.jobs import bounded, queues_by_priority
from queuing_system.keys import QUEUE_6, QUEUE_7, QUEUE_8, SEAT_QUEUE
from queuing_system.serving import CannotListenError, DevelopmentServer, listen, quiet_logs
from queuing_system.settings import redis_url, shown_url

DEFAULT_PORT = 9181
LESSON_QUEUES = (QUEUE_6, QUEUE_7, QUEUE_8, SEAT_QUEUE)


def job_extras(job: Job) -> dict[str, Any]:
    """What rq-dashboard does not show in its lists: status, Kue-style progress, failure reason."""
    status = job.get_status(refresh=False)
    progress = job.meta.get("progress")
    if status == JobStatus.FINISHED:
        progress = 100  # as Kue shows a complete job
    error = job.meta.get("error") if status in (JobStatus.FAILED, JobStatus.STOPPED) else None
    return {"status": status.value if status else "", "progress": progress, "error": clean(error) if error else None}


class _JSONWorker(Worker):
    """RQ's Worker, read with the JSON serializer (to show the job each one runs)."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        kwargs.setdefault("serializer", JSONSerializer)
        return super().all(*args, **kwargs)


def _shown_instances(urls: str | Iterable[str]) -> list[str]:
    """rq-dashboard's list of Redis instances for its navbar, passwords hidden (its own masking
    misses a password in the query string)."""
    return [shown_url(url) for url in ([urls] if isinstance(urls, str) else urls)]


def create_app(url: str | None = None, served: Iterable[str] = ()) -> Flask:
    """rq-dashboard's app, set up for the lessons (see the module docstring). Host names other than
    `localhost` (and addresses) are served only if in `served`."""
    from rq_dashboard import web as dashboard  # type: ignore[import-untyped]
    from rq_dashboard.cli import make_flask_app  # type: ignore[import-untyped]

    dashboard.config.serializer = JSONSerializer
    dashboard.Worker = _JSONWorker  # rq-dashboard 0.9.0 lists workers without its serializer setting
    dashboard.escape_format_instance_list = _shown_instances
    if not getattr(dashboard.serialize_job, "with_extras", False):  # once per process
        plain = dashboard.serialize_job

        @functools.wraps(plain)
        def serialize_job(job: Job) -> dict[str, Any]:
            return {**plain(job), **job_extras(job)}

        serialize_job.with_extras = True  # type: ignore[attr-defined]
        dashboard.serialize_job = serialize_job

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
    _list_every_lesson_queue(app)
    _say_when_redis_is_away(app)
    return app


def _only_instance_0() -> None:
    if (request.view_args or {}).get("instance_number", 0) != 0:
        abort(404)


def _list_every_lesson_queue(app: Flask) -> None:
    """RQ lists a queue once a job was enqueued on it; list the lessons' (and their priority siblings)
    from the start, so a learner sees where jobs will go (an empty queue costs nothing). The key names
    are RQ's, so they follow RQ_KEY_PREFIX as RQ does."""

    @app.before_request
    def register_queues() -> None:
        if not getattr(app, "lesson_queues_listed", False):
            names = (name for base in LESSON_QUEUES for name in queues_by_priority(base))
            app.redis_conn.sadd(  # type: ignore[attr-defined]
                Queue.redis_queues_keys, *(Queue.redis_queue_namespace_prefix + name for name in names)
            )
            app.lesson_queues_listed = True  # type: ignore[attr-defined]


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
