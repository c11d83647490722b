"""What every benchmark needs: a Redis to hammer (never yours by accident), percentiles, and the
original's Node.js packages, installed for one run into a temporary folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from queuing_system.embedded import EmbeddedRedis


@contextlib.contextmanager
def bench_redis() -> Iterator[str]:
    """A private embedded Redis, unless REDIS_URL is set: then that server, which the benchmark
    overwrites (item.1, item.2, available_seats, the lessons' queues: use a Redis of its own)."""
    if os.environ.get("REDIS_URL"):
        print(
            f"(benchmarking against REDIS_URL={os.environ['REDIS_URL']}; it overwrites the lessons' keys there)",
            file=sys.stderr,
            flush=True,
        )
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


@contextlib.contextmanager
def node_packages(packages: Sequence[str], sources: Path) -> Iterator[Path | None]:
    """A temporary folder with `packages` installed by npm and the .js files of `sources` copied in,
    removed afterwards; None (and a note on stderr) where node or npm is missing."""
    if not (shutil.which("node") and shutil.which("npm")):
        print("(node and npm not found: ours alone, no original to compare with)", file=sys.stderr, flush=True)
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="original-bench-"))
    try:
        print(
            f"(installing {' '.join(packages)} into {folder} with npm, for this run only)", file=sys.stderr, flush=True
        )
        subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(folder), *packages],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
        )
        for script in sources.glob("*.js"):
            shutil.copy(script, folder / script.name)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def start_processor(
    name: str, command: Sequence[str], cwd: Path, env: dict[str, str], ready: Callable[[], bool], timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Start a processor quietly, in a session of its own (so its whole tree can be signalled), and
    return once `ready()` says it waits for jobs."""
    process = subprocess.Popen(
        list(command), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{name}: the processor did not start")
        time.sleep(0.05)
    return process
