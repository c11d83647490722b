"""Task 5: subscriber and publisher as two real processes."""

import signal

import pytest
import redis

from queuing_system.keys import SCHOOL_CHANNEL
from queuing_system.processes import ScriptProcess

CONNECTED = "Redis client connected to the server"


def subscribers(url: str) -> int:
    client = redis.Redis.from_url(url)
    try:
        return dict(client.pubsub_numsub(SCHOOL_CHANNEL))[SCHOOL_CHANNEL.encode()]
    finally:
        client.close()


def test_publisher_and_subscriber(redis_url: str) -> None:
    with ScriptProcess("5_subscriber.py") as subscriber:
        subscriber.wait_until(lambda: subscribers(redis_url) == 1, what="the subscription")
        with ScriptProcess("5_publisher.py") as publisher:
            assert publisher.wait() == 0
            assert subscriber.wait() == 0
    assert subscriber.lines == [
        CONNECTED,
        "Holberton Student #1 starts course",
        "Holberton Student #2 starts course",
        "KILL_SERVER",
    ]
    assert publisher.lines == [
        CONNECTED,
        "About to send Holberton Student #1 starts course",
        "About to send Holberton Student #2 starts course",
        "About to send KILL_SERVER",
        "About to send Holberton Student #3 starts course",
    ]
    assert subscriber.stderr == publisher.stderr == ""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_subscriber_stops_quietly_on_a_signal(redis_url: str, signum: int) -> None:
    with ScriptProcess("5_subscriber.py") as subscriber:
        subscriber.wait_until(lambda: subscribers(redis_url) == 1, what="the subscription")
        subscriber.signal(signum)
        assert subscriber.wait() == 0
    assert subscriber.lines == [CONNECTED]
    assert subscriber.stderr == ""


def test_subscriber_survives_redis_going_away(own_redis) -> None:
    env = {"REDIS_URL": own_redis.url}
    not_connected = "Redis client not connected to the server: "
    with ScriptProcess("5_subscriber.py", env=env) as subscriber:
        subscriber.wait_until(lambda: subscribers(own_redis.url) == 1, what="the subscription")
        own_redis.kill()
        subscriber.wait_until(
            lambda: sum(x.startswith(not_connected) for x in subscriber.lines) >= 2, what="two failed attempts"
        )
        own_redis.start()
        subscriber.wait_until(lambda: subscribers(own_redis.url) == 1, what="the new subscription")
        with redis.Redis.from_url(own_redis.url) as client:
            client.publish(SCHOOL_CHANNEL, "KILL_SERVER")
        assert subscriber.wait() == 0
    failures = [x for x in subscriber.lines if x.startswith(not_connected)]
    assert subscriber.lines == [CONNECTED, *failures, CONNECTED, "KILL_SERVER"]
    assert "Traceback" not in subscriber.stderr


def test_subscriber_waits_for_a_server_that_is_not_there_yet(closed_url: str) -> None:
    with ScriptProcess("5_subscriber.py", env={"REDIS_URL": closed_url}) as subscriber:
        subscriber.wait_until(lambda: len(subscriber.lines) >= 2, what="two failed attempts")
        subscriber.signal(signal.SIGINT)
        assert subscriber.wait() == 0
    assert all(x.startswith("Redis client not connected to the server: ") for x in subscriber.lines)
    assert subscriber.stderr == ""
