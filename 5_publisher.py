"""Task 5 — the publisher side of pub/sub.

Teaches: PUBLISH, and that a message only reaches who is subscribed right now.
Run:     python 5_subscriber.py in one terminal, then python 5_publisher.py
Prints:  the connected line, then `About to send <message>` before each publish.
"""

import asyncio

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis.asyncio

from queuing_system.console import arguments, connected, run_lesson, say
from queuing_system.keys import SCHOOL_CHANNEL
from queuing_system.settings import connect_async


async def publish_message(client: redis.asyncio.Redis, message: str, time_ms: int) -> None:
    """After `time_ms` milliseconds, announce `message` and publish it (the original's setTimeout)."""
    await asyncio.sleep(time_ms / 1000)
    say(f"About to send {message}")
    await client.publish(SCHOOL_CHANNEL, message)


async def main() -> None:
    client = connect_async()
    try:
        await client.ping()
        connected()

        # All four timers start together, as in the original; the last ends at 400 ms.
        await asyncio.gather(
            publish_message(client, "Holberton Student #1 starts course", 100),
            publish_message(client, "Holberton Student #2 starts course", 200),
            publish_message(client, "KILL_SERVER", 300),
            publish_message(client, "Holberton Student #3 starts course", 400),
        )
    finally:
        await client.aclose()


if __name__ == "__main__":
    arguments(__doc__)
    run_lesson(lambda: asyncio.run(main()))
