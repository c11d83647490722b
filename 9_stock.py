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
from collections.abc import Callable
from typing import Any

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis
from flask import Flask

from queuing_system.console import arguments, run_lesson
from queuing_system.counts import StoredCounts, prepare_until_done
from queuing_system.granian_server import prepared
from queuing_system.serving import add_server_options, run_server
from queuing_system.settings import connect
from queuing_system.stock import Outcome, StockReservations
from queuing_system.web import answer_directly, idempotent, json_app, parse_id, per_thread_client

LIST_PRODUCTS: list[dict[str, Any]] = [
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


def get_item_by_id(item_id: int | None) -> dict[str, Any] | None:
    return PRODUCTS_BY_ID.get(item_id) if item_id is not None else None


def get_current_reserved_stock_by_id(stock: StockReservations, item_id: int) -> int | None:
    """Units reserved so far; None when Redis lost the count."""
    return idempotent(lambda: stock.reserved(item_id))


def reserve_stock_by_id(stock: StockReservations, item: dict[str, Any]) -> Outcome:
    """Reserve one unit: two atomic steps in Redis (reserve, confirm), each carrying this reservation's
    id, so repeating one after a lost connection or a timeout does it once (queuing_system/stock.py)."""
    return stock.reserve_one(item["itemId"], item["initialAvailableQuantity"])


def reservation_answer(outcome: Outcome, item_id: int) -> Any:
    """What the client hears about a reservation that Redis did not find lost."""
    if outcome is Outcome.SOLD_OUT:
        return {"status": "Not enough stock available", "itemId": item_id}
    if outcome is not Outcome.CONFIRMED:  # given back before it could be confirmed
        return {"status": TRY_AGAIN, "itemId": item_id}, 503, {"Retry-After": "1"}
    return {"status": "Reservation confirmed", "itemId": item_id}


def create_app(client: redis.Redis | None = None, *, created_elsewhere: Callable[[], bool] | None = None) -> Flask:
    """The stock API on `client` (default: a client for REDIS_URL, a connection per request thread).

    The reserved counts are created the first time the app reaches Redis (a first start), unless
    `created_elsewhere` says another process does; from then on a missing count is data Redis lost,
    said once, and nothing is sold (queuing_system/counts.py).
    """
    stock = StockReservations(client or per_thread_client())
    counts = StoredCounts(lambda: stock.initialise(PRODUCTS_BY_ID), STOCK_LOST, created_elsewhere)
    counts.reach_at_launch()  # at launch, as the curriculum says; if Redis is away, once it is back
    app = json_app(__name__)

    @app.get("/list_products")
    def list_products():
        return LIST_PRODUCTS

    @app.get("/list_products/<item_id>")
    def product_detail(item_id: str):
        item = get_item_by_id(parse_id(item_id))
        if item is None:
            return NOT_FOUND
        counts.ensure()
        reserved = get_current_reserved_stock_by_id(stock, item["itemId"])
        if reserved is None:
            return counts.lost()
        counts.found()
        return {**item, "currentQuantity": item["initialAvailableQuantity"] - reserved}

    @app.get("/reserve_product/<item_id>")
    def reserve_product(item_id: str):
        item = get_item_by_id(parse_id(item_id))
        if item is None:
            return NOT_FOUND
        counts.ensure()
        outcome = reserve_stock_by_id(stock, item)
        if outcome is Outcome.LOST:
            return counts.lost()
        counts.found()
        return reservation_answer(outcome, item["itemId"])

    # Flask turns what these views return into JSON; under load, its per-request work costs more than
    # the views themselves, so they are answered directly (queuing_system/direct_routes.py).
    answer_directly(app, "list_products", "product_detail", "reserve_product")
    return app


def create_served_app() -> Flask:
    """What granian's processes serve: the main process creates (or resets) the counts, never they."""
    return create_app(created_elsewhere=prepared)


def prepare_stock(reset: bool) -> None:
    """Once the port is bound: the counts created (or, with --reset, everything back on sale). Waits for Redis."""
    stock = StockReservations(connect())
    prepare_until_done(lambda: stock.reset(PRODUCTS_BY_ID) if reset else stock.initialise(PRODUCTS_BY_ID))


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", action="store_true", help="forget every reservation: the initial stock on sale")
    # One request thread per granian process: each request is one short Redis round trip, and more
    # threads in a process only take turns at its interpreter lock (measured: README, Stock API).
    add_server_options(parser, worker_threads=1)


def main(args: argparse.Namespace) -> int:
    # Granian's processes must not create the counts themselves (one started after Redis lost them
    # would sell everything again): the main process does, and they answer 503 until it has. The development
    # server is one process: it creates them when it first reaches Redis, answering 503 until then.
    prepare = (lambda: prepare_stock(args.reset)) if args.reset or args.workers else None
    served = create_served_app if prepare else create_app
    return run_server("9_stock:create_served_app", served, args, prepare=prepare)


if __name__ == "__main__":
    args = arguments(__doc__, options)
    run_lesson(lambda: sys.exit(main(args)), interrupted_exit=0)
