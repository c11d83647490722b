"""Task 9 — a stock API: list products, reserve one unit, never oversell.

Teaches: Redis as the shared state behind an HTTP API, and one atomic step per reservation.
Run:     python 9_stock.py [--reset]    then: curl localhost:1245/list_products
Serve:   python 9_stock.py --workers 4  (granian, four processes: for real load)
Prints:  API available on localhost port 1245
HOST and PORT say where it listens (127.0.0.1, 1245; PORT=0 picks a free port).
What was sold survives a restart; --reset puts the initial stock on sale again (the way back
after Redis lost what was sold, which the server notices and says, selling nothing meanwhile).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis
from flask import Flask, jsonify
from redis.exceptions import ResponseError

from queuing_system.console import REDIS_DOWN, arguments, backoff, not_connected, run_lesson, say
from queuing_system.serving import add_server_options, run_server
from queuing_system.settings import connect
from queuing_system.stock import Outcome, StockReservations
from queuing_system.web import PerThreadClient, idempotent, json_app, parse_id, said

LIST_PRODUCTS = [
    {"itemId": 1, "itemName": "Suitcase 250", "price": 50, "initialAvailableQuantity": 4},
    {"itemId": 2, "itemName": "Suitcase 450", "price": 100, "initialAvailableQuantity": 10},
    {"itemId": 3, "itemName": "Suitcase 650", "price": 350, "initialAvailableQuantity": 2},
    {"itemId": 4, "itemName": "Suitcase 1050", "price": 550, "initialAvailableQuantity": 5},
]
PRODUCTS_BY_ID = {product["itemId"]: product for product in LIST_PRODUCTS}

NOT_FOUND = {"status": "Product not found"}
STOCK_LOST = (
    "Stock lost: the reserved counts (item.<id>) are missing from Redis. "
    "Restart the server with --reset to put the initial stock on sale again"
)
TRY_AGAIN = "Reservation not confirmed, try again"


def get_item_by_id(item_id: int | None) -> dict | None:
    return PRODUCTS_BY_ID.get(item_id) if item_id is not None else None


def get_current_reserved_stock_by_id(stock: StockReservations, item_id: int) -> int | None:
    """Units reserved so far; None when Redis lost the count."""
    return idempotent(lambda: stock.reserved(item_id))


def reserve_stock_by_id(stock: StockReservations, item: dict) -> Outcome:
    """Reserve one unit: two atomic steps in Redis (reserve, confirm), each carrying this reservation's
    id, so repeating one after a lost connection or a timeout does it once (queuing_system/stock.py)."""
    return stock.reserve_one(item["itemId"], item["initialAvailableQuantity"])


def create_app(client: redis.Redis | None = None, *, initialised: bool = False) -> Flask:
    """The stock API on `client` (default: a client for REDIS_URL, a connection per request thread).

    Unless `initialised`, the reserved counts are created the first time the app reaches Redis
    (a first start); from then on a missing count is data Redis lost, said once, and nothing is sold.
    """
    stock = StockReservations(client or PerThreadClient())
    ready = threading.Event()
    if initialised:
        ready.set()
    lost = threading.Event()
    app = json_app(__name__)

    def stock_lost():
        if not lost.is_set():
            lost.set()
            say(STOCK_LOST)
        return jsonify(status=STOCK_LOST), 503

    def first_contact() -> None:
        if not ready.is_set():
            idempotent(lambda: stock.initialise(PRODUCTS_BY_ID))
            ready.set()

    try:
        first_contact()  # at launch, as the curriculum says; if Redis is away, at the first request it is back
    except REDIS_DOWN as error:
        not_connected(error)
    except ResponseError as error:  # out of memory, read-only, …: likewise
        say(f"Redis refused the request: {said(error)}")

    @app.get("/list_products")
    def list_products():
        return jsonify(LIST_PRODUCTS)

    @app.get("/list_products/<item_id>")
    def product_detail(item_id: str):
        item = get_item_by_id(parse_id(item_id))
        if item is None:
            return jsonify(NOT_FOUND)
        first_contact()
        reserved = get_current_reserved_stock_by_id(stock, item["itemId"])
        if reserved is None:
            return stock_lost()
        lost.clear()
        return jsonify({**item, "currentQuantity": item["initialAvailableQuantity"] - reserved})

    @app.get("/reserve_product/<item_id>")
    def reserve_product(item_id: str):
        item = get_item_by_id(parse_id(item_id))
        if item is None:
            return jsonify(NOT_FOUND)
        first_contact()
        outcome = reserve_stock_by_id(stock, item)
        if outcome is Outcome.LOST:
            return stock_lost()
        lost.clear()
        if outcome is Outcome.SOLD_OUT:
            return jsonify({"status": "Not enough stock available", "itemId": item["itemId"]})
        if outcome is not Outcome.CONFIRMED:  # given back before it could be confirmed
            return jsonify(status=TRY_AGAIN, itemId=item["itemId"]), 503, {"Retry-After": "1"}
        return jsonify({"status": "Reservation confirmed", "itemId": item["itemId"]})

    return app


def create_served_app() -> Flask:
    """What granian's processes serve: the main process created (or reset) the counts before they started."""
    return create_app(initialised=True)


def prepare_stock(reset: bool) -> None:
    """Once the port is bound: the counts created (or, with --reset, everything back on sale). Waits for Redis."""
    stock = StockReservations(connect())
    for delay in backoff():
        try:
            if reset:
                stock.reset(PRODUCTS_BY_ID)
            else:
                stock.initialise(PRODUCTS_BY_ID)
            return
        except REDIS_DOWN as error:
            not_connected(error)
        except ResponseError as error:  # out of memory, read-only, …: wait until it accepts writes again
            say(f"Redis refused the request: {said(error)}")
        time.sleep(delay)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", action="store_true", help="forget every reservation: the initial stock on sale")
    add_server_options(parser)


def main(args: argparse.Namespace) -> int:
    # Granian's processes must not create the counts themselves (one started after Redis lost them
    # would sell everything again): the main process does, before they start. The development
    # server is one process: it creates them when it first reaches Redis, answering 503 until then.
    prepare = (lambda: prepare_stock(args.reset)) if args.reset or args.workers else None
    served = create_served_app if prepare else create_app
    return run_server("9_stock:create_served_app", served, args, prepare=prepare)


if __name__ == "__main__":
    args = arguments(__doc__, options)
    run_lesson(lambda: sys.exit(main(args)), interrupted_exit=0)
