"""The dashboard is safe to open in a browser that visits other sites (issue 22): another site's page
changes nothing, a foreign Host reads nothing, markup from Redis is text, no password is shown."""

from __future__ import annotations

import html
import http.client
import json
import re
import shutil
import signal
import subprocess
from urllib.parse import quote

import pytest
import redis
from rq.job import JobStatus

from queuing_system import dashboard
from queuing_system.dashboard_guard import STALE_PAGE, host_is_served, served_names
from queuing_system.embedded import free_port
from queuing_system.jobs import enqueue, job_queue
from queuing_system.keys import PROCESS_7, QUEUE_7
from queuing_system.processes import ScriptProcess
from queuing_system.settings import shown_url
from tests.job_helpers import fetch

# What a browser sends with a request another site's page makes: a form POST, an <img src>.
CROSS_SITE_FORM = {
    "Origin": "http://evil.example",
    "Referer": "http://evil.example/cats.html",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Content-Type": "application/x-www-form-urlencoded",
}
CROSS_SITE_IMAGE = {
    "Referer": "http://evil.example/cats.html",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Dest": "image",
}
TOKEN = re.compile(r"'X-CSRFToken': \"([^\"]+)\"")


@pytest.fixture
def queued_and_failed(redis_url, rq_connection):
    """Two jobs queued on task 7's queue (no processor runs) and one failed there."""
    queue = job_queue(QUEUE_7, rq_connection)
    queued = [enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": f"hi {n}"}) for n in (1, 2)]
    failed = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518780", "message": "hi"})
    queue.remove(failed)
    failed.set_status(JobStatus.FAILED)
    queue.failed_job_registry.add(failed, ttl=600, exc_string="Phone number 4153518780 is blacklisted")
    return queue, queued, failed


def state(queue, failed) -> tuple:
    return queue.get_job_ids(), queue.failed_job_registry.get_job_ids(), fetch(queue.connection, failed.id).get_status()


def test_another_sites_requests_change_nothing(queued_and_failed, redis_url) -> None:
    queue, queued, failed = queued_and_failed
    client = dashboard.create_app(redis_url).test_client()
    page = client.get("/")  # the learner has the dashboard open: the browser holds its session cookie
    assert page.status_code == 200
    before = state(queue, failed)
    assert before == ([job.id for job in queued], [failed.id], JobStatus.FAILED)

    attacks = [
        ("POST", f"/queue/{QUEUE_7}/queued/empty", CROSS_SITE_FORM),
        ("POST", f"/queue/{QUEUE_7}/failed/empty", CROSS_SITE_FORM),
        ("POST", f"/job/{queued[0].id}/delete", CROSS_SITE_FORM),
        ("POST", f"/job/{failed.id}/requeue", CROSS_SITE_FORM),
        ("POST", f"/requeue/{QUEUE_7}", CROSS_SITE_FORM),
        ("POST", f"/queue/{QUEUE_7}/compact", CROSS_SITE_FORM),
        ("GET", f"/requeue/{QUEUE_7}", CROSS_SITE_IMAGE),
        ("GET", f"/job/{queued[0].id}/delete", CROSS_SITE_IMAGE),
    ]
    answers = [client.open(path, method=method, headers=headers).status_code for method, path, headers in attacks]
    assert answers == [403] * 6 + [405] * 2
    refusal = client.post(f"/job/{queued[0].id}/delete", headers=CROSS_SITE_FORM)
    assert refusal.get_json() == {"status": STALE_PAGE} and refusal.mimetype == "application/json"
    assert state(queue, failed) == before

    # The dashboard's own buttons (its pages send the token) still work.
    token = TOKEN.search(page.get_data(as_text=True)).group(1)
    own = {"X-CSRFToken": token, "X-Requested-With": "XMLHttpRequest"}
    assert client.post(f"/requeue/{QUEUE_7}", headers=own).status_code == 200
    assert queue.get_job_ids() == [job.id for job in queued] + [failed.id]
    assert client.post(f"/queue/{QUEUE_7}/queued/empty", headers=own).status_code == 200
    assert queue.get_job_ids() == []


def test_a_token_from_another_session_is_refused(queued_and_failed, redis_url) -> None:
    queue, queued, _ = queued_and_failed
    app = dashboard.create_app(redis_url)
    victim, attacker = app.test_client(), app.test_client()
    token = TOKEN.search(attacker.get("/").get_data(as_text=True)).group(1)  # the attacker's own token
    victim.get("/")
    assert victim.post(f"/job/{queued[0].id}/delete", headers={"X-CSRFToken": token}).status_code == 403
    assert queue.get_job_ids() == [job.id for job in queued]


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("127.0.0.1:9181", True),
        ("localhost:9181", True),
        ("LOCALHOST.:9181", True),
        ("[::1]:9181", True),
        ("192.0.2.7:9181", True),  # an address: no DNS answer can make it another site's
        ("evil.example:9181", False),
        ("evil.example", False),
        ("localhost.evil.example:9181", False),
        ("127.0.0.1.nip.io:9181", False),
        ("", False),
        ("[::1", False),
    ],
)
def test_which_hosts_are_served(host: str, served: bool) -> None:
    assert host_is_served(host, served_names("127.0.0.1")) is served


def test_a_foreign_host_gets_no_data(queued_and_failed, redis_url) -> None:
    client = dashboard.create_app(redis_url).test_client()
    paths = [
        "/",
        f"/0/view/jobs/{QUEUE_7}/queued/8/asc/1",
        "/0/data/queues.json",
        f"/0/data/jobs/{QUEUE_7}/queued/8/asc/1.json",
    ]
    for path in paths:
        answer = client.get(path, headers={"Host": "evil.example:9181"})
        assert (answer.status_code, answer.get_data(as_text=True)) == (400, "Host not served here\n")
        assert client.get(path, headers={"Host": "localhost:9181"}).status_code == 200


def test_every_template_escapes_what_it_shows(redis_url) -> None:
    app = dashboard.create_app(redis_url)
    names = [name for name in app.jinja_env.list_templates() if name.startswith("rq_dashboard/")]
    assert "rq_dashboard/job.html" in names and "rq_dashboard/jobs.html" in names
    for name in names:
        source, _, _ = app.jinja_env.loader.get_source(app.jinja_env, name)
        assert "<%=" not in source, name  # underscore's raw interpolation: none left
        assert "$('<div/>').text(" not in source, name  # escaped once, not twice
    jobs_page, _, _ = app.jinja_env.loader.get_source(app.jinja_env, "rq_dashboard/jobs.html")
    assert "progress-bar" in jobs_page and "<%- d.error %>" in jobs_page


def http_get(port: int, path: str, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


SECRET = "TopSecret-42"


def test_the_password_is_in_no_page_and_no_line(own_redis) -> None:
    own_redis_client = redis.Redis.from_url(own_redis.url)
    own_redis_client.config_set("requirepass", SECRET)
    own_redis_client.close()
    url = own_redis.url.replace("redis://", f"redis://:{SECRET}@")
    port = free_port()
    with ScriptProcess("-m", ["queuing_system.dashboard", "--port", str(port)], env={"REDIS_URL": url}) as server:
        shown = url.replace(SECRET, "***")
        server.wait_for_line(f"Dashboard of {shown} at http://127.0.0.1:{port}/ (Ctrl+C stops it)")
        status, page = http_get(port, "/", f"127.0.0.1:{port}")
        assert status == 200 and shown in page  # rq-dashboard's navbar names the Redis, password hidden
        own_redis.kill()
        status, away = http_get(port, "/", f"127.0.0.1:{port}")
        assert status == 503 and f"Redis is not reachable at {shown}" in away
        server.wait_until(lambda: any(line.startswith("Redis client not connected") for line in server.lines))
        own_redis.start()
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    assert SECRET not in page + away + "\n".join(server.lines) + server.stderr


def test_beyond_loopback_it_warns_and_answers_only_its_names(redis_url) -> None:
    port = free_port()
    args = ["queuing_system.dashboard", "--host", "0.0.0.0", "--port", str(port), "--allowed-host", "queues.lan"]
    with ScriptProcess("-m", args) as server:
        server.wait_for_line(f"Dashboard of {redis_url} at http://0.0.0.0:{port}/ (Ctrl+C stops it)")
        assert http_get(port, "/0/data/queues.json", f"queues.lan:{port}")[0] == 200
        assert http_get(port, "/0/data/queues.json", f"127.0.0.1:{port}")[0] == 200
        assert http_get(port, "/0/data/queues.json", f"evil.example:{port}") == (400, "Host not served here\n")
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    [warning] = server.stderr.splitlines()
    assert warning.startswith(f"Warning: the dashboard is reachable from other machines (0.0.0.0:{port}): ")
    assert "queues.lan" in warning


def test_rq_key_prefix_is_honoured(redis_url, r) -> None:
    """RQ_KEY_PREFIX (read by rq 3.0 from the environment): the dashboard reads and lists queues under it."""
    r.sadd("{myq}:queues", "{myq}:queue:custom")
    r.rpush("{myq}:queue:custom", "1", "2")
    port = free_port()
    with ScriptProcess(
        "-m", ["queuing_system.dashboard", "--port", str(port)], env={"RQ_KEY_PREFIX": "{myq}"}
    ) as server:
        server.wait_for_line(f"Dashboard of {redis_url} at http://127.0.0.1:{port}/ (Ctrl+C stops it)")
        status, body = http_get(port, "/0/data/queues.json", f"127.0.0.1:{port}")
        counts = {queue["name"]: queue["count"] for queue in json.loads(body)["queues"]}
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    assert status == 200 and counts["custom"] == 2 and counts[QUEUE_7] == 0
    assert [key for key in r.keys("*") if not key.startswith("{myq}:")] == []  # nothing under rq:


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
MARKUP = "<img src=x onerror=\"document.body.setAttribute('data-pwned', '{}')\">"


def rendered(port: int, path: str) -> str:
    """The page's DOM after its scripts ran, as headless Chromium sees it."""
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=4000", "--dump-dom"]
    return subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=60
    ).stdout


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium)")
def test_markup_from_redis_is_shown_as_text_in_a_browser(redis_url, rq_connection) -> None:
    queue = job_queue(QUEUE_7, rq_connection)
    job = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": MARKUP.format("description")})
    rq_connection.hset(job.key, "meta", json.dumps({"progress": '50">' + MARKUP.format("meta")}))
    rq_connection.sadd("rq:queues", "rq:queue:" + MARKUP.format("queue"))  # anyone can name a queue
    port = free_port()
    with ScriptProcess("-m", ["queuing_system.dashboard", "--port", str(port)]) as server:
        server.wait_for_line(f"Dashboard of {redis_url} at http://127.0.0.1:{port}/ (Ctrl+C stops it)")
        pages = {
            "queue name": rendered(port, "/"),
            "progress in the job list": rendered(port, f"/0/view/jobs/{QUEUE_7}/queued/8/asc/1"),
            "description and meta on the job's page": rendered(port, f"/0/view/job/{job.id}"),
        }
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    for where, dom in pages.items():
        assert "data-pwned=" not in dom, where  # no script ran
        assert "&lt;img src=x onerror=" in dom, where  # the markup is there, as text


# A page with the banners we add to rq-dashboard's pages, which then asks for: a poll cut short (as when
# a page is reloaded, or a screenshot taken, mid-poll), a poll answered 503 (what the
# dashboard answers while Redis is away), and a poll answered 200. After each, it notes whether the banner shows.
BANNER_PAGE = """<!doctype html><html><body>
<script src="/jquery.js"></script>
<script>
function shown() { return $('#redis-away').is(':visible') ? 'shown' : 'hidden'; }
$(function () {
  var seen = [];
  function note(next) {  // after jQuery's global ajaxError/ajaxSuccess handlers ran
    return function () { setTimeout(function () { seen.push(shown()); next(); }, 0); };
  }
  function done() { document.body.setAttribute('data-seen', seen.join(',')); }
  function fine() { $.ajax('/fine.json').always(note(done)); }
  function away() { $.ajax('/away.json').always(note(fine)); }
  var cut = $.ajax('/slow.json');
  cut.always(note(away));
  cut.abort();
});
</script>
</body></html>"""


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium)")
def test_the_redis_banner_shows_only_while_redis_is_away() -> None:
    """Issue 17: the red banner showed after any cut-short request, while Redis was fine."""
    import threading
    from pathlib import Path

    import rq_dashboard
    from flask import Flask
    from werkzeug.serving import make_server

    from queuing_system.dashboard_pages import with_additions

    app = Flask(__name__)
    moved_on = threading.Event()
    jquery = Path(rq_dashboard.__file__).parent / "static/js/jquery-3.5.1.min.js"

    def slow() -> str:
        moved_on.wait(10)  # answered only once the browser gave up on it and asked for the next
        return "{}"

    def away() -> tuple[str, int]:
        moved_on.set()
        return '{"status": "Redis unavailable, try again shortly"}', 503

    routes = {
        "/": lambda: with_additions(BANNER_PAGE, ""),
        "/jquery.js": lambda: (jquery.read_bytes(), {"Content-Type": "text/javascript"}),
        "/slow.json": slow,
        "/away.json": away,
        "/fine.json": lambda: ("{}", 200),
    }
    for path, view in routes.items():
        app.add_url_rule(path, endpoint=path, view_func=view)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dom = rendered(server.server_port, "/")
    finally:
        moved_on.set()
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert 'data-seen="hidden,shown,hidden"' in dom


# A page of the dashboard's own origin that presses "Empty queue" as rq-dashboard's button does ($.post).
BUTTON_PAGE = """<!doctype html><html><body>
<script src="/static/js/jquery-3.5.1.min.js"></script>
<script>
$(function () {
  $.post('/queue/{queue}/queued/empty').always(function (data, status, xhr) {
    document.body.setAttribute('data-answer', (xhr && xhr.status) || data.status);
  });
});
</script>
</body></html>"""


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium)")
def test_the_dashboards_own_buttons_work_in_a_browser(queued_and_failed, redis_url) -> None:
    """The token our pages hand to rq-dashboard's `$.post`s gets through (the session cookie, the header)."""
    import threading

    from werkzeug.serving import make_server

    queue, _, _ = queued_and_failed
    app = dashboard.create_app(redis_url)
    app.add_url_rule("/press-empty", "press-empty", lambda: BUTTON_PAGE.replace("{queue}", QUEUE_7))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dom = rendered(server.server_port, "/press-empty")
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    assert 'data-answer="200"' in dom
    assert queue.get_job_ids() == []


def test_what_others_wrote_in_redis_never_breaks_a_page(redis_url, rq_connection) -> None:
    """Issue 22: keys and jobs written by someone else (keys of another type, garbled jobs, a vanished job,
    junk in RQ's set of queues) are shown with their reason, the rest as usual; no traceback, no write."""
    queue = job_queue(QUEUE_7, rq_connection)
    good = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "fine"})
    odd_meta = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "meta is a list"})
    rq_connection.hset(odd_meta.key, "meta", json.dumps([1, 2]))
    garbled = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "garbled"})
    rq_connection.hset(garbled.key, "created_at", "not a date")
    string_job = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "a string"})
    rq_connection.delete(string_job.key)
    rq_connection.set(string_job.key, "not a hash")
    rq_connection.rpush(queue.key, "999")  # a job that vanished
    rq_connection.set("rq:queue:weird", "a string, not a list")
    rq_connection.set("rq:failed:weird", "a string, not a sorted set")
    rq_connection.sadd("rq:queues", "rq:queue:weird", "junk", b"rq:queue:\xff")
    port = free_port()
    with ScriptProcess("-m", ["queuing_system.dashboard", "--port", str(port)]) as server:
        server.wait_for_line(f"Dashboard of {redis_url} at http://127.0.0.1:{port}/ (Ctrl+C stops it)")

        def get(path: str) -> tuple[int, dict]:
            status, body = http_get(port, path, f"127.0.0.1:{port}")
            return status, json.loads(body)

        status, queues = get("/0/data/queues.json")
        rows = {row["name"]: row for row in queues["queues"]}
        jobs = get(f"/0/data/jobs/{QUEUE_7}/queued/8/asc/1.json")
        details = [get(f"/0/data/job/{job_id}.json") for job_id in (odd_meta.id, garbled.id, string_job.id, "999")]
        pages = [
            http_get(port, path, f"127.0.0.1:{port}")[0] for path in ("/", f"/0/view/jobs/{QUEUE_7}/queued/8/asc/1")
        ]
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    assert status == 200 and rows[QUEUE_7]["count"] == 5 and rows["\ufffd"]["count"] == 0
    weird = "weird (cannot be read: WRONGTYPE Operation against a key holding the wrong kind of value)"
    assert (rows[weird]["count"], rows[weird]["failed_job_registry_count"]) == ("?", "?")
    assert jobs[0] == 200 and [job["id"] for job in jobs[1]["jobs"]] == [good.id, odd_meta.id]
    assert [status for status, _ in details] == [200, 500, 500, 404]
    assert details[1][1]["status"].startswith("Unreadable job: time data 'not a date'")
    assert details[2][1] == {
        "status": "Unreadable job: WRONGTYPE Operation against a key holding the wrong kind of value"
    }
    assert pages == [200, 200]
    assert queue.get_job_ids() == [good.id, odd_meta.id, garbled.id, string_job.id, "999"]  # reading wrote nothing
    assert server.stderr == "" and server.lines[1:] == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:TopSecret-42@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://alice:p%40ss@h:6379/0", "redis://alice:***@h:6379/0"),
        ("redis://:a@b@h:6379/0", "redis://:***@h:6379/0"),  # an unquoted @ in the password
        ("redis://alice@h:6379/0", "redis://alice@h:6379/0"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("rediss://h/0?ssl_ca_certs=/ca.pem&ssl_password=k3y", "rediss://h/0?ssl_ca_certs=/ca.pem&ssl_password=***"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("redis+sentinel://:pw@s1:26379,s2:26379/mymaster/0", "redis+sentinel://:***@s1:26379,s2:26379/mymaster/0"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert shown_url(url) == shown


def test_no_get_writes_anything(queued_and_failed, redis_url, rq_connection) -> None:
    """Every page and data endpoint, read with stale and odd entries in Redis (a vanished job, a dead worker
    still registered, junk in RQ's set of workers): Redis is byte for byte as before."""
    queue, queued, failed = queued_and_failed
    rq_connection.rpush(queue.key, "999")
    rq_connection.sadd("rq:workers", "rq:worker:gone", "junk", b"rq:worker:\xff")
    rq_connection.sadd(f"rq:workers:{QUEUE_7}", "rq:worker:gone")

    def snapshot() -> dict:
        read = {b"hash": rq_connection.hgetall, b"list": lambda key: rq_connection.lrange(key, 0, -1),
                b"set": rq_connection.smembers, b"zset": lambda key: rq_connection.zrange(key, 0, -1, withscores=True),
                b"string": rq_connection.get, b"stream": rq_connection.xrange}  # fmt: skip
        return {key: read[rq_connection.type(key)](key) for key in sorted(rq_connection.keys("*"))}

    before = snapshot()
    client = dashboard.create_app(redis_url).test_client()
    job = queued[0].id
    paths = ["/", "/0/view/workers", "/0/view/jobs", f"/0/view/jobs/{QUEUE_7}/queued/8/asc/1", f"/0/view/job/{job}"]
    paths += ["/0/data/queues.json", "/0/data/workers.json", f"/0/data/job/{job}.json", f"/0/data/job/{failed.id}.json"]
    registries = ("queued", "failed", "started", "finished", "deferred", "scheduled", "canceled")
    paths += [f"/0/data/jobs/{QUEUE_7}/{registry}/8/asc/1.json" for registry in registries]
    assert [client.get(path).status_code for path in paths] == [200] * len(paths)
    assert client.get("/0/data/workers.json").get_json() == {"workers": []}
    assert snapshot() == before


# A queue name that ends rq-dashboard's JS string and its handlers (F3 of the attack on issues 21-22): had it
# run, it would delete job 101 with the page's own token. The second one, for a fix that only changes the
# quotes, escapes the escape. (A name with '/' reaches no page: Werkzeug splits the path at %2F.)
QUEUE_NAME_ATTACKS = (
    "');}});setTimeout(function(){$.post(url_for('delete_job','101'))},500);"
    "document.body.setAttribute('data-pwned','js');$('x').on('y',function(){if(1){$(this).val('",
    '\\");}});document.body.setAttribute("data-pwned","quote");$("x").on("y",function(){if(1){$(this).val("',
)
RESTORED_NAME = re.compile(r'\$\(this\)\.val\(("(?:[^"\\]|\\.)+")\);')  # the name put back


def test_every_template_value_in_a_script_is_a_js_literal(redis_url) -> None:
    """Flask does not escape a `.js` template (nor would HTML escaping make a JS string safe): every
    `{{ }}` in a template that ends up inside a <script> goes through `tojson`."""
    app = dashboard.create_app(redis_url)
    scripts = [name for name in app.jinja_env.list_templates() if name.startswith("rq_dashboard/scripts/")]
    assert "rq_dashboard/scripts/jobs.js" in scripts and "rq_dashboard/scripts/dashboard.js" in scripts
    for name in [*scripts, "rq_dashboard/inline_js.html"]:
        source, _, _ = app.jinja_env.loader.get_source(app.jinja_env, name)
        values = re.findall(r"\{\{(.*?)\}\}", source)
        assert all("|tojson" in value.replace(" ", "") for value in values), (name, values)


@pytest.mark.parametrize("name", [*QUEUE_NAME_ATTACKS, "push_notification_code_2:high", 'it\'s "quoted"'])
def test_a_queue_name_in_the_url_is_one_js_string(name: str, redis_url) -> None:
    """The jobs page puts its queue name back in the queue box with exactly that name, whatever it is."""
    client = dashboard.create_app(redis_url).test_client()
    page = client.get(f"/0/view/jobs/{quote(name, safe='')}/queued/8/asc/1")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert [json.loads(literal) for literal in RESTORED_NAME.findall(text)] == [name]
    assert name in html.unescape(text) and (name not in text or name == "push_notification_code_2:high")


@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium here (apt-get install chromium)")
def test_a_queue_name_from_the_url_or_redis_runs_no_script(redis_url, rq_connection) -> None:
    """F3: the attacker's link (reflected) and a queue with that name in RQ's set of queues (stored)."""
    queue = job_queue(QUEUE_7, rq_connection)
    job = enqueue(queue, PROCESS_7, {"phoneNumber": "4153518743", "message": "keep me"})
    names = [name.replace("'101'", json.dumps(job.id)) for name in QUEUE_NAME_ATTACKS]
    rq_connection.sadd("rq:queues", *(f"rq:queue:{name}" for name in names))
    port = free_port()
    with ScriptProcess("-m", ["queuing_system.dashboard", "--port", str(port)]) as server:
        server.wait_for_line(f"Dashboard of {redis_url} at http://127.0.0.1:{port}/ (Ctrl+C stops it)")
        doms = [rendered(port, f"/0/view/jobs/{quote(name, safe='')}/queued/8/asc/1") for name in names]
        doms.append(rendered(port, "/"))
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    for dom in doms:
        assert "<body" in dom and "data-pwned=" not in dom
    assert queue.get_job_ids() == [job.id]


def test_rqs_set_of_workers_of_another_type_is_one_row_saying_so(redis_url, rq_connection) -> None:
    """The attack on issues 21-22: with `rq:workers` a string the whole workers page answered 500."""
    rq_connection.set("rq:workers", "a string, not a set")
    client = dashboard.create_app(redis_url).test_client()
    page = client.get("/0/view/workers")
    data = client.get("/0/data/workers.json")
    assert (page.status_code, data.status_code) == (200, 200)
    [row] = data.get_json()["workers"]
    assert (row["name"], row["state"], row["queues"], row["current_job"]) == (
        "rq:workers (cannot be read: WRONGTYPE Operation against a key holding the wrong kind of value)",
        "?",
        [],
        "idle",
    )
    assert rq_connection.get("rq:workers") == b"a string, not a set"  # reading wrote nothing
