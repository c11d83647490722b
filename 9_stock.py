"""Task 9 — a stock API: list products, reserve one unit, never oversell.

Teaches: Redis as the shared state behind an HTTP API, and one atomic step per reservation.
Run:     python 9_stock.py              then: curl localhost:1245/list_products
Serve:   python 9_stock.py --workers 4  (granian, four processes: for real load)
Prints:  API available on localhost port 1245
HOST and PORT say where it listens (127.0.0.1, 1245; PORT=0 picks a free port).
"""

from __future__ import annotations

import sys

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis
from flask import Flask, jsonify

from queuing_system.console import arguments, run_lesson
from queuing_system.keys import STOCK_RESERVED
from queuing_system.serving import add_server_options, run_server
from queuing_system.web import PerThreadClient, json_app, parse_id

LIST_PRODUCTS = [
    {"itemId": 1, "itemName": "Suitcase 250", "price": 50, "initialAvailableQuantity": 4},
    {"itemId": 2, "itemName": "Suitcase 450", "price": 100, "initialAvailableQuantity": 10},
    {"itemId": 3, "itemName": "Suitcase 650", "price": 350, "initialAvailableQuantity": 2},
    {"itemId": 4, "itemName": "Suitcase 1050", "price": 550, "initialAvailableQuantity": 5},
]
PRODUCTS_BY_ID = {product["itemId"]: product for product in LIST_PRODUCTS}

# Reserve one unit, atomically: the check and the write are one step inside Redis,
# so no number of concurrent requests can confirm more units than exist.
# KEYS[1]: item.<itemId>, the units reserved so far (missing = 0)
# ARGV[1]: the item's initial stock
# Returns the new reserved count, or -1 when nothing is left.
RESERVE_ONE_UNIT = """
local reserved = tonumber(redis.call('GET', KEYS[1]) or '0')
if reserved >= tonumber(ARGV[1]) then
  return -1
end
return redis.call('INCR', KEYS[1])
"""

NOT_FOUND = {"status": "Product not found"}


def get_item_by_id(item_id: int | None) -> dict | None:
    return PRODUCTS_BY_ID.get(item_id) if item_id is not None else None


def get_current_reserved_stock_by_id(client: redis.Redis, item_id: int) -> int:
    return int(client.get(STOCK_RESERVED.format(item_id=item_id)) or 0)


def create_app(client: redis.Redis | None = None) -> Flask:
    """The stock API on `client` (default: a client for REDIS_URL, a connection per request thread)."""
    client = client or PerThreadClient()
    reserve_one_unit = client.register_script(RESERVE_ONE_UNIT)
    app = json_app(__name__)

    def reserve_stock_by_id(item_id: int, stock: int) -> bool:
        return reserve_one_unit(keys=[STOCK_RESERVED.format(item_id=item_id)], args=[stock]) != -1

    @app.get("/list_products")
    def list_products():
        return jsonify(LIST_PRODUCTS)

    @app.get("/list_products/<item_id>")
    def product_detail(item_id: str):
        item = get_item_by_id(parse_id(item_id))
        if item is None:
            return jsonify(NOT_FOUND)
        reserved = get_current_reserved_stock_by_id(client, item["itemId"])
        return jsonify({**item, "currentQuantity": item["initialAvailableQuantity"] - reserved})

    @app.get("/reserve_product/<item_id>")
    def reserve_product(item_id: str):
        item = get_item_by_id(parse_id(item_id))
        if item is None:
            return jsonify(NOT_FOUND)
        if not reserve_stock_by_id(item["itemId"], item["initialAvailableQuantity"]):
            return jsonify({"status": "Not enough stock available", "itemId": item["itemId"]})
        return jsonify({"status": "Reservation confirmed", "itemId": item["itemId"]})

    return app


if __name__ == "__main__":
    args = arguments(__doc__, add_server_options)
    run_lesson(lambda: sys.exit(run_server("9_stock:create_app", create_app, args)), interrupted_exit=0)
