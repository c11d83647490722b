"""Task 9: the stock API — bodies byte for byte, atomic reservations, bad input, Redis away."""

import signal
from importlib import import_module

import pytest
import redis

from queuing_system.embedded import free_port
from queuing_system.http_requests import request
from queuing_system.processes import ScriptProcess

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
    assert r.keys("item.*") == []


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


def test_redis_down_is_a_json_503_and_the_server_recovers(own_redis) -> None:
    port = free_port()
    with ScriptProcess("9_stock.py", env={"REDIS_URL": own_redis.url, "PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        assert request(port, "/reserve_product/2")[0] == 200
        own_redis.kill()
        status, content_type, answer = request(port, "/list_products/2")
        assert (status, content_type) == (503, "application/json")
        assert answer == {"status": "Redis unavailable, try again shortly"}
        assert request(port, "/list_products")[0] == 200  # what needs no Redis still works
        own_redis.start()
        assert request(port, "/list_products/2")[2]["currentQuantity"] == 10  # a fresh, empty Redis
        server.signal(signal.SIGINT)
        assert server.wait() == 0
    assert server.lines[0] == f"API available on localhost port {port}"
    assert len(server.lines) == 2
    assert server.lines[1].startswith("Redis client not connected to the server: ")
    assert "Traceback" not in server.stderr


def test_the_app_factory_builds_its_own_client_from_redis_url(redis_url) -> None:
    app = stock.create_app()
    assert app.test_client().get("/list_products/4").get_json()["currentQuantity"] == 5
    assert isinstance(redis.Redis.from_url(redis_url).ping(), bool)
