"""Load on the stock API: requests/s, p50/p99 latency and oversold units, dev server vs production.

Run:  .venv/bin/python -m bench.stock [--seconds 10]
Loopback only, bounded in time. Uses wrk (Debian package `wrk`) when present, else a Python generator.
Each server gets a private embedded Redis unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import redis

from bench.common import bench_redis
from bench.http_load import load
from queuing_system.embedded import free_port
from queuing_system.http_requests import wait_until_serving
from queuing_system.processes import ScriptProcess

EXPRESS = {"/list_products": 12_500, "/list_products/1": 11_000}  # measured on the original (README)


def servers(port: int) -> dict[str, tuple[str, Sequence[str]]]:
    return {
        "flask dev server": ("9_stock.py", ()),
        "granian 2 proc x 4 threads": ("-m", ["granian", "--interface", "wsgi", "--workers", "2",
                                              "--blocking-threads", "4", "--host", "127.0.0.1", "--port",
                                              str(port), "--log-level", "error", "--factory",
                                              "9_stock:create_app"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    print(f"{'server':<28}{'route':<34}{'req/s':>9}{'vs Express':>11}{'p50 ms':>8}{'p99 ms':>8}{'oversold':>9}")
    for name in ("flask dev server", "granian 2 proc x 4 threads"):
        with bench_redis() as url:
            port = free_port()
            script, script_args = servers(port)[name]
            client = redis.Redis.from_url(url, decode_responses=True)
            client.delete("item.1", "item.2")
            client.set("item.2", -10**12)  # item 2: stock that cannot run out during the run
            env = {"REDIS_URL": url, "PORT": str(port)}
            with ScriptProcess(script, script_args, env=env) as server:
                wait_until_serving(port, "/list_products")
                for path, label in (("/list_products", "/list_products"),
                                    ("/list_products/1", "/list_products/1"),
                                    ("/reserve_product/2", "/reserve_product/2 (plenty)"),
                                    ("/reserve_product/1", "/reserve_product/1 (4 units)")):
                    result = load(port, path, args.seconds)
                    oversold = ""
                    if path == "/reserve_product/1":
                        # Both the answers wrk saw and the count in Redis must stay within the 4 units.
                        oversold = str(max(result.confirmed - 4, int(client.get("item.1") or 0) - 4, 0))
                    elif path == "/reserve_product/2":
                        oversold = str(max(int(client.get("item.2")) + 10**12 - (10 + 10**12), 0))
                    ratio = f"{result.requests_per_s / EXPRESS[path]:.2f}" if path in EXPRESS else ""
                    print(f"{name:<28}{label:<34}{result.requests_per_s:>9.0f}{ratio:>11}"
                          f"{result.p50_ms:>8.2f}{result.p99_ms:>8.2f}{oversold:>9}   [{result.tool}]", flush=True)
                server.stop()
            client.close()
    print(f"(load: wrk -t2 -c32 -d{args.seconds}s on loopback, 2-core machine; cpu count {os.cpu_count()})")


if __name__ == "__main__":
    main()
