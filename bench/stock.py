"""The stock API under load, side by side with the original Express server.

Run:  .venv/bin/python -m bench.stock [--seconds 10] [--rounds 3] [--workers 2] [--no-express]

Servers: `9_stock.py --workers N` (granian), the original's 9-stock.js on Express 4.18 (where node
and npm are present: installed with node_redis 2.8 into a temporary folder, nothing kept), and
Flask's development server (`9_stock.py`). Ours and Express alternate, --rounds times; each server
starts fresh on a private Redis. Routes: /list_products and /list_products/1 on every server, and
/reserve_product/2 on both (item 2 with stock that cannot run out), and /reserve_product/1 (its 4
units) on ours: every confirmation is counted, so an oversold unit would show. Express's
/reserve_product/1 is not measured: it checks, then sets, and oversells (README). Load: wrk -t2
-c32 (Debian's `wrk`), else a Python generator. Beside each rate: the CPU per request of the
server (all its processes) and of Redis, from their CPU times around the load.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import time
from pathlib import Path

import psutil
import redis

from bench.common import bench_redis, node_packages
from bench.http_load import Load, load
from queuing_system.embedded import free_port
from queuing_system.http_requests import request, wait_until_serving
from queuing_system.processes import ROOT, ScriptProcess
from queuing_system.settings import connect

EXPRESS_DIR = Path(__file__).with_name("express")
LIST_ROUTES = ("/list_products", "/list_products/1")
COMPARED_ROUTES = (*LIST_ROUTES, "/reserve_product/2")  # measured on both sides; ratios printed
RESERVE_ROUTES = ("/reserve_product/2", "/reserve_product/1")


@contextlib.contextmanager
def express(folder: Path, url: str, port: int):
    redis_port = str(redis.Redis.from_url(url).connection_pool.connection_kwargs["port"])
    server = subprocess.Popen(
        ["node", "stock.js"],
        cwd=folder,
        env={**os.environ, "PORT": str(port), "REDIS_PORT": redis_port},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(port, "/list_products")
        yield server.pid
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def ours(url: str, port: int, workers: int | None):
    args = ["--workers", str(workers)] if workers else []
    with ScriptProcess("9_stock.py", args, env={"REDIS_URL": url, "PORT": str(port)}) as server:
        wait_until_serving(port, "/list_products")
        while request(port, "/list_products/1")[0] != 200:  # --workers: until the main process made the counts
            time.sleep(0.05)
        yield server.pid
        server.stop()


def cpu_seconds(pid: int) -> float:
    """User and system CPU time so far of a process and its children (granian's workers)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(name: str, serving, url: str, routes, seconds: int) -> dict[str, Load]:
    client = connect(url)  # a plain Redis or a Sentinel group's primary
    client.flushdb()
    port = free_port()
    results = {}
    with serving(port) as pid:
        # Item 2: stock that cannot run out during the run (set once the server is up: Express resets
        # every count to 0 when it starts), so every reservation of it does its whole work.
        client.set("item.2", -(10**12))
        for path in routes:
            server_before, redis_before = cpu_seconds(pid), redis_cpu_seconds(client)
            result = results[path] = load(port, path, seconds)
            if result.requests:
                result.server_us = (cpu_seconds(pid) - server_before) / result.requests * 1e6
                result.redis_us = (redis_cpu_seconds(client) - redis_before) / result.requests * 1e6
    if "/reserve_product/1" in results:
        # Both the answers the load saw and the count in Redis must stay within the 4 units.
        results["/reserve_product/1"].oversold = max(
            results["/reserve_product/1"].confirmed - 4, int(client.get("item.1") or 0) - 4, 0
        )
    client.close()
    return results


def row(label: str, path: str, result: Load, note: str = "") -> str:
    oversold = "" if result.oversold is None else str(result.oversold)
    cpu = "".join(f"{'':>10}" if us is None else f"{us:>10.0f}" for us in (result.server_us, result.redis_us))
    return (
        f"{label:<26}{path:<22}{result.requests_per_s:>9.0f}{result.p50_ms:>8.2f}{result.p99_ms:>8.2f}"
        f"{cpu}{oversold:>9}  {note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-express", action="store_true", help="run ours alone")
    args = parser.parse_args()
    granian = f"ours --workers {args.workers}"
    print(
        f"{'server':<26}{'route':<22}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'server µs':>10}{'Redis µs':>10}{'oversold':>9}"
    )
    print(f"{'':<73}(CPU per request)")
    with contextlib.ExitStack() as stack:
        folder = (
            None
            if args.no_express
            else stack.enter_context(node_packages(["express@4.18", "redis@2.8.0"], EXPRESS_DIR))
        )
        url = stack.enter_context(bench_redis())
        sides = {granian: lambda port: ours(url, port, args.workers)}
        if folder is not None:
            sides = {"Express 4.18 (original)": lambda port: express(folder, url, port), **sides}
        rates: dict[str, dict[str, list[float]]] = {name: {path: [] for path in COMPARED_ROUTES} for name in sides}
        cpu: dict[str, dict[str, list[float]]] = {name: {path: [] for path in COMPARED_ROUTES} for name in sides}
        for round_ in range(1, args.rounds + 1):
            for name, serving in sides.items():
                routes = LIST_ROUTES + RESERVE_ROUTES if name == granian else COMPARED_ROUTES
                for path, result in measure(name, serving, url, routes, args.seconds).items():
                    if path in COMPARED_ROUTES:
                        rates[name][path].append(result.requests_per_s)
                        if result.server_us is not None:
                            cpu[name][path].append(result.server_us)
                    print(row(name, path, result, f"round {round_}, {result.tool}"), flush=True)
        development = measure(
            "dev", lambda port: ours(url, port, None), url, LIST_ROUTES + RESERVE_ROUTES, args.seconds
        )
        for path, result in development.items():
            print(row("ours, development server", path, result, result.tool), flush=True)
    if folder is not None:
        for path in COMPARED_ROUTES:
            express_name = "Express 4.18 (original)"
            ratio = statistics.median(rates[granian][path]) / statistics.median(rates[express_name][path])
            line = f"{path}: ours / Express = {ratio:.2f}x (medians of {args.rounds})"
            if cpu[granian][path] and cpu[express_name][path]:
                ours_us, theirs_us = statistics.median(cpu[granian][path]), statistics.median(cpu[express_name][path])
                line += f"; server CPU per request: ours {ours_us:.0f} µs, Express {theirs_us:.0f} µs"
            print(line)
    print(
        f"(wrk -t2 -c32 -d{args.seconds}s on loopback; {os.cpu_count()} cores shared by load, servers and Redis;"
        f" {ROOT.name})"
    )


if __name__ == "__main__":
    main()
