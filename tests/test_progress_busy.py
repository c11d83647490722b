"""Progress a job reports while Redis is busy running someone's script still lands before its end.
Slow (`-m slow`): Redis is made busy for one to two seconds."""

from __future__ import annotations

import threading

import pytest
import redis

from queuing_system.ordered_connection import OrderedConnection
from tests.job_helpers import eventually

pytestmark = pytest.mark.slow

BUSY_SCRIPT = "local t = redis.call('TIME')[1] while redis.call('TIME')[1] - t < tonumber(ARGV[1]) do end return 1"


def is_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.ResponseError as error:
        return str(error).startswith("BUSY")
    return False


def test_progress_refused_as_busy_is_sent_again_before_the_next_step(own_redis) -> None:
    """The processor sends progress without waiting (fire and forget); Redis answers BUSY. The
    step that settles the job comes once the script is over: the progress goes first, then it."""
    client = redis.Redis.from_url(own_redis.url)
    client.config_set("lua-time-limit", 50)  # BUSY after 0.05 s, not Redis's default 5 s
    listener = client.pubsub()
    listener.subscribe("progress")
    eventually(lambda: (listener.get_message(timeout=0.1) or {}).get("type") == "subscribe")
    line = OrderedConnection(client)
    line.call("PING")  # connected before the script starts
    script = threading.Thread(target=lambda: redis.Redis.from_url(own_redis.url).eval(BUSY_SCRIPT, 0, 2))
    script.start()
    watcher = redis.Redis.from_url(own_redis.url)
    eventually(lambda: is_busy(watcher))
    line.send(("PUBLISH", "progress", "50%"))
    script.join(10)
    assert line.call("PUBLISH", "progress", "completed") == 1
    heard = [listener.get_message(timeout=5), listener.get_message(timeout=5)]
    assert [message["data"] for message in heard if message] == [b"50%", b"completed"]
    listener.close()
