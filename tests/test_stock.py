"""Task 9: the stock API — bodies byte for byte, atomic reservations, bad input, Redis away."""

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module

import pytest
import redis

from queuing_system import stock as stock_steps
from queuing_system.embedded import free_port
from queuing_system.http_requests import request
from queuing_system.processes import ScriptProcess
from queuing_system.stock import Outcome, StockReservations
from queuing_system.web import idempotent
from tests.redis_faults import killing_connections, refusing, stalled

stock = import_module("9_stock")

PRODUCT_1 = '{"itemId":1,"itemName":"Suitcase 250","price":50,"initialAvailableQuantity":4'
LIST = (
    '[{"itemId":1,"itemName":"Suitcase 250","price":50,"initialAvailableQuantity":4},'
    '{"itemId":2,"itemName":"Suitcase 450","price":100,"initialAvailableQuantity":10},'
    '{"itemId":3,"itemName":"Suitcase 650","price":350,"initialAvailableQuantity":2},'
    '{"itemId":4,"itemName":"Suitcase 1050","price":550,"initialAvailableQuantity":5}]'
)


@pytest.fixture
def client(r):
    return stock.create_app(r).test_client()


def body(response) -> str:
    assert response.content_type == "application/json"
    return response.get_data(as_text=True)


def test_list_products(client) -> None:
    response = client.get("/list_products")
    assert (response.status_code, body(response)) == (200, LIST)


def test_product_detail_and_reservations(client, r) -> None:
    assert body(client.get("/list_products/1")) == PRODUCT_1 + ',"currentQuantity":4}'
    for _ in range(4):
        assert body(client.get("/reserve_product/1")) == '{"status":"Reservation confirmed","itemId":1}'
    assert body(client.get("/reserve_product/1")) == '{"status":"Not enough stock available","itemId":1}'
    assert body(client.get("/list_products/1")) == PRODUCT_1 + ',"currentQuantity":0}'
    assert r.get("item.1") == "4"
    assert body(client.get("/list_products/3")) == (
        '{"itemId":3,"itemName":"Suitcase 650","price":350,"initialAvailableQuantity":2,"currentQuantity":2}'
    )


BAD_IDS = [
    "abc",
    "-1",
    "0",
    "00",
    "1.5",
    "2abc",
    "5",
    "99999999999999999999999",
    "%00",
    "%C3%A9",
    " 1",
    "1%20",
    "9" * 10_000,
]


@pytest.mark.parametrize("route", ["/list_products/", "/reserve_product/"])
@pytest.mark.parametrize("item_id", BAD_IDS, ids=lambda x: x[:12])
def test_ids_that_are_not_a_product(client, r, route: str, item_id: str) -> None:
    response = client.get(route + item_id)
    assert (response.status_code, body(response)) == (200, '{"status":"Product not found"}')
    assert {key: r.get(key) for key in r.keys("*")} == {f"item.{n}": "0" for n in (1, 2, 3, 4)}  # only the counts


@pytest.mark.parametrize(
    ("method", "path", "status", "answer"),
    [
        ("POST", "/list_products", 405, '{"status":"Method Not Allowed"}'),
        ("DELETE", "/list_products/1", 405, '{"status":"Method Not Allowed"}'),
        ("PUT", "/reserve_product/1", 405, '{"status":"Method Not Allowed"}'),
        ("GET", "/", 404, '{"status":"Not Found"}'),
        ("GET", "/list_products/1/2", 404, '{"status":"Not Found"}'),
        ("GET", "/reserve_product", 404, '{"status":"Not Found"}'),
        ("GET", "/list_products//1", 404, '{"status":"Not Found"}'),
    ],
)
def test_unknown_routes_and_methods_answer_json(client, method, path, status, answer) -> None:
    response = client.open(path, method=method)
    assert (response.status_code, body(response)) == (status, answer)


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        # Express's parseInt read "01" as 1, and its routing takes a trailing slash.
        ("/list_products/01", PRODUCT_1 + ',"currentQuantity":4}'),
        ("/list_products/000000000001", PRODUCT_1 + ',"currentQuantity":4}'),
        ("/list_products/", LIST),
        ("/list_products/1/", PRODUCT_1 + ',"currentQuantity":4}'),
        ("/reserve_product/02", '{"status":"Reservation confirmed","itemId":2}'),
        ("/reserve_product/3/", '{"status":"Reservation confirmed","itemId":3}'),
    ],
)
def test_ids_and_slashes_as_express_routed_them(client, path, answer) -> None:
    response = client.get(path)
    assert (response.status_code, body(response)) == (200, answer)


def test_options_answers_json(client) -> None:
    response = client.options("/list_products")
    assert (response.status_code, body(response)) == (200, '{"status":"OK"}')
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_dev_server_prints_the_port_it_listens_on_and_keeps_reservations_across_restarts(redis_url) -> None:
    port = free_port()
    for expected_quantity in (4, 3):
        with ScriptProcess("9_stock.py", env={"PORT": str(port)}) as server:
            server.wait_for_line(f"API available on localhost port {port}")
            assert request(port, "/list_products/1")[2]["currentQuantity"] == expected_quantity
            assert request(port, "/reserve_product/1")[2] == {"status": "Reservation confirmed", "itemId": 1}
            server.signal(signal.SIGINT)
            assert server.wait() == 0
        assert server.lines == [f"API available on localhost port {port}"]  # no request log by default
        assert server.stderr == ""


def test_port_in_use_is_one_line_and_exit_1(redis_url) -> None:
    port = free_port()
    with ScriptProcess("9_stock.py", env={"PORT": str(port)}) as first:
        first.wait_for_line(f"API available on localhost port {port}")
        with ScriptProcess("9_stock.py", env={"PORT": str(port)}) as second:
            assert second.wait() == 1
    assert second.lines == []
    assert second.stderr.strip().splitlines() == [f"Cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_redis_down_is_a_json_503_and_a_redis_that_lost_the_stock_sells_nothing(own_redis) -> None:
    port = free_port()
    with ScriptProcess("9_stock.py", env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        assert request(port, "/reserve_product/2")[0] == 200
        own_redis.kill()
        status, content_type, answer = request(port, "/list_products/2")
        assert (status, content_type) == (503, "application/json")
        assert answer == {"status": "Redis unavailable, try again shortly"}
        assert request(port, "/list_products")[0] == 200  # what needs no Redis still works
        own_redis.start()  # a fresh, empty Redis: what was sold is not known any more
        for path in ("/list_products/2", "/reserve_product/2", "/reserve_product/1"):
            assert request(port, path) == (503, "application/json", {"status": stock.STOCK_LOST})
        assert redis.Redis.from_url(own_redis.url).keys("item.*") == []  # nothing sold again
        server.signal(signal.SIGINT)
        assert server.wait() == 0
    assert server.lines[0] == f"API available on localhost port {port}"
    assert server.lines[1].startswith("Redis client not connected to the server: ")
    assert server.lines[2:] == [stock.STOCK_LOST]  # said once
    assert "Traceback" not in server.stderr

    with ScriptProcess("9_stock.py", ["--reset"], env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")  # what the message says to do
        assert request(port, "/list_products/2")[2]["currentQuantity"] == 10
        server.stop()


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["development", "granian"])
def test_flushall_mid_run_sells_no_unit_twice(redis_url, r, workers) -> None:
    port = free_port()
    with ScriptProcess("9_stock.py", workers, env={"PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        answers = [request(port, "/reserve_product/1")[2]["status"] for _ in range(5)]
        assert answers == ["Reservation confirmed"] * 4 + ["Not enough stock available"]
        r.flushall()
        assert {request(port, "/reserve_product/1")[2]["status"] for _ in range(20)} == {stock.STOCK_LOST}
        server.stop()
    assert r.keys("*") == []
    assert server.lines[1:] == [stock.STOCK_LOST] * len(server.lines[1:]) != []  # once per process


def test_started_while_redis_refuses_it_answers_503_then_serves(own_redis) -> None:
    own_redis.kill()
    port = free_port()
    with ScriptProcess("9_stock.py", env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        for _ in range(2):
            assert request(port, "/reserve_product/2") == (
                503,
                "application/json",
                {"status": "Redis unavailable, try again shortly"},
            )
        own_redis.start()  # the first contact: a first start, the counts are created
        assert request(port, "/reserve_product/2")[2] == {"status": "Reservation confirmed", "itemId": 2}
        assert request(port, "/list_products/2")[2]["currentQuantity"] == 9
        server.stop()
    assert server.lines[1] == f"API available on localhost port {port}"
    assert len(server.lines) == 4  # at launch, then once per request that found Redis away
    assert all(
        line.startswith("Redis client not connected to the server: ") for line in server.lines[:1] + server.lines[2:]
    )
    assert server.stderr == ""


def test_a_redis_error_reply_is_a_json_503_naming_it(own_redis) -> None:
    client = redis.Redis.from_url(own_redis.url)
    app = stock.create_app(redis.Redis.from_url(own_redis.url, decode_responses=True)).test_client()
    assert app.get("/reserve_product/2").status_code == 200
    client.config_set("maxmemory", 1)  # used memory is over it at once: every write is refused (OOM)
    client.config_set("maxmemory-policy", "noeviction")
    response = app.get("/reserve_product/2")
    assert (response.status_code, response.get_json(), response.headers["Retry-After"]) == (
        503,
        {"status": "Redis refused the request: out of memory, try again shortly"},
        "1",
    )
    assert app.get("/list_products/2").get_json()["currentQuantity"] == 9  # reads still work
    client.config_set("maxmemory", 0)
    assert app.get("/reserve_product/2").get_json() == {"status": "Reservation confirmed", "itemId": 2}
    assert client.get("item.2") == b"2"


def test_the_app_factory_builds_its_own_client_from_redis_url(redis_url) -> None:
    app = stock.create_app()
    assert app.test_client().get("/list_products/4").get_json()["currentQuantity"] == 5
    assert isinstance(redis.Redis.from_url(redis_url).ping(), bool)


def test_a_server_that_redis_forgot_the_scripts_of_loads_them_again(redis_url, r) -> None:
    """The server sends its reservation step by SHA1 (EVALSHA); a Redis restarted or flushed of its
    scripts answers NOSCRIPT (nothing ran): the step is loaded and sent again, and sells once."""
    client = stock.create_app().test_client()
    assert body(client.get("/reserve_product/1")) == '{"status":"Reservation confirmed","itemId":1}'
    r.script_flush()
    assert body(client.get("/reserve_product/1")) == '{"status":"Reservation confirmed","itemId":1}'
    assert body(client.get("/list_products/1")) == PRODUCT_1 + ',"currentQuantity":2}'
    assert r.get("item.1") == "2"


def records(r, item_id: int) -> dict:
    return r.hgetall(f"item.{item_id}.reservations")


def test_a_repeated_step_does_what_it_does_once(r) -> None:
    reservations = StockReservations(r)
    reservations.initialise([1])
    for _ in range(3):  # the first copy, then two repeats after "timeouts"
        assert reservations.reserve(1, 4, "a") is Outcome.PENDING
    assert r.get("item.1") == "1"
    for _ in range(2):
        assert reservations.confirm(1, "a") is Outcome.CONFIRMED
    assert reservations.reserve(1, 4, "a") is Outcome.CONFIRMED  # a late copy of the first step
    assert (r.get("item.1"), records(r, 1), r.zcard("item.1.pending")) == ("1", {"a": "confirmed"}, 0)
    for _ in range(2):
        assert reservations.cancel(1, "a") is Outcome.RELEASED
    assert (r.get("item.1"), records(r, 1)) == ("0", {})


def test_on_a_plain_redis_a_reservation_is_one_step_safe_to_repeat(r) -> None:
    """No replica to wait for: reserved and confirmed in one Lua step (one round trip), which a
    repeat (a lost reply) does once."""
    reservations = StockReservations(r)
    reservations.initialise([1])
    r.script_load(stock_steps.RESERVE)  # known to this Redis already (as after the first reservation)
    r.config_resetstat()  # a server the suite started
    assert reservations.reserve_one(1, 4) is Outcome.CONFIRMED
    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 1  # (the commands it runs are counted too)
    (reservation,) = records(r, 1)
    for _ in range(2):
        assert reservations.reserve(1, 4, reservation, confirmed=True) is Outcome.CONFIRMED
    assert (r.get("item.1"), records(r, 1), r.zcard("item.1.pending")) == ("1", {reservation: "confirmed"}, 0)


def test_a_reservation_never_confirmed_goes_back_on_sale(r) -> None:
    reservations = StockReservations(r, hold_ms=0)  # its deadline is now: the next reservation gives it back
    reservations.initialise([3])
    assert [reservations.reserve(3, 2, token) for token in "ab"] == [Outcome.PENDING] * 2
    assert reservations.confirm(3, "b") is Outcome.CONFIRMED
    assert reservations.reserve(3, 2, "c") is Outcome.PENDING  # took a's unit, given back first
    assert reservations.confirm(3, "a") is Outcome.RELEASED  # too late: the server answers "try again"
    assert (r.get("item.3"), records(r, 3)) == ("2", {"b": "confirmed", "c": "pending"})
    held = StockReservations(r)  # the default hold: 30 s
    assert held.reserve(3, 2, "d") is Outcome.PENDING  # c's unit, given back (never confirmed either)
    assert held.reserve(3, 2, "e") is Outcome.SOLD_OUT  # d's hold has not passed
    assert (r.get("item.3"), records(r, 3)) == ("2", {"b": "confirmed", "d": "pending"})


def test_steps_on_a_redis_that_lost_the_stock(r) -> None:
    reservations = StockReservations(r)
    assert reservations.reserve(1, 4, "a") is Outcome.LOST
    assert reservations.confirm(1, "a") is Outcome.RELEASED
    assert reservations.reserved(1) is None
    assert r.keys("*") == []  # nothing written


def test_a_reservation_whose_confirmation_was_given_back_answers_try_again(r, monkeypatch) -> None:
    app = stock.create_app(r)
    # (A confirmation given back: with replicas to wait for, the second step found it released.)
    monkeypatch.setattr(StockReservations, "reserve_one", lambda self, item_id, stock: Outcome.RELEASED)
    response = app.test_client().get("/reserve_product/4")
    answer = '{"status":"Reservation not confirmed, try again","itemId":4}'
    assert (response.status_code, body(response), response.headers["Retry-After"]) == (503, answer, "1")


def at_once(port: int, path: str, count: int) -> list[tuple[int, str, dict]]:
    """`count` clients sending the same request at the same instant: (status, content type, JSON) of each."""
    go = threading.Barrier(count)

    def one(_: int) -> tuple[int, str, dict]:
        go.wait()
        return request(port, path, timeout=60)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def held(r, item_id: int) -> tuple[int, int, int]:
    """(units reserved, confirmed reservations, pending reservations) of a product."""
    states = list(records(r, item_id).values())
    return int(r.get(f"item.{item_id}")), states.count("confirmed"), states.count("pending")


CONFIRMED_2 = (200, "application/json", {"status": "Reservation confirmed", "itemId": 2})


@pytest.mark.slow
@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["development", "granian"])
def test_a_stalled_redis_costs_one_unit_per_confirmation(own_redis, workers) -> None:
    """Issue 19: 3 reservations during a 4.5 s stall (longer than the 3 s socket timeout): each one's
    step is sent again after its timeout while the first copy waits inside Redis; both run."""
    port = free_port()
    with ScriptProcess("9_stock.py", workers, env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        with stalled(own_redis.url):
            answers = at_once(port, "/reserve_product/2", 3)
        server.stop()
    assert answers == [CONFIRMED_2] * 3
    assert held(redis.Redis.from_url(own_redis.url, decode_responses=True), 2) == (3, 3, 0)
    assert "Traceback" not in server.stderr


@pytest.mark.slow
def test_killed_connections_reserve_no_unit_for_nobody(own_redis) -> None:
    """Issue 19: CLIENT KILL TYPE normal every 2 ms during rounds of 20 reservations of product 2
    (stock 10): every unit taken is confirmed to someone or, unconfirmed, goes back on sale."""
    port = free_port()
    env = {"REDIS_URL": own_redis.url, "PORT": str(port), "QUEUING_RESERVATION_HOLD_MS": "500"}
    r = redis.Redis.from_url(own_redis.url, decode_responses=True, retry=None)
    reservations = StockReservations(r)
    rounds = []
    with ScriptProcess("9_stock.py", env=env) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        with killing_connections(own_redis.url) as killed:
            for _ in range(10):
                # The test's own steps are safe to repeat: repeated until they get through the kills.
                idempotent(lambda: reservations.reset([2]), patience=10)
                answers = at_once(port, "/reserve_product/2", 20)
                rounds.append((answers, idempotent(lambda: held(r, 2), patience=10)))
        assert killed[0] > 0
        for answers, (reserved, confirmed, pending) in rounds:
            assert {status for status, content_type, _ in answers} <= {200, 503}
            assert {content_type for _, content_type, _ in answers} == {"application/json"}
            assert answers.count(CONFIRMED_2) == confirmed <= 10  # each confirmation heard, none beyond stock
            assert reserved == confirmed + pending  # any other unit taken has a pending reservation
        # The last round's pending reservations go back on sale once their hold has passed.
        while held(r, 2)[2] or request(port, "/reserve_product/2")[2]["status"] != "Not enough stock available":
            request(port, "/reserve_product/2")
        server.stop()
    assert held(r, 2) == (10, 10, 0)
    assert "Traceback" not in server.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "words", "said"),
    [
        ("oom", "out of memory", "OOM command not allowed when used memory > 'maxmemory'"),
        ("busy", "busy running a script", "BUSY "),  # then Redis's or Valkey's own words
        ("readonly", "read-only (a replica)", "READONLY You can't write against a read only replica"),
    ],
)
def test_redis_refusing_writes_is_a_json_503_then_it_sells_again(own_redis, kind, words, said) -> None:
    """Issue 21: an error reply is a fault to ride out: JSON 503 naming it, one line, 200 once it passes."""
    port = free_port()
    with ScriptProcess("9_stock.py", env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        with refusing(own_redis.url, kind, closed_port=free_port()):
            during = request(port, "/reserve_product/2")
        after = request(port, "/reserve_product/2")
        server.stop()
    assert during == (503, "application/json", {"status": f"Redis refused the request: {words}, try again shortly"})
    assert after == CONFIRMED_2
    assert [line.startswith(f"Redis refused the request: {said}") for line in server.lines[1:]] == [True]
    assert held(redis.Redis.from_url(own_redis.url, decode_responses=True), 2) == (1, 1, 0)
    assert server.stderr == ""


@pytest.mark.parametrize("script", ["9_stock.py", "100_seat.py"])
def test_started_while_redis_is_read_only_it_serves_503_then_sells(own_redis, script) -> None:
    port = free_port()
    path = "/reserve_product/2" if script == "9_stock.py" else "/reserve_seat"
    with ScriptProcess(script, env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        with refusing(own_redis.url, "readonly", closed_port=free_port()):
            server.wait_for_line(f"API available on localhost port {port}")
            assert request(port, path) == (
                503,
                "application/json",
                {"status": "Redis refused the request: read-only (a replica), try again shortly"},
            )
        assert request(port, path)[0] == 200
        server.stop()
    assert server.lines[1] == f"API available on localhost port {port}"
    assert len(server.lines) == 3  # at launch, then for the request
    assert all(line.startswith("Redis refused the request: READONLY ") for line in server.lines[::2])
    assert server.stderr == ""


@pytest.mark.slow
def test_a_worker_respawned_after_data_loss_does_not_sell_again(redis_url, r) -> None:
    """With --workers, the main process creates the counts; a worker started after Redis lost them
    (respawned, here) finds them missing like the others, and sells nothing."""
    from tests.test_serving import children

    port = free_port()
    with ScriptProcess("9_stock.py", ["--workers", "2"], env={"PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        r.flushall()
        workers = children(server.pid)
        os.kill(workers.pop(), signal.SIGKILL)
        server.wait_until(lambda: len(children(server.pid) - workers) == 1, what="a new worker")
        answers = {request(port, "/reserve_product/1")[2]["status"] for _ in range(40)}
        server.stop()
    assert answers == {stock.STOCK_LOST}
    assert r.keys("*") == []
