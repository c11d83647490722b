"""Task 1 — basic operations: SET and GET.

Teaches: writing and reading a string key.
Run:     python -m queuing_system.redis_cli SET Holberton School   (task 0's step), then python 1_redis_op.py
Prints:  Redis client connected to the server / School / Reply: OK / 100
"""

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis

from queuing_system.console import arguments, connected, print_reply, run_lesson, say
from queuing_system.settings import connect


def set_new_school(client: redis.Redis, school_name: str, value: str) -> None:
    """Set `school_name` to `value` and print the reply as `redis.print` does."""
    print_reply(client.set(school_name, value))


def display_school_value(client: redis.Redis, school_name: str) -> None:
    """Print the value of `school_name` (`None` when the key is missing)."""
    say(client.get(school_name))


def main() -> None:
    client = connect()
    client.ping()
    connected()

    display_school_value(client, "Holberton")
    set_new_school(client, "HolbertonSanFrancisco", "100")
    display_school_value(client, "HolbertonSanFrancisco")
    client.close()


if __name__ == "__main__":
    arguments(__doc__)
    run_lesson(main)
    # Next: python 2_redis_op_async.py — the same lesson with async/await.
