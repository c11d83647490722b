"""What every benchmark needs: a Redis to hammer (never yours by accident) and percentiles."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

from queuing_system.embedded import EmbeddedRedis


@contextlib.contextmanager
def bench_redis() -> Iterator[str]:
    """BENCH_REDIS_URL if given (a server you chose to load), else a private embedded one."""
    if os.environ.get("BENCH_REDIS_URL"):
        yield os.environ["BENCH_REDIS_URL"]
        return
    with EmbeddedRedis() as server:
        yield server.url


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
