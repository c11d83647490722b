"""Task 5 — the subscriber side of pub/sub.

Teaches: SUBSCRIBE, receiving messages as they are published, leaving on a signal.
Run:     python 5_subscriber.py   (then python 5_publisher.py in another terminal)
Prints:  the connected line, then each message on `holberton school channel`;
         on KILL_SERVER it prints it, unsubscribes and exits 0.
If Redis is away (or what answers is not a Redis, or REDIS_URL's database does not exist), it says so
on each failed attempt and tries again by itself.
"""

import time

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis

from queuing_system.console import (
    REDIS_DOWN,
    arguments,
    backoff,
    connected,
    means_not_connected,
    not_connected,
    run_lesson,
    say,
)
from queuing_system.keys import KILL_MESSAGE, SCHOOL_CHANNEL
from queuing_system.settings import connect


def listen_until_killed(client: redis.Redis) -> None:
    """Print every message on the channel until KILL_SERVER arrives."""
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(SCHOOL_CHANNEL)
    for message in pubsub.listen():
        say(message["data"])
        if message["data"] == KILL_MESSAGE:
            pubsub.unsubscribe()
            pubsub.close()
            return


def main() -> None:
    delays = backoff()
    while True:
        client = connect()
        try:
            client.ping()
            connected()
            delays = backoff()  # a good connection resets the wait
            listen_until_killed(client)
            return
        except (*REDIS_DOWN, redis.exceptions.ResponseError) as error:
            if not means_not_connected(error):
                raise
            # Like node_redis: say so on each failed attempt, then try again.
            not_connected(error)
            client.close()
            time.sleep(next(delays))


if __name__ == "__main__":
    arguments(__doc__)
    run_lesson(main, interrupted_exit=0)  # stopping a long-running listener is not an error
    # Next: python 6_job_processor.py and python 6_job_creator.py — a job queue.
