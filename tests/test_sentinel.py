"""High availability (issue 19): one address for a Sentinel group, following its failovers, and
writes acknowledged only once replicated. The group tests are slow (each fault costs seconds)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from queuing_system.embedded import EmbeddedRedis
from queuing_system.replication import Confirmation, Unconfirmed
from queuing_system.sentinel_group import SentinelGroup
from queuing_system.sentinel_url import SentinelAddress
from queuing_system.settings import ConfigError, check_redis_url, connect, url_of
from tests.sentinel_group import CountedWriter, named_primary, wait_for

ROOT = Path(__file__).resolve().parent.parent
GOOD = "redis+sentinel://:s%40cret@host1:26379,host2:26380,[::1]:26381/mymaster/3"


def run(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *([script] if script.endswith(".py") else ["-m", script]), *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# -- the address ----------------------------------------------------------------------------------
def test_a_group_address_is_read_like_redis_sentinel_url() -> None:
    address = SentinelAddress.parse(GOOD)
    assert address.sentinels == (("host1", 26379), ("host2", 26380), ("::1", 26381))
    assert (address.master, address.db, address.password) == ("mymaster", 3, "s@cret")
    assert SentinelAddress.parse("redis+sentinel://h/m").sentinels == (("h", 26379),)  # the package's default port
    assert SentinelAddress.parse(address.url()) == address
    assert "s@cret" not in address.url(hide_password=True) and "s%40cret" not in address.url(hide_password=True)
    assert check_redis_url(GOOD) == GOOD


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://", "no sentinels"),
        ("redis+sentinel://h1:26379,h2:26379", "no master name"),
        ("redis+sentinel://h1:26379/", "no master name"),
        ("redis+sentinel://h1:26379,:1/m/0", "sentinel ':1' is not host:port"),
        ("redis+sentinel://h1:99999/m/0", "port '99999' is not a port number"),
        ("redis+sentinel://h1:26379,,h2/m/0", "sentinel '' is not host:port"),
        ("redis+sentinel://h1/m/x", "database 'x' is not a number"),
        ("redis+sentinel://h1/m/0/extra", "database '0/extra' is not a number"),
        ("redis+sentinel://h1/my master/0", "master name 'my master'"),
        ("redis+sentinel://h1/m/0?socket_timeout=1", "the only option is sentinel_password"),
        ("redis+sentinel://password@h1/m/0", "expected ':password@'"),
    ],
)
def test_a_bad_group_address_is_one_line_naming_it(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_redis_url(url)
    assert str(raised.value).startswith(f"REDIS_URL={url!r}: ")
    assert says in str(raised.value) and "\n" not in str(raised.value)


def test_a_bad_group_address_stops_a_lesson_with_one_line_and_exit_2() -> None:
    done = run("0_redis_client.py", env={"REDIS_URL": "redis+sentinel://h1:26379"})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "REDIS_URL='redis+sentinel://h1:26379': no master name after the sentinels; "
        "expected something like redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,"
        "127.0.0.1:26381/mymaster/0"
    ]


def test_a_group_nobody_answers_for_is_the_not_connected_line(closed_url: str) -> None:
    port = closed_url.rsplit(":", 1)[1].split("/")[0]
    done = run("0_redis_client.py", env={"REDIS_URL": f"redis+sentinel://127.0.0.1:{port}/mymaster/0"})
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "Redis client not connected to the server: "
        "no sentinel names a primary for 'mymaster' (a failover may be under way)"
    ]


# -- a plain Redis: nothing changes ---------------------------------------------------------------
def test_with_a_plain_redis_confirmation_sends_nothing(redis_url: str, r: redis.Redis) -> None:
    client = connect(redis_url)
    confirmation = Confirmation.for_client(client)
    assert confirmation.needed() == 0
    r.config_resetstat()
    assert confirmation.write(client, lambda pipe: pipe.set("k", "v")) == [True]
    assert "cmdstat_wait" not in r.info("commandstats")


def test_confirmation_settings_have_bounds(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    client = connect(redis_url)
    monkeypatch.setenv("QUEUING_CONFIRM_TIMEOUT_MS", "5")
    with pytest.raises(ConfigError, match="QUEUING_CONFIRM_TIMEOUT_MS='5': expected a whole number from 10 to 60000"):
        Confirmation.for_client(client)
    monkeypatch.setenv("QUEUING_CONFIRM_TIMEOUT_MS", "50")
    monkeypatch.setenv("QUEUING_CONFIRM_REPLICAS", "1")  # asked for, on a server without replicas: refused in time
    started = time.monotonic()
    with pytest.raises(Unconfirmed, match="0 of 1 replicas within 50 ms"):
        Confirmation.for_client(client).write(client, lambda pipe: pipe.set("k", "v"))
    assert time.monotonic() - started < 2


# Redis busy 0.5 s in a script: past the client's 0.3 s timeout, not past a reconnect's
# (DEBUG SLEEP would do, but Redis 7 refuses it by default: enable-debug-command).
BUSY = (
    b"local s = redis.call('TIME') "
    b"repeat local n = redis.call('TIME') until (n[1]-s[1])*1e6 + (n[2]-s[2]) > 0.5e6 return 1"
)


def test_a_command_is_never_sent_twice(redis_server: EmbeddedRedis, redis_url: str, r: redis.Redis) -> None:
    """A reply that does not come in time (Redis busy past the socket timeout) is an error for the
    caller, not a second copy of the command (redis-py's Retry used to re-send it: 3 INCRs)."""
    client = connect(redis_url, socket_timeout=0.3)
    client.ping()
    with socket.create_connection(("127.0.0.1", redis_server.port)) as sleeper:
        sleeper.sendall(b"*3\r\n$4\r\nEVAL\r\n$%d\r\n%s\r\n$1\r\n0\r\n" % (len(BUSY), BUSY))
        probe = redis.Redis.from_url(redis_url, socket_timeout=0.05)
        wait_for(lambda: _times_out(probe), 5, "Redis asleep")
        with pytest.raises(redis.exceptions.TimeoutError):
            client.incr("counter")
        assert sleeper.recv(16) == b":1\r\n"
    # Sent once: Redis runs it once the script ends (1); Valkey drops the command of a client that
    # left meanwhile (unset). Re-sent, it ran three times.
    assert r.get("counter") in (None, "1")


def _times_out(probe: redis.Redis) -> bool:
    try:
        probe.ping()
    except redis.exceptions.TimeoutError:
        return True
    return False


# -- a Sentinel group -----------------------------------------------------------------------------
@pytest.mark.slow
def test_lessons_and_redis_cli_run_on_a_group(group: SentinelGroup) -> None:
    done = run("1_redis_op.py", env={"REDIS_URL": group.url})
    assert done.stdout.splitlines() == ["Redis client connected to the server", "None", "Reply: OK", "100"]
    done = run("2_redis_op_async.py", env={"REDIS_URL": group.url})
    assert done.stdout.splitlines()[-2:] == ["Reply: OK", "100"]
    assert run("queuing_system.redis_cli", "SET", "Holberton", "School").stdout == "OK\n"
    assert group.primary().client().get("Holberton") == "School"
    asked = run("queuing_system.redis_cli", "--sentinel", "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
    assert asked.stdout.split() == ["127.0.0.1", str(group.primary().port)]


@pytest.mark.slow
def test_a_write_is_confirmed_by_every_replica(group: SentinelGroup) -> None:
    client = connect(group.url)
    confirmation = Confirmation.for_client(client)
    assert confirmation.needed() == 2  # both replicas, in sync
    assert confirmation.write(client, lambda pipe: pipe.set("k", "v")) == [True]
    for node in group.servers:
        assert node.client().get("k") == "v"  # WAIT: each replica has it when the write is acknowledged


FAULTS = ["SENTINEL FAILOVER", "SIGKILL, restarted", "SIGSTOP 5 s"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_no_acknowledged_write_is_lost_and_clients_follow_the_new_primary(group: SentinelGroup, fault: str) -> None:
    client = connect(group.url)  # made before the fault: it must follow
    old = group.primary()
    with CountedWriter(client, Confirmation.for_client(client)) as writer:
        writer.wait_for_writes(200)
        faulted = time.monotonic()
        if fault == "SENTINEL FAILOVER":
            group.failover()
        else:
            group.signal(old, signal.SIGKILL if fault.startswith("SIGKILL") else signal.SIGSTOP)
        wait_for(lambda: named_primary(group) not in (None, old), 30, "Sentinel announcing a new primary")
        new = group.primary()
        followed = wait_for(lambda: _port_of(client) == new.port, 5, "the client on the new primary")
        if fault.startswith("SIGKILL"):
            group.restart(old)
        elif fault.startswith("SIGSTOP"):
            time.sleep(max(0.0, 5 - (time.monotonic() - faulted)))  # the fault itself: paused for 5 s
            group.signal(old, signal.SIGCONT)
        group.wait_until_settled(timeout=60)
        writer.wait_for_writes(200)  # writing again, confirmed, once the group is whole
    assert writer.lost_on(new.client()) == []
    assert len(writer.acknowledged) >= 400
    print(
        f"{fault}: {len(writer.acknowledged)} acknowledged, 0 lost, refused {writer.refused}, followed {followed:.2f} s"
    )


def _port_of(client: redis.Redis) -> int | None:
    try:
        return int(client.config_get("port")["port"])
    except redis.exceptions.RedisError:
        return None


@pytest.mark.slow
def test_a_twin_client_goes_to_the_same_group(group: SentinelGroup) -> None:
    client = connect(group.url)
    assert url_of(client) == group.url
    assert _port_of(connect(url_of(client), decode_responses=False)) == group.primary().port
