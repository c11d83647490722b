"""Serving 9_stock and 100_seat: the hardened development server and `--workers N` (granian) under load,
slow clients, crashed workers, bad settings, and a failed start that changes nothing."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from pathlib import Path

import pytest

from queuing_system.embedded import free_port
from queuing_system.granian_server import STOP_TIMEOUT
from queuing_system.http_requests import request, request_raw
from queuing_system.processes import ROOT, ScriptProcess
from tests.job_helpers import eventually

stock = import_module("9_stock")
PRODUCT_1 = {"itemId": 1, "itemName": "Suitcase 250", "price": 50, "initialAvailableQuantity": 4, "currentQuantity": 4}


def started(script: str, *args: str, env: dict | None = None) -> tuple[ScriptProcess, int]:
    port = free_port()
    server = ScriptProcess(script, args, env={"PORT": str(port), **(env or {})})
    server.wait_for_line(f"API available on localhost port {port}", timeout=30)
    return server, port


def all_at_once(port: int, path: str, count: int) -> Counter:
    """`count` clients sending the same request at the same instant: (status, body) of each."""
    go = threading.Barrier(count)

    def one(_: int) -> tuple:
        go.wait()
        try:
            status, _, body = request_raw(port, path, timeout=60)
            return status, body
        except OSError as error:
            return "error", type(error).__name__

    with ThreadPoolExecutor(max_workers=count) as pool:
        return Counter(pool.map(one, range(count)))


@pytest.mark.slow
def test_800_clients_at_once_are_all_served(redis_url) -> None:
    stock_server, stock_port = started("9_stock.py")
    seat_server, seat_port = started("100_seat.py")
    with stock_server, seat_server:
        stock_answers = all_at_once(stock_port, "/list_products/1", 800)
        seat_answers = all_at_once(seat_port, "/reserve_seat", 800)
        stock_server.stop()
        seat_server.stop()
    assert stock_answers == {
        (200, '{"itemId":1,"itemName":"Suitcase 250","price":50,"initialAvailableQuantity":4,"currentQuantity":4}'): 800
    }
    assert seat_answers == {(200, '{"status":"Reservation in process"}'): 800}  # no 503, no "Reservation failed"
    assert stock_server.lines[1:] == seat_server.lines[1:] == []  # no not-connected line: Redis was fine


def slow_clients(port: int, count: int) -> list[socket.socket]:
    """`count` clients that start a request and never finish it (slowloris)."""
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"GET /list_products HTTP/1.1\r\nHost: x\r\n")
        clients.append(client)
    return clients


@pytest.fixture
def many_descriptors():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["development", "granian"])
def test_slow_clients_do_not_hold_up_the_others(redis_url, many_descriptors, workers) -> None:
    server, port = started("9_stock.py", *workers)
    with server:
        clients = slow_clients(port, 1500)
        started_at = time.monotonic()
        assert request(port, "/list_products/1", timeout=5)[2] == PRODUCT_1
        assert time.monotonic() - started_at < 2
        for client in clients:
            client.close()
        assert request(port, "/list_products/1", timeout=5)[2] == PRODUCT_1
        stopping = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait(10) == 0
        # Usually at once; a granian worker that lingers is killed after STOP_TIMEOUT (seen about one
        # stop in twenty after the 1,500 clients).
        assert time.monotonic() - stopping < STOP_TIMEOUT + 2
    assert server.stderr == ""


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (read from /proc: no procps needed)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_workers_are_respawned_and_one_ctrl_c_stops_them_all(redis_url) -> None:
    server, port = started("9_stock.py", "--workers", "2")
    with server:
        workers = children(server.pid)
        assert len(workers) == 2
        os.kill(workers.pop(), signal.SIGKILL)
        eventually(lambda: len(children(server.pid) - workers) == 1, timeout=10)
        answers = [request(port, "/list_products/1", timeout=5)[2] for _ in range(50)]
        stopping = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.wait(10) == 0
        assert time.monotonic() - stopping < 10
    assert answers == [PRODUCT_1] * 50
    assert server.lines == [f"API available on localhost port {port}"]
    assert children(server.pid) == set()


@pytest.mark.slow
def test_100_reservations_at_once_on_granian_confirm_exactly_4(redis_url, r) -> None:
    server, port = started("9_stock.py", "--workers", "2")
    with server:
        answers = all_at_once(port, "/reserve_product/1", 100)
        server.stop()
    assert answers == {
        (200, '{"status":"Reservation confirmed","itemId":1}'): 4,
        (200, '{"status":"Not enough stock available","itemId":1}'): 96,
    }
    assert r.get("item.1") == "4"


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["development", "granian"])
def test_a_failed_start_changes_nothing(redis_url, r, workers) -> None:
    r.set("available_seats", 7)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with ScriptProcess("100_seat.py", ["--reset", *workers], env={"PORT": str(port)}) as server:
            assert server.wait(30) == 1
    assert server.lines == []
    assert server.stderr.strip() == f"Cannot listen on 127.0.0.1:{port}: Address already in use"
    assert r.get("available_seats") == "7"  # not reset: the running server would have sold 50 more


def test_reset_happens_once_it_listens(redis_url, r) -> None:
    r.set("available_seats", 7)
    server, port = started("100_seat.py", "--reset", "--workers", "2")
    with server:
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "50"}
        server.stop()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "abc"}, "PORT='abc': expected a port number from 0 to 65535 (0: any free port)"),
        ({"PORT": "99999"}, "PORT='99999': expected a port number from 0 to 65535 (0: any free port)"),
        ({"HOST": "nosuchhost.invalid"}, "HOST='nosuchhost.invalid': no such address to listen on"),
    ],
)
@pytest.mark.parametrize("script", ["9_stock.py", "100_seat.py"])
def test_bad_addresses_are_one_line_and_exit_2(redis_url, script, env, message) -> None:
    with ScriptProcess(script, env=env) as server:
        assert server.wait(20) == 2
    assert server.lines == []
    assert server.stderr.strip().startswith(message)
    assert len(server.stderr.strip().splitlines()) == 1


def test_ipv6_host(redis_url) -> None:
    if not socket.has_ipv6:
        pytest.skip("this machine has no IPv6")  # a machine without it cannot show this
    port = free_port()
    with ScriptProcess("9_stock.py", env={"HOST": "::1", "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        connection = http.client.HTTPConnection("::1", port, timeout=5)
        connection.request("GET", "/list_products/1")
        assert connection.getresponse().status == 200
        connection.close()
        server.stop()


def test_long_uris_and_headers_get_json_from_the_development_server(redis_url) -> None:
    server, port = started("9_stock.py")
    with server:
        assert request_raw(port, "/list_products/" + "9" * 100_000) == (
            414,
            "application/json",
            '{"status":"URI Too Long"}',  # our phrase, the same on every Python (3.13 renamed http.server's)
        )
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.putrequest("GET", "/list_products")
        connection.putheader("X-Big", "a" * 70_000)
        connection.endheaders()
        response = connection.getresponse()
        assert (response.status, response.getheader("Content-Type"), response.read()) == (
            431,
            "application/json",
            b'{"status":"Request Header Fields Too Large"}',
        )
        server.stop()
    assert server.lines == [f"API available on localhost port {port}"]  # no `code 414, …` without --verbose
    assert server.stderr == ""


def raw_exchange(port: int, raw: bytes) -> tuple[str, str, bytes]:
    """(status, Content-Type, body) of what the server answers to `raw` bytes (its whole answer:
    up to its Content-Length, or until it closes)."""
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(raw)
        with contextlib.suppress(ConnectionResetError):
            while (chunk := client.recv(65536)) and not _whole(data := data + chunk):
                pass
    if not data.startswith(b"HTTP/"):  # an HTTP/0.9-style answer: the body alone
        return "", "", data
    head, _, body = data.partition(b"\r\n\r\n")
    headers = dict(_header(line) for line in head.decode("latin-1").split("\r\n")[1:])
    return head.split()[1].decode(), headers.get("content-type", ""), body


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


def _whole(data: bytes) -> bool:
    head, blank, body = data.partition(b"\r\n\r\n")
    if not blank or not data.startswith(b"HTTP/"):
        return False
    headers = dict(_header(line) for line in head.decode("latin-1").split("\r\n")[1:])
    return len(body) >= int(headers.get("content-length", "-1"))


MALFORMED = {
    "garbage": b"\x16\x03\x01garbage\r\n\r\n",
    "HTTP/0.9": b"GET /list_products\r\n\r\n",
    "bad version": b"GET /list_products HTTP/9.9\r\nHost: x\r\n\r\n",
    "bad UTF-8 path": b"GET /list_products/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
    "NUL in path": b"GET /list_\x00products HTTP/1.1\r\nHost: x\r\n\r\n",
    "header without colon": b"GET /list_products HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n",
    "space before colon": b"GET /list_products HTTP/1.1\r\nHost : x\r\n\r\n",
    "folded header": b"GET /list_products HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "control character in method": b"G\x01T /list_products HTTP/1.1\r\nHost: x\r\n\r\n",
    "negative Content-Length": b"POST /list_products HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "huge Content-Length": b"POST /list_products HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "two Content-Lengths": b"POST /list_products HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "200 headers": b"GET /list_products HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: v\r\n" % n for n in range(200))
    + b"\r\n",
    "70 KB header": b"GET /list_products HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",
    "100 KB URI": b"GET /list_products/" + b"9" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "bare LF": b"GET /list_products HTTP/1.1\nHost: x\n\n",
}
# What granian answers by itself, before the app sees the request (the README lists these).
GRANIAN_ITSELF = {
    "garbage": "400",
    "HTTP/0.9": "400",
    "bad version": "400",
    "bad UTF-8 path": "400",
    "NUL in path": "400",
    "header without colon": "400",
    "space before colon": "400",
    "folded header": "400",
    "control character in method": "400",
    "negative Content-Length": "400",
    "huge Content-Length": "400",
    "two Content-Lengths": "400",
    "200 headers": "431",
    "100 KB URI": "414",
}


def test_every_malformed_request_gets_json_from_the_development_server(redis_url) -> None:
    server, port = started("9_stock.py")
    with server:
        answers = {name: raw_exchange(port, raw) for name, raw in MALFORMED.items()}
        server.stop()
    for name, (status, content_type, body) in answers.items():
        assert (content_type, name) == ("application/json", name) or (status, name) == ("", name)
        assert isinstance(json.loads(body), (dict, list)), name  # HTTP/0.9-style answers too: JSON alone
    assert server.lines == [f"API available on localhost port {port}"]
    assert server.stderr == ""


def test_granian_answers_some_malformed_requests_itself_with_an_empty_body(redis_url) -> None:
    """The documented exception to "every answer JSON": granian's own 400 / 414 / 431, before the app."""
    server, port = started("9_stock.py", "--workers", "1")
    with server:
        answers = {name: raw_exchange(port, raw) for name, raw in MALFORMED.items()}
        server.stop()
    itself = {name: status for name, (status, _, body) in answers.items() if not body}
    assert itself == GRANIAN_ITSELF
    for name in MALFORMED.keys() - GRANIAN_ITSELF.keys():
        assert answers[name][1] == "application/json", name


@pytest.mark.parametrize(
    ("script", "path", "answer"),
    [
        ("9_stock.py", "/list_products/1", PRODUCT_1),
        ("100_seat.py", "/available_seats", {"numberOfAvailableSeats": "50"}),
    ],
)
def test_workers_started_while_redis_is_away_answer_503_then_serve(own_redis, script, path, answer) -> None:
    """Like the development server: the banner once it answers, JSON 503s until Redis is there, then
    the curriculum's answers (the main process created the counts meanwhile, the workers did not)."""
    own_redis.kill()
    server, port = started(script, "--workers", "2", env={"REDIS_URL": own_redis.url})
    with server:
        assert request(port, path) == (503, "application/json", {"status": "Redis unavailable, try again shortly"})
        assert request(port, "/list_products" if script == "9_stock.py" else "/nowhere")[0] in (200, 404)
        server.wait_for_line(f"Redis client not connected to the server: {refused(own_redis.port)}")
        own_redis.start()
        eventually(lambda: request(port, path)[0] == 200, timeout=15)
        assert request(port, path) == (200, "application/json", answer)
        assert server.stop() == 0
    banner = f"API available on localhost port {port}"
    assert server.lines.count(banner) == 1
    assert set(server.lines) - {banner} == {f"Redis client not connected to the server: {refused(own_redis.port)}"}
    assert server.stderr == ""


def refused(port: int) -> str:
    return f"Error 111 connecting to 127.0.0.1:{port}. Connection refused."


@pytest.mark.slow
def test_the_seat_server_stops_at_once_while_redis_is_down(own_redis) -> None:
    server, port = started("100_seat.py", env={"REDIS_URL": own_redis.url})
    with server:
        request(port, "/process")
        own_redis.kill()
        server.wait_until(lambda: len(server.lines) >= 3, what="the worker's failed attempts")
        stopping = time.monotonic()
        server.signal(signal.SIGINT)  # one Ctrl+C
        assert server.wait(10) == 0
        assert time.monotonic() - stopping < 5
    assert "Traceback" not in server.stderr


@pytest.mark.parametrize("script", ["9_stock.py", "100_seat.py"])
def test_host_beyond_loopback_is_said_plainly(redis_url, script) -> None:
    with ScriptProcess(script, env={"HOST": "0.0.0.0", "PORT": "0"}) as server:
        server.wait_until(lambda: len(server.lines) >= 2, what="the banner's two lines")
        port = int(server.lines[0].rsplit(" ", 1)[1])
        assert request(port, "/list_products" if script == "9_stock.py" else "/available_seats")[0] == 200
        server.stop()
    assert server.lines == [
        f"API available on localhost port {port}",
        f"Listening on 0.0.0.0 port {port}: reachable from other machines, not only this one",
    ]


class SlowBody:
    """A client that sends a full head announcing a large body, the body's first `sent` bytes at
    once, then one byte every `interval` seconds, until stopped (the slow-body attack of issue 21)."""

    def __init__(self, port: int, stopped: threading.Event, sent: int = 200_000, interval: float = 4.0) -> None:
        self.connection = socket.create_connection(("127.0.0.1", port))
        self.connection.settimeout(5)
        self.head_and_start_sent = threading.Event()
        self._thread = threading.Thread(target=self._trickle, args=(stopped, sent, interval), daemon=True)
        self._thread.start()

    def _trickle(self, stopped: threading.Event, sent: int, interval: float) -> None:
        with contextlib.suppress(OSError):  # the server may cut it off: that is its right
            self.connection.sendall(
                b"POST /reserve_product/1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: 100000000\r\n\r\n" + b"x" * sent
            )
            self.head_and_start_sent.set()
            while not stopped.wait(interval):
                self.connection.sendall(b"x")
        self.head_and_start_sent.set()

    def close(self) -> None:
        self.connection.close()
        self._thread.join(10)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["9_stock.py", "100_seat.py"])
def test_32_slow_bodies_hold_no_thread(redis_url, script) -> None:
    """As many trickling bodies as the server has request threads: a normal request is still
    answered within a second, throughout two trickle periods."""
    server, port = started(script)
    stopped = threading.Event()
    path = "/list_products/1" if script == "9_stock.py" else "/available_seats"
    with server:
        attackers = [SlowBody(port, stopped) for _ in range(32)]
        for attacker in attackers:
            assert attacker.head_and_start_sent.wait(10)
        slowest = 0.0
        answers = Counter()
        until = time.monotonic() + 9  # more than two of the attackers' 4 s periods
        while time.monotonic() < until:
            began = time.monotonic()
            status, content_type, _ = request(port, path, timeout=5)
            slowest = max(slowest, time.monotonic() - began)
            answers[(status, content_type)] += 1
        stopped.set()
        for attacker in attackers:
            attacker.close()
        server.stop()
    assert slowest < 1
    assert list(answers) == [(200, "application/json")]
    assert server.lines == [f"API available on localhost port {port}"]
    assert "Traceback" not in server.stderr


IMPORTS_AFTER_IMPORT_AHEAD = """
import importlib, socket, sys
from queuing_system.granian_server import import_ahead
from queuing_system.settings import connect
stock, seat = importlib.import_module("9_stock"), importlib.import_module("100_seat")  # (run by the main process)
import_ahead()
before = set(sys.modules)
stock.prepare_stock(False)  # what the background threads do: prepare, and knock on a port of this machine
seat.initialise_seats(connect(), reset=False)
socket.create_connection(("localhost", int(sys.argv[1])), timeout=5).close()
print(sorted(set(sys.modules) - before))
"""


def test_the_servers_background_threads_import_nothing_while_workers_are_forked(redis_url) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        child = subprocess.run(
            [sys.executable, "-c", IMPORTS_AFTER_IMPORT_AHEAD, str(listener.getsockname()[1])],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert (child.returncode, child.stdout, child.stderr) == (0, "[]\n", "")
