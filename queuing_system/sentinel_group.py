"""A throwaway Sentinel group on this machine: a primary, two replicas and three sentinels.

For trying failovers by hand (`python -m queuing_system.redis_server --sentinel`) and for the
tests. Every server is the same redis-server binary the rest of the port uses (the installed one,
else the bundled one); sentinels are that binary with `--sentinel`. Files live in a temp dir that
`stop()` removes; nothing is kept on disk (a killed primary restarted before Sentinel notices it
comes back empty: see the README's High availability section).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from queuing_system.embedded import EmbeddedRedisError, find_redis_server, free_port
from queuing_system.sentinel_url import SentinelAddress

MASTER = "mymaster"
DOWN_AFTER_MS = 1000  # a silent primary is "down" after 1 s (issue 19's group)
FAILOVER_TIMEOUT_MS = 5000  # so failovers in a row are not held back (Sentinel waits 2x this between tries)
HOST = "127.0.0.1"


@dataclass
class Node:
    name: str
    port: int
    config: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(
            HOST, self.port, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
        )


class SentinelGroup:
    """`with SentinelGroup() as group: group.url` — the group for as long as the block."""

    def __init__(self, first_port: int | None = None, binary: str | None = None, replicas: int = 2) -> None:
        self.binary = binary or find_redis_server()
        ports = (
            [first_port + n for n in range(replicas + 4)] if first_port else [free_port() for _ in range(replicas + 4)]
        )
        self.dir = Path(tempfile.mkdtemp(prefix="queuing-sentinel-"))
        atexit.register(self.stop)
        self.servers = [Node(f"redis-{port}", port, self.dir / f"redis-{port}.conf") for port in ports[: replicas + 1]]
        self.sentinels = [
            Node(f"sentinel-{port}", port, self.dir / f"sentinel-{port}.conf") for port in ports[replicas + 1 :]
        ]
        self.address = SentinelAddress(tuple((HOST, node.port) for node in self.sentinels), MASTER, 0)
        self.url = self.address.url()

    # -- starting and stopping ---------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> SentinelGroup:
        primary = self.servers[0]
        for node in self.servers:
            lines = [f"port {node.port}", f"bind {HOST}", 'save ""', "appendonly no", f"dir {self.dir}"]
            # A demoted or restarted primary needs a full resync before WAIT can count it again; Redis 7
            # waits 5 s by default before starting one (for more replicas to share it): start at once.
            lines.append("repl-diskless-sync-delay 0")
            lines += [f"logfile {self.dir / node.name}.log", f"dbfilename {node.name}.rdb"]
            if node is not primary:
                lines.append(f"replicaof {HOST} {primary.port}")
            node.config.write_text("\n".join(lines) + "\n")
            self._spawn(node)
        for node in self.sentinels:
            node.config.write_text(
                "\n".join(
                    [
                        f"port {node.port}",
                        f"bind {HOST}",
                        f"dir {self.dir}",
                        f"logfile {self.dir / node.name}.log",
                        f"sentinel monitor {MASTER} {HOST} {primary.port} 2",
                        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
                        f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
                        f"sentinel parallel-syncs {MASTER} {len(self.servers) - 1}",
                    ]
                )
                + "\n"
            )
            self._spawn(node, "--sentinel")
        self.wait_until_settled(timeout)
        return self

    def _spawn(self, node: Node, *extra: str) -> None:
        node.process = subprocess.Popen(
            [self.binary, str(node.config), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl+C meant for the launcher reaches it first; it stops these in order
        )

    def stop(self) -> None:
        """Stop all six (SIGCONT first: a paused one would not hear SIGTERM) and remove the files."""
        for node in [*self.sentinels, *self.servers]:
            process = node.process
            if process and process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            node.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what Sentinel says ------------------------------------------------------------------
    def primary(self) -> Node:
        """The server every sentinel names as the primary (EmbeddedRedisError while they disagree)."""
        named: set[int | None] = set()
        for node in self.sentinels:
            answer = self._ask(node, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            named.add(int(answer[1]) if isinstance(answer, list) else None)
        port = named.pop() if len(named) == 1 else None
        if port is None:
            raise EmbeddedRedisError(f"the sentinels do not agree on a primary: {sorted(map(str, named))}")
        return next(node for node in self.servers if node.port == port)

    def settled(self) -> bool:
        """Every sentinel names the same live primary, sees every replica and the other sentinels,
        and every replica is in sync with that primary."""
        try:
            primary = self.primary()
            for node in self.sentinels:
                state = self._ask(node, "SENTINEL", "MASTER", MASTER)
                flags = str(state.get("flags", "")) if isinstance(state, dict) else "?"
                if flags != "master" or int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                    return False
                replicas = self._ask(node, "SENTINEL", "REPLICAS", MASTER) or []
                if sum(1 for replica in replicas if replica["flags"] == "slave") != len(self.servers) - 1:
                    return False
            info = primary.client().info("replication")
            online = [info[key] for key in info if key.startswith("slave") and isinstance(info[key], dict)]
            return (
                info["role"] == "master"
                and len(online) == len(self.servers) - 1
                and all(replica["state"] == "online" for replica in online)
            )
        except (EmbeddedRedisError, redis.exceptions.RedisError, KeyError, ValueError):
            return False

    def wait_until_settled(self, timeout: float = 30.0) -> Node:
        deadline = time.monotonic() + timeout
        while not self.settled():
            if time.monotonic() > deadline:
                raise EmbeddedRedisError(f"the Sentinel group did not settle in {timeout:g} s (logs in {self.dir})")
            time.sleep(0.05)
        return self.primary()

    @staticmethod
    def _ask(node: Node, *command: str) -> Any:
        client = node.client()
        try:
            return client.execute_command(*command)
        except redis.exceptions.RedisError:
            return None
        finally:
            client.close()

    # -- faults ------------------------------------------------------------------------------
    def failover(self) -> None:
        """SENTINEL FAILOVER, as an operator would type it."""
        self.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER)

    def signal(self, node: Node, signum: int) -> None:
        assert node.process is not None
        os.kill(node.process.pid, signum)
        if signum == signal.SIGKILL:
            node.process.wait()
            node.process = None

    def restart(self, node: Node) -> None:
        """Start a killed server again with its config file (Sentinel may have rewritten it)."""
        self._spawn(node)


def serve_group(first_port: int | None) -> int:
    """`python -m queuing_system.redis_server --sentinel`: the group in the foreground until Ctrl+C."""
    import sys
    import threading

    from queuing_system.console import say

    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    group = SentinelGroup(first_port)
    try:
        group.start()
    except EmbeddedRedisError as error:
        group.stop()
        print(f"Cannot start the Sentinel group: {error}", file=sys.stderr, flush=True)
        return 1
    try:
        say(f"A Sentinel group for the lessons ({group.binary}); Ctrl+C stops all six:")
        say(
            f"  primary {HOST}:{group.servers[0].port}, replicas "
            + ", ".join(f"{HOST}:{n.port}" for n in group.servers[1:])
        )
        say("  sentinels " + ", ".join(f"{HOST}:{n.port}" for n in group.sentinels))
        say(f"In every terminal: export REDIS_URL={group.url}")
        say("Cause a failover: python -m queuing_system.redis_cli --sentinel SENTINEL FAILOVER mymaster")
        say(f"  (or: redis-cli -p {group.sentinels[0].port} SENTINEL FAILOVER mymaster)")
        while not stopped.wait(0.5):
            if all(node.process is None or node.process.poll() is not None for node in group.sentinels):
                print("The sentinels stopped by themselves", file=sys.stderr, flush=True)
                return 1
    finally:
        group.stop()
    say("Sentinel group stopped")
    return 0
