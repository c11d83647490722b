"""Task 2 — the same operations with async/await (`redis.asyncio`).

Teaches: awaiting Redis replies instead of passing callbacks.
Run:     python 2_redis_op_async.py
Prints:  Redis client connected to the server / School / Reply: OK / 100
"""

import asyncio

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis.asyncio

from queuing_system.console import arguments, connected, print_reply, run_lesson, say
from queuing_system.settings import connect_async


async def set_new_school(client: redis.asyncio.Redis, school_name: str, value: str) -> None:
    """Set `school_name` to `value` and print the reply as `redis.print` does."""
    print_reply(await client.set(school_name, value))


async def display_school_value(client: redis.asyncio.Redis, school_name: str) -> None:
    """Await the value of `school_name` and print it (`None` when missing)."""
    say(await client.get(school_name))


async def main() -> None:
    client = connect_async()
    try:
        await client.ping()
        connected()

        await display_school_value(client, "Holberton")
        await set_new_school(client, "HolbertonSanFrancisco", "100")
        await display_school_value(client, "HolbertonSanFrancisco")
    finally:
        await client.aclose()


if __name__ == "__main__":
    arguments(__doc__)
    run_lesson(lambda: asyncio.run(main()))
    # Next: python 4_redis_advanced_op.py — hashes.
