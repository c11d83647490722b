"""Redis that answers with an error (out of memory, busy with a foreign script, read-only), or a server
that is not Redis at all: processors say one line for it, back off, and carry on; no job is stranded,
none runs twice, no process gives up or prints a traceback. Slow (`-m slow`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import redis

from queuing_system.embedded import EmbeddedRedis, free_port
from queuing_system.processes import ScriptProcess
from queuing_system.worker import _Tree
from tests.job_helpers import FAST
from tests.test_faults import (
    Ends,
    assert_every_job_ended_once,
    assert_nothing_left_behind,
    jobs_file,
    sent_numbers,
    stopped_at_the_end,
)

pytestmark = pytest.mark.slow

REFUSED = "Redis refused a command: "
NOT_CONNECTED = "Redis client not connected to the server: "
BUSY_SCRIPT = "local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < tonumber(ARGV[1]) do end return 1"


@contextlib.contextmanager
def out_of_memory(client: redis.Redis) -> Iterator[None]:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", 1)  # every write that needs memory is refused (OOM)
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)


@contextlib.contextmanager
def read_only(client: redis.Redis) -> Iterator[None]:
    """The state of a demoted primary: a replica of a primary it cannot reach."""
    client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
    try:
        yield
    finally:
        client.execute_command("REPLICAOF", "NO", "ONE")


@contextlib.contextmanager
def busy(client: redis.Redis) -> Iterator[None]:
    """A foreign script that runs for seconds: everyone else hears BUSY meanwhile."""
    client.config_set("lua-time-limit", 100)  # BUSY after 0.1 s, not Redis's default 5 s
    runner = threading.Thread(target=lambda: redis.Redis.from_url(client_url(client)).eval(BUSY_SCRIPT, 0, 4))
    runner.start()
    try:
        yield
    finally:
        runner.join(20)


def client_url(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/0"


@pytest.mark.parametrize("fault", [out_of_memory, read_only, busy], ids=["oom", "readonly", "busy"])
def test_processors_ride_out_redis_refusing_commands(
    own_redis: EmbeddedRedis, tmp_path, fault: Callable[[redis.Redis], contextlib.AbstractContextManager[None]]
) -> None:
    count = 300
    client = redis.Redis.from_url(own_redis.url)
    # Leases longer than the fault: no worker is presumed dead meanwhile (then its job in hand would
    # fail as abandoned, which is right for a worker that went silent, not for one Redis refused).
    env = {**FAST, "REDIS_URL": own_redis.url, "NOTIFICATION_SEND_MS": "10", "QUEUING_WORKER_LEASE": "10"}
    args = ["--jobs-file", str(jobs_file(tmp_path, count))]
    with ScriptProcess("7_job_creator.py", args, env=env) as creator:
        creator.wait_for_line(f"Notification job created: {count}", timeout=60)  # all stored before the fault
        processors = [ScriptProcess("7_job_processor.py", env=env) for _ in range(2)]
        with stopped_at_the_end(processors):
            ends = Ends(creator)
            creator.wait_until(lambda: ends.count() >= 50, timeout=60, what="50 jobs ended")
            with fault(client):
                for processor in processors:
                    processor.wait_until(
                        lambda p=processor: any(line.startswith(REFUSED) for line in p.lines),
                        timeout=30,
                        what="a refused command said",
                    )
            assert creator.wait(120) == 0
            assert all(processor.returncode is None for processor in processors)  # nobody gave up
            for processor in processors:
                assert processor.stop() == 0

    failed = assert_every_job_ended_once(ends.by_job(), count)
    assert {job_id: ends.by_job()[job_id] for job_id in failed} == {}  # every one completed, once
    assert max(sent_numbers(processors).values()) == 1
    others = [line for p in processors for line in p.lines if not line.startswith(("Sending notification", REFUSED))]
    assert others == []  # Redis was there all along: not one "not connected" line
    assert all(p.stderr == "" for p in processors)
    assert "Traceback" not in creator.stderr
    assert_nothing_left_behind(client)


class NotRedis:
    """A port where an HTTP server answers whatever it is sent (what a wrong REDIS_URL often finds)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.socket.getsockname()[1]}/0"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with contextlib.suppress(OSError), connection:
                connection.recv(1024)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def not_redis() -> Iterator[NotRedis]:
    server = NotRedis()
    yield server
    server.close()


@pytest.mark.parametrize("where", ["not redis", "no such database"])
def test_a_processor_pointed_at_no_usable_redis_keeps_saying_so(redis_url, not_redis, where) -> None:
    url = not_redis.url if where == "not redis" else redis_url.rsplit("/", 1)[0] + "/99"
    with ScriptProcess("7_job_processor.py", env={**FAST, "REDIS_URL": url}) as processor:
        # Each of its two worker processes retries, with the lesson's one line per attempt.
        processor.wait_until(lambda: len(processor.lines) >= 6, timeout=30, what="six attempts said")
        assert processor.stop() == 0
    assert all(line.startswith(NOT_CONNECTED) for line in processor.lines), processor.lines[:3]
    expected = "Protocol error" if where == "not redis" else "DB index is out of range"
    assert expected in processor.lines[0]
    assert processor.stderr == ""


def test_a_stop_signal_reaching_a_worker_before_it_is_set_up_is_quiet() -> None:
    """Between fork and a worker process's own handlers, a stop signal runs the processor's handler
    in the worker: it must end that worker quietly (multiprocessing refuses to look at siblings there)."""
    tree = _Tree("q", {}, [1, 1], False, False, None, None)  # type: ignore[arg-type]
    sibling = tree._context.Process(target=signal.pause, daemon=True)
    sibling.start()
    tree._children[sibling] = 1
    try:
        pid = os.fork()
        if pid == 0:  # the new worker process, before it replaced its parent's signal handlers
            code = 3
            try:
                tree._pass_on(signal.SIGTERM, None)
            except SystemExit as leaving:
                code = leaving.code if isinstance(leaving.code, int) else 4
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sibling.is_alive()  # the worker did not signal its siblings
    finally:
        sibling.kill()
        sibling.join(5)
