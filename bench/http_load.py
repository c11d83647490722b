"""Bounded HTTP load on loopback: wrk when installed, else a small Python generator.

Returns requests/s (and how many requests), p50/p99 latency (ms) and, for reservation
routes, how many answers said "Reservation confirmed".
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import percentile

COUNT_SCRIPT = Path(__file__).with_name("count_confirmed.lua")


@dataclass
class Load:
    tool: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    confirmed: int
    requests: int = 0
    oversold: int | None = None  # set by the caller for a route that sells a limited stock
    server_us: float | None = None  # CPU per request (µs), set by a caller that measures it
    redis_us: float | None = None


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]+", "", text)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, path: str, seconds: int, connections: int) -> Load:
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(COUNT_SCRIPT),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    confirmed = int(re.search(r"CONFIRMED (\d+)", output).group(1))
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    return Load("wrk", rps, p50, p99, confirmed, requests)


def run_python(port: int, path: str, seconds: int, connections: int) -> Load:
    latencies: list[float] = []
    confirmed = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal confirmed
        mine, hits = [], 0
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection.request("GET", path)
            body = connection.getresponse().read()
            mine.append((time.perf_counter() - started) * 1000)
            hits += b"Reservation confirmed" in body
        connection.close()
        with lock:
            latencies.extend(mine)
            confirmed += hits

    threads = [threading.Thread(target=client) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Load(
        "python",
        len(latencies) / seconds,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        confirmed,
        len(latencies),
    )


def load(port: int, path: str, seconds: int = 10, connections: int = 32) -> Load:
    if shutil.which("wrk"):
        return run_wrk(port, path, seconds, connections)
    return run_python(port, path, seconds, min(connections, 16))
