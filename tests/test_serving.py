"""Serving 9_stock and 100_seat: the hardened development server and `--workers N` (granian) under load,
slow clients, crashed workers, bad settings, and a failed start that changes nothing."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from pathlib import Path

import pytest

from queuing_system import web
from queuing_system.embedded import free_port
from queuing_system.http_requests import request, request_raw
from queuing_system.processes import ScriptProcess
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
        assert time.monotonic() - stopping < 5
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
            b'{"status":"Line too long"}',
        )
        server.stop()


def test_granian_answers_a_long_uri_before_flask_sees_it(redis_url) -> None:
    """The documented exception to "every answer JSON": granian answers 414 itself, with no body."""
    server, port = started("9_stock.py", "--workers", "1")
    with server:
        assert request_raw(port, "/list_products/" + "9" * 100_000) == (414, "", "")
        server.stop()


def test_a_server_out_of_connections_says_it_is_busy(redis_url, monkeypatch) -> None:
    monkeypatch.setenv("QUEUING_SERVER_THREADS", "1")
    monkeypatch.setattr(web, "CONNECTION_WAIT", 0.2)
    client = web.server_client()
    held = [client.connection_pool.get_connection() for _ in range(5)]  # one thread + 4 spare, all taken
    response = stock.create_app(client).test_client().get("/list_products/1")
    assert (response.status_code, response.get_json(), response.headers["Retry-After"]) == (
        503,
        {"status": "Server busy, try again shortly"},
        "1",
    )
    for connection in held:
        client.connection_pool.release(connection)
    assert stock.create_app(client).test_client().get("/list_products/1").get_json() == PRODUCT_1


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
