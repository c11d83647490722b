"""Creating jobs when Redis's answer is lost or refused: each job at most once, no id skipped,
and the creator says what really happened. Slow (`-m slow`)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from queuing_system.keys import QUEUE_7
from queuing_system.processes import ScriptProcess
from queuing_system.queues import job_queue
from tests.job_helpers import eventually
from tests.tcp_proxy import FreezableProxy

pytestmark = pytest.mark.slow

CREATED = re.compile(r"^Notification job created: (\d+)$")


def jobs_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps([{"phoneNumber": f"{n:010d}", "message": f"code {n}"} for n in range(1, count + 1)]))
    return path


def created_ids(creator: ScriptProcess) -> list[int]:
    return [int(match.group(1)) for line in list(creator.lines) if (match := CREATED.match(line))]


def test_a_12_s_network_cut_during_a_bulk_enqueue_duplicates_and_skips_nothing(own_redis, tmp_path) -> None:
    count = 20_000
    direct = redis.Redis.from_url(own_redis.url)
    with FreezableProxy(own_redis.port) as proxy:
        env = {"REDIS_URL": proxy.url, "QUEUING_ENQUEUE_PATIENCE": "60"}
        with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
            creator.wait_until(lambda: len(created_ids(creator)) >= 500, what="the first jobs created")
            proxy.freeze_after_sent(300_000)  # a later chunk's write reaches Redis; its reply is caught
            assert proxy.frozen.wait(60)
            # The cut lasts 12 s (the fault the issue measured): longer than the client's 10 s socket
            # timeout, so the client gives up on a write whose outcome it cannot know.
            time.sleep(12)
            proxy.thaw()
            creator.wait_until(lambda: len(created_ids(creator)) >= count, timeout=120, what="all jobs created")
            creator.signal()
            assert creator.wait() == 0
    queued = Counter(int(job_id) for job_id in job_queue(QUEUE_7, direct).job_ids)
    ids = created_ids(creator)
    steps = direct.info("commandstats")["cmdstat_evalsha"]
    direct.close()
    # Two steps per chunk of 500; one more ran: the step whose reply was lost was sent again.
    assert steps["calls"] - steps.get("failed_calls", 0) > 2 * count // 500
    assert sorted(ids) == list(range(1, count + 1))  # every job said created once, no id skipped
    assert {job_id: n for job_id, n in queued.items() if n > 1} == {}  # no job queued twice
    assert sorted(queued) == list(range(1, count + 1))
    assert "Traceback" not in creator.stderr


def refused_lines(creator: ScriptProcess) -> list[str]:
    return [line for line in creator.stderr.splitlines() if line.startswith("Redis refused the write: OOM ")]


def refusals(connection: redis.Redis) -> int:
    """How many commands Redis has refused for want of memory."""
    return int(connection.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def fill_up(connection: redis.Redis, headroom: int) -> None:
    """Redis refuses writes (OOM) once it holds `headroom` more bytes than now."""
    used = int(connection.info("memory")["used_memory"])
    connection.config_set("maxmemory-policy", "noeviction")
    connection.config_set("maxmemory", used + headroom)


def test_a_creator_refused_by_a_full_redis_says_what_it_created(own_redis, tmp_path) -> None:
    count = 20_000
    direct = redis.Redis.from_url(own_redis.url)
    fill_up(direct, 2_000_000)  # room for a few thousand jobs, not 20,000
    env = {"REDIS_URL": own_redis.url, "QUEUING_ENQUEUE_PATIENCE": "2"}
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
        assert creator.wait(60) == 1
    made = len(created_ids(creator))
    assert 0 < made < count and made % 500 == 0
    assert created_ids(creator) == list(range(1, made + 1))
    assert refused_lines(creator)  # what Redis said, each time it said it
    last = creator.stderr.splitlines()[-1]
    assert last.startswith("Gave up: Redis refused the write (OOM command not allowed when used memory > 'maxmemory'.")
    assert last.endswith(f"); created {made} of {count} jobs (ids 1-{made}), not the other {count - made}")
    assert not any(line.startswith("Redis client not connected") for line in creator.lines)
    assert job_queue(QUEUE_7, direct).job_ids == [str(n) for n in range(1, made + 1)]
    # The counter moved for what was written, and at most the one chunk it was refused on.
    assert made <= int(direct.get("queuing:job_id")) <= made + 500
    assert "Traceback" not in creator.stderr
    direct.close()


def test_a_creator_waits_out_a_full_redis_and_creates_each_job_once(own_redis, tmp_path) -> None:
    count = 20_000
    direct = redis.Redis.from_url(own_redis.url)
    fill_up(direct, 2_000_000)
    env = {"REDIS_URL": own_redis.url, "QUEUING_ENQUEUE_PATIENCE": "60"}
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
        eventually(lambda: refusals(direct) >= 2, timeout=60)  # Redis said no, and the creator tried again
        direct.config_set("maxmemory", 0)  # the operator makes room
        creator.wait_until(lambda: len(created_ids(creator)) >= count, timeout=60, what="all jobs created")
        creator.signal()
        assert creator.wait() == 0
    assert created_ids(creator) == list(range(1, count + 1))
    assert job_queue(QUEUE_7, direct).job_ids == [str(n) for n in range(1, count + 1)]
    assert direct.get("queuing:job_id") == str(count).encode()
    assert len(refused_lines(creator)) >= 2
    assert "Traceback" not in creator.stderr
    direct.close()


BUSY_SCRIPT = """
local finish = tonumber(redis.call('TIME')[1]) + tonumber(ARGV[1])
while tonumber(redis.call('TIME')[1]) < finish do end
return 1
"""


@pytest.mark.parametrize("fault", ["READONLY", "BUSY"])
def test_a_creator_rides_out_a_redis_refusing_writes(own_redis, tmp_path, fault) -> None:
    """Read-only for a while (a demoted primary), or busy with someone's long script."""
    import threading

    count = 20_000
    direct = redis.Redis.from_url(own_redis.url)
    if fault == "BUSY":
        direct.config_set("lua-time-limit", 100)  # BUSY replies after 100 ms of a script (Redis 6.2's name too)
    env = {"REDIS_URL": own_redis.url, "QUEUING_ENQUEUE_PATIENCE": "60"}
    with ScriptProcess("7_job_creator.py", ["--jobs-file", str(jobs_file(tmp_path, count))], env=env) as creator:
        creator.wait_until(lambda: len(created_ids(creator)) >= 500, what="the first jobs created")
        if fault == "READONLY":
            direct.replicaof("127.0.0.1", "1")  # a primary that nobody answers at: read-only meanwhile
        else:
            threading.Thread(target=lambda: redis.Redis.from_url(own_redis.url).eval(BUSY_SCRIPT, 0, 3)).start()
        eventually(lambda: refusals_of(own_redis.url, fault) >= 2, timeout=30)
        if fault == "READONLY":
            direct.replicaof("NO", "ONE")
        creator.wait_until(lambda: len(created_ids(creator)) >= count, timeout=60, what="all jobs created")
        creator.signal()
        assert creator.wait() == 0
    assert created_ids(creator) == list(range(1, count + 1))
    assert job_queue(QUEUE_7, direct).job_ids == [str(n) for n in range(1, count + 1)]
    said = [line for line in creator.stderr.splitlines() if line.startswith(f"Redis refused the write: {fault} ")]
    assert said and all(line in said for line in creator.stderr.splitlines() if "refused" in line)
    assert not any(line.startswith("Redis client not connected") for line in creator.lines)
    assert "Traceback" not in creator.stderr
    direct.close()


def refusals_of(url: str, code: str) -> int:
    """How many commands Redis answered with error `code` (a fresh client: BUSY refuses INFO too)."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("errorstats").get(f"errorstat_{code}", {}).get("count", 0))
    except redis.exceptions.ResponseError:
        return 0  # busy: try again
    finally:
        client.close()


def test_a_creator_started_while_redis_is_busy_waits_until_it_is_not(own_redis) -> None:
    import threading

    direct = redis.Redis.from_url(own_redis.url)
    direct.config_set("lua-time-limit", 100)
    threading.Thread(target=lambda: redis.Redis.from_url(own_redis.url).eval(BUSY_SCRIPT, 0, 3)).start()
    eventually(lambda: busy(own_redis.url))
    with ScriptProcess("6_job_creator.py", env={"REDIS_URL": own_redis.url}) as creator:
        creator.wait_for_line("Notification job created: 1", timeout=30)
        creator.signal()
        assert creator.wait() == 0
    assert creator.lines == ["Notification job created: 1"]
    complaints = creator.stderr.splitlines()
    assert complaints and all(  # Redis and Valkey word it differently after the code
        line.startswith("Redis refused the connection: BUSY ") and "is busy running a script" in line
        for line in complaints
    )
    assert job_queue("push_notification_code", direct).job_ids == ["1"]
    direct.close()


def busy(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        return False
    except redis.exceptions.ResponseError as error:
        return str(error).startswith("BUSY")
    finally:
        client.close()
