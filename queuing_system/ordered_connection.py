"""The processor loop's one connection, used strictly in order."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.connection import ConnectionInterface
from redis.exceptions import ResponseError

from queuing_system.refusals import refusal

try:  # the C packer redis-py uses too, called directly: its per-argument checks cost more than the packing
    from hiredis import pack_command
except ImportError:  # pragma: no cover - hiredis is in requirements.txt
    pack_command = None  # type: ignore[assignment]

# How long progress Redis refused (busy running a script, loading…) is sent again before the next
# call: progress must land before the job's end, and the end must not wait for it longer than this.
PROGRESS_PATIENCE = 1.0


class OrderedConnection:
    """One connection used strictly in order: progress is sent without waiting for its reply,
    and read back before the reply of the next call. Redis runs one connection's commands in
    the order they were sent, so progress always lands before the step that settles the job.
    Not thread-safe: it belongs to the loop's thread (the steward uses the client's pool)."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: ConnectionInterface | None = None
        self._pending = 0
        self._sent: list[Sequence[Any]] = []  # the commands sent without their reply read yet

    def _connected(self) -> ConnectionInterface:
        # One connection made once and reconnected after each reset: the pool counts every
        # connection it makes against its max_connections (100 by default) and never forgets it, so
        # a new one per reset ran out after a hundred faults ("Too many connections" for good).
        connection = self._connection
        if connection is None:
            connection = self._connection = self._pool.make_connection()
        if getattr(connection, "_sock", None) is None:  # (connect() is a no-op then, but not a cheap one)
            connection.connect()
        return connection

    def send(self, *commands: Sequence[Any]) -> None:
        """Send commands now; their replies are read (and ignored) before the next call's."""
        try:
            connection = self._connected()
            connection.send_packed_command(_packed(connection, commands))
        except BaseException:
            self.reset()
            raise
        self._pending += len(commands)
        self._sent.extend(commands)

    def call(self, *args: Any) -> Any:
        """One command and its reply (after the replies of everything sent before it: what Redis
        refused of those is sent again first, for up to PROGRESS_PATIENCE seconds)."""
        if self._pending:
            self._send_refused_again(self._read_sent())
        self.send(args)
        return self._reply()

    def _read_sent(self) -> list[Sequence[Any]]:
        """Read the replies of what was sent (usually in already); the commands Redis refused."""
        sent, self._sent = self._sent, []
        refused: list[Sequence[Any]] = []
        connection = self._connected()
        try:
            for command in sent:
                self._pending -= 1
                try:
                    connection.read_response()
                except ResponseError as error:  # a progress write that failed: the end still counts
                    if refusal(error) is not None:
                        refused.append(command)
        except BaseException:
            self.reset()
            raise
        return refused

    def _send_refused_again(self, refused: list[Sequence[Any]]) -> None:
        """Refused progress again, waiting for each reply, before the call that may end the job: sent
        after it, it would come after the end (and be dropped by the creator). Bounded: during a
        long refusal the end waits for Redis anyway, and progress is best effort."""
        deadline = time.monotonic() + PROGRESS_PATIENCE
        delay = 0.02
        while refused and time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay *= 2
            self.send(*refused)
            refused = self._read_sent()

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
            self._sent = []
            return connection.read_response()
        except ResponseError:
            raise
        except BaseException:
            self.reset()
            raise

    def reset(self) -> None:
        """Drop the connection (its replies are unknown); the next call connects it again."""
        self._pending = 0
        self._sent = []
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.disconnect()


def _packed(connection: ConnectionInterface, commands: Sequence[Sequence[Any]]) -> Any:
    """The commands in Redis's protocol. redis-py's packer checks and converts each argument in Python
    (a step has about forty); hiredis's packs what it can in C, and redis-py's does the rest (a
    command name with a space in it, an argument of a type hiredis refuses: DataError as usual)."""
    if pack_command is not None and all(type(command[0]) is str and " " not in command[0] for command in commands):
        with contextlib.suppress(TypeError):
            return [pack_command(tuple(command)) for command in commands]
    return connection.pack_commands(commands)
