"""Task 4 — advanced operations: a hash.

Teaches: HSET one field at a time, then HGETALL the whole mapping.
Run:     python 4_redis_advanced_op.py
Prints:  Reply: 1 six times (Reply: 0 when the fields already exist), then the mapping.
"""

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis

from queuing_system.console import arguments, connected, print_reply, run_lesson, say
from queuing_system.keys import SCHOOL_HASH
from queuing_system.settings import connect

SCHOOLS = {
    "Portland": 50,
    "Seattle": 80,
    "New York": 20,
    "Bogota": 20,
    "Cali": 40,
    "Paris": 2,
}


def store_schools(client: redis.Redis) -> None:
    """HSET each school, printing each reply as `redis.print` does."""
    for city, value in SCHOOLS.items():
        print_reply(client.hset(SCHOOL_HASH, city, value))


def display_schools(client: redis.Redis) -> None:
    """HGETALL, printed as a dict (fields come back in insertion order)."""
    say(client.hgetall(SCHOOL_HASH))


def main() -> None:
    client = connect()
    client.ping()
    connected()

    store_schools(client)
    display_schools(client)
    client.close()


if __name__ == "__main__":
    arguments(__doc__)
    run_lesson(main)
    # Next: pub/sub — python 5_subscriber.py in one terminal, python 5_publisher.py in another.
