"""The processor loop's one connection, used strictly in order."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import ConnectionInterface
from redis.exceptions import ResponseError


class OrderedConnection:
    """One connection used strictly in order: progress is sent without waiting for its reply,
    and read back before the reply of the next call. Redis runs one connection's commands in
    the order they were sent, so progress always lands before the step that settles the job.
    Not thread-safe: it belongs to the loop's thread (the steward uses the client's pool)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: ConnectionInterface | None = None
        self._pending = 0

    def _connected(self) -> ConnectionInterface:
        # One connection made once and reconnected after each reset: the pool counts every
        # connection it makes against its max_connections (100 by default) and never forgets it, so
        # a new one per reset ran out after a hundred faults ("Too many connections" for good).
        if self._connection is None:
            self._connection = self._pool.make_connection()
        self._connection.connect()  # nothing to do while connected
        return self._connection

    def send(self, *commands: Sequence[Any]) -> None:
        """Send commands now; their replies are read (and ignored) before the next call's."""
        try:
            connection = self._connected()
            connection.send_packed_command(connection.pack_commands(commands))
        except BaseException:
            self.reset()
            raise
        self._pending += len(commands)

    def call(self, *args: Any) -> Any:
        """One command and its reply (after the replies of everything sent before it)."""
        self.send(args)
        return self._reply()

    def flush(self) -> None:
        """Wait until Redis has run everything sent so far."""
        if self._pending:
            self.call("PING")

    def _reply(self) -> Any:
        connection = self._connected()
        try:
            while self._pending > 1:
                self._pending -= 1
                with contextlib.suppress(ResponseError):  # a progress write that failed: the end still counts
                    connection.read_response()
            self._pending = 0
            return connection.read_response()
        except ResponseError:
            raise
        except BaseException:
            self.reset()
            raise

    def reset(self) -> None:
        """Drop the connection (its replies are unknown); the next call connects it again."""
        self._pending = 0
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.disconnect()
