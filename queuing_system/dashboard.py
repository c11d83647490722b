"""A web dashboard of the lessons' queues: watch jobs move while task 7 runs.

    python -m queuing_system.dashboard                 http://127.0.0.1:9181 (Ctrl+C stops it)
    python -m queuing_system.dashboard --port 8080     another port
    python -m queuing_system.dashboard --host 0.0.0.0  reachable from other machines (think first: anyone
                                                       who reaches it can requeue and delete jobs)

It is rq-dashboard (queues, their jobs by state, workers, job details), set up for
these lessons: the Redis of REDIS_URL, RQ's JSON serializer, every lesson queue and
its priority siblings listed from the start. Ours on top: each job's Kue-style progress (a bar, from its
`meta`) and the reason a failed job failed, in the job lists; workers read with
the JSON serializer (rq-dashboard 0.9.0 reads their current job as pickle); and
Redis being away said plainly (the pages come back by themselves when it is back).
"""

from __future__ import annotations

import argparse
import functools
import sys
import threading
from typing import Any

from flask import Flask, Response, jsonify, request
from jinja2 import ChoiceLoader, DictLoader
from rq import Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from queuing_system.console import REDIS_DOWN, arguments, clean, not_connected, run_lesson, say
from queuing_system.jobs import bounded, queues_by_priority
from queuing_system.keys import QUEUE_6, QUEUE_7, QUEUE_8, SEAT_QUEUE
from queuing_system.serving import CannotListenError, DevelopmentServer, listen, quiet_logs
from queuing_system.settings import redis_url

DEFAULT_PORT = 9181
LESSON_QUEUES = (QUEUE_6, QUEUE_7, QUEUE_8, SEAT_QUEUE)
JOBS_TEMPLATE = "rq_dashboard/jobs.html"

# Added to each row of rq-dashboard's job lists, under the job's description.
PROGRESS_ROW = """
                <% if (d.progress !== null && d.progress !== undefined) { %>
                <div class="progress" style="height: 1.1rem; margin: 4px 0;" title="progress">
                  <div class="progress-bar <%= {failed: 'bg-danger', finished: 'bg-success'}[d.status]
                                               || 'progress-bar-striped progress-bar-animated' %>"
                       role="progressbar" style="width: <%= d.progress %>%"><%= d.progress %>%</div>
                </div>
                <% } %>
                <span class="badge badge-secondary"><%= d.status %></span>
                <% if (d.error) { %><span class="text-danger"><%= $('<div/>').text(d.error).html() %></span><% } %>
"""
ROW_ANCHOR = """<span class="description ellipsify"><%= $('<div/>').text(d.description).html() %></span>"""


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
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:  # type: ignore[override]
        kwargs.setdefault("serializer", JSONSerializer)
        return super().all(*args, **kwargs)


def create_app(url: str | None = None) -> Flask:
    """rq-dashboard's app, set up for the lessons (see the module docstring)."""
    from rq_dashboard import web as dashboard
    from rq_dashboard.cli import make_flask_app

    dashboard.config.serializer = JSONSerializer
    dashboard.Worker = _JSONWorker  # rq-dashboard 0.9.0 lists workers without its serializer setting
    if not getattr(dashboard.serialize_job, "with_extras", False):  # once per process
        plain = dashboard.serialize_job

        @functools.wraps(plain)
        def serialize_job(job: Job) -> dict[str, Any]:
            return {**plain(job), **job_extras(job)}

        serialize_job.with_extras = True  # type: ignore[attr-defined]
        dashboard.serialize_job = serialize_job

    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = [url or redis_url()]
    dashboard.setup_rq_connection(app)
    _list_every_lesson_queue(app)
    _add_progress_to_job_lists(app)
    _say_when_redis_is_away(app)
    return app


def _list_every_lesson_queue(app: Flask) -> None:
    """RQ lists a queue once a job was enqueued on it; list the lessons' (and their priority siblings)
    from the start, so a learner sees where jobs will go (an empty queue costs nothing)."""

    @app.before_request
    def register_queues() -> None:
        if not getattr(app, "lesson_queues_listed", False):
            app.redis_conn.sadd(
                "rq:queues",
                *(
                    f"rq:queue:{name}"
                    for base in LESSON_QUEUES  # type: ignore[attr-defined]
                    for name in queues_by_priority(base)
                ),
            )
            app.lesson_queues_listed = True  # type: ignore[attr-defined]


def _add_progress_to_job_lists(app: Flask) -> None:
    """rq-dashboard's jobs page, with PROGRESS_ROW in each row (its template otherwise as it is)."""
    source, _, _ = app.jinja_env.loader.get_source(app.jinja_env, JOBS_TEMPLATE)  # type: ignore[union-attr]
    if ROW_ANCHOR not in source:  # a newer rq-dashboard: its own page, unchanged
        return
    app.jinja_loader = ChoiceLoader(
        [DictLoader({JOBS_TEMPLATE: source.replace(ROW_ANCHOR, ROW_ANCHOR + PROGRESS_ROW)}), app.jinja_loader]
    )  # type: ignore[list-item]


# Added to rq-dashboard's pages: a banner while its polls fail (they are answered 503 while Redis is away).
AWAY_BANNER = """<script>
$(document).ajaxError(function () { $('#redis-away').show(); });
$(document).ajaxSuccess(function () { $('#redis-away').hide(); });
</script>
<div id="redis-away" class="alert alert-danger" style="display: none; position: fixed; top: 0; width: 100%;">
Redis is not reachable: showing what was last seen, trying again.</div>
</body>"""


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
            response.set_data(response.get_data(as_text=True).replace("</body>", AWAY_BANNER, 1))
        return response

    def redis_down(error: Exception) -> tuple[Response | str, int]:
        if not away.is_set():
            away.set()
            not_connected(error)
        if request.path.endswith(".json"):
            return jsonify(status="Redis unavailable, try again shortly"), 503
        page = (
            f"<!doctype html><meta http-equiv='refresh' content='2'><title>Redis unavailable</title>"
            f"<p>Redis is not reachable at {clean(redis_url())} ({clean(error)}). "
            f"This page tries again every 2 seconds.</p>"
        )
        return page, 503

    for kind in REDIS_DOWN:
        app.register_error_handler(kind, redis_down)


def serve(host: str, port: int) -> int:
    try:
        listener = listen(host, port)
    except CannotListenError as error:
        print(error, file=sys.stderr, flush=True)
        return 1
    with listener:
        app = create_app()
        server = DevelopmentServer(app, listener, threads=8)
        shown = f"[{host}]" if ":" in host else host
        say(f"Dashboard of {redis_url()} at http://{shown}:{server.port}/ (Ctrl+C stops it)")
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
        parser.add_argument("--verbose", action="store_true", help="log every request")

    args = arguments(__doc__, options, argv)
    quiet_logs(args.verbose)
    run_lesson(lambda: sys.exit(serve(args.host, args.port)), interrupted_exit=0)


if __name__ == "__main__":
    main()
