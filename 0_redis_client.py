"""Task 0 — connect to Redis.

Teaches: a client, a server, and what a failed connection looks like.
Run:     python 0_redis_client.py        (REDIS_URL picks the server)
Prints:  Redis client connected to the server
    or:  Redis client not connected to the server: <error>   (exit 1)
"""

from queuing_system.console import arguments, connected, run_lesson
from queuing_system.settings import connect


def main() -> None:
    client = connect()
    client.ping()  # redis-py connects lazily: PING proves the server is there
    connected()
    # The original keeps its connection open forever; a lesson that ends is kinder.
    client.close()


if __name__ == "__main__":
    arguments(__doc__)
    run_lesson(main)
    # Next: `python -m queuing_system.redis_cli SET Holberton School`, then python 1_redis_op.py
