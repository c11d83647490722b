"""What every benchmark needs: a Redis to hammer (never yours by accident) and percentiles."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from queuing_system.embedded import EmbeddedRedis


@contextlib.contextmanager
def bench_redis() -> Iterator[str]:
    """REDIS_URL if set (a server you chose to load: the bench overwrites the lessons' keys
    there — item.1, item.2, available_seats, its own queues), else a private embedded one."""
    if os.environ.get("REDIS_URL"):
        print(f"(benchmarking against REDIS_URL={os.environ['REDIS_URL']}; it overwrites the lessons' keys there)",
              file=sys.stderr, flush=True)
        yield os.environ["REDIS_URL"]
        return
    with EmbeddedRedis() as server:
        yield server.url


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
