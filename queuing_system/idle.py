"""A processor with nothing to run: quiet on Redis, awake at once when a job lands.

The idle workers of one processor take turns (`IdleTurns`, shared by its forked worker processes):
one of them, the waiter, blocks on every one of its queues at once (`QueueWatch`: one connection per
queue, BLMOVE straight into its claims, as many seconds as `idle_wait`); the others wait on the
machine, without a word to Redis, until the waiter rings (a job arrived: each claims its share) or
the waiter's seat is free. So an idle processor costs Redis a few commands every `idle_wait`
seconds, plus each worker's lease and the upkeep at its idle pace, however many workers it has.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.connection import ConnectionInterface
from redis.exceptions import RedisError, ResponseError

from queuing_system.bad_data import BadKeys, wrong_types
from queuing_system.recovery import Upkeep
from queuing_system.steward import LoopState

# How often a worker waiting on the machine looks at the waiter's bell (and at a stop request).
LOOK_EVERY = 0.05


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class IdleTurns:
    """Which idle worker of a processor waits on Redis, and its bell. Made before the worker processes
    are forked, so they all share it; a waiter that died leaves its seat to the next one."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._seat: Any = context.Value("q", 0)  # the waiter's id: pid and thread (0: nobody)
        self._rings: Any = context.Value("q", 0)
        # The workers of one process (`--concurrency`) wait on this, not on a clock: each process has its
        # own (made before the fork, never used before it).
        self._local = threading.Condition()

    @staticmethod
    def _me() -> int:
        return os.getpid() << 20 | (threading.get_ident() & 0xFFFFF)

    def take_seat(self) -> bool:
        """Become the waiter, if nobody (alive) is."""
        me = self._me()
        with self._seat.get_lock():
            holder = int(self._seat.value)
            if holder in (0, me) or not _alive(holder >> 20):
                self._seat.value = me
                return True
            return False

    def leave_seat(self) -> None:
        with self._seat.get_lock():
            if self._seat.value == self._me():
                self._seat.value = 0

    def ring(self) -> None:
        """Jobs arrived: every idle worker looks for its share."""
        with self._rings.get_lock():
            self._rings.value += 1
        self.wake_here()

    def wake_here(self) -> None:
        """Wake the workers of this process waiting in `wait_here` (a ring, or a stop)."""
        with self._local:
            self._local.notify_all()

    def wait_here(self, rings: int, stop: threading.Event, timeout: float) -> None:
        """Wait until the bell rang since `rings` or `stop` is set (woken at once when either happens in
        this process; a ring in another process is seen within `timeout`)."""
        with self._local:
            self._local.wait_for(lambda: self.rings != rings or stop.is_set(), timeout)

    @property
    def rings(self) -> int:
        return int(self._rings.value)


class QueueWatch:
    """Blocks on several queues at once, one connection each, until a job lands on one of them; that job
    moves straight into `claimed` (BLMOVE: never through our hands), the other waits are cut short."""

    def __init__(self, client: redis.Redis, queue_keys: Sequence[str], claimed: str) -> None:
        self.client = self._client = client
        self._queue_keys = list(queue_keys)
        self._claimed = claimed
        # One connection per key, made once and connected again after each drop: the pool counts what
        # it makes against its max_connections and never forgets it (a new one per fault ran out).
        self._made: dict[str, ConnectionInterface] = {}
        self._connections: dict[str, tuple[ConnectionInterface, int]] = {}

    def keys_used(self) -> dict[str, str]:
        """The keys it blocks on and moves into, with the type each must have."""
        return {key: "list" for key in [*self._queue_keys, self._claimed]}

    def _connection(self, key: str) -> tuple[ConnectionInterface, int]:
        if key not in self._connections:
            if key not in self._made:
                self._made[key] = self._client.connection_pool.make_connection()
            connection = self._made[key]
            try:
                connection.connect()
                connection.send_command("CLIENT", "ID")
                self._connections[key] = (connection, int(connection.read_response()))
            except BaseException:
                connection.disconnect()
                raise
        return self._connections[key]

    def wait(self, seconds: int, stop: threading.Event, tick: Callable[[], object] = lambda: None) -> bool:
        """True once a job moved into our claims; False after `seconds` (or a stop). A fault on a queue
        (Redis away, a key of the wrong type) is raised when no job moved. `tick` runs meanwhile, every
        LOOK_EVERY seconds (what it raises ends the wait)."""
        connections = {key: self._connection(key) for key in self._queue_keys}
        moved = threading.Event()
        errors: dict[str, BaseException] = {}
        threads = {
            key: threading.Thread(target=self._block, args=(key, connection, seconds, moved, errors), daemon=True)
            for key, (connection, _) in connections.items()
        }
        for thread in threads.values():
            thread.start()
        try:
            while not moved.is_set() and not stop.is_set() and any(t.is_alive() for t in threads.values()):
                tick()
                moved.wait(LOOK_EVERY)
        finally:
            in_doubt = self._end_waits(threads, connections, errors)
        for error in errors.values():
            if not moved.is_set():
                raise error  # (the loop rides it out, then looks at our claims)
        # A wait whose answer never came may have moved a job: say so, and the loop looks at our claims.
        return moved.is_set() or in_doubt

    def _end_waits(
        self,
        threads: dict[str, threading.Thread],
        connections: dict[str, tuple[ConnectionInterface, int]],
        errors: dict[str, BaseException],
    ) -> bool:
        """Cut the other waits short, and wait for every thread to be done with its connection. True
        when one never answered (then a job may have moved without our knowing)."""
        in_doubt = False
        # Cut each wait still on short (it then answers as if timed out). A thread may not have sent its
        # BLMOVE yet (a job landed on another queue as the waits began): UNBLOCK then finds nothing to cut,
        # so it is asked again until it did cut it or the thread is done (before: a two-second stall).
        uncut = {key for key, thread in threads.items() if thread.is_alive()}
        deadline = time.monotonic() + 2.0
        while uncut and time.monotonic() < deadline:
            for key in list(uncut):
                with contextlib.suppress(RedisError):
                    if not threads[key].is_alive() or self._client.client_unblock(connections[key][1]):
                        uncut.discard(key)
            if uncut:
                time.sleep(0.002)
        for key, thread in threads.items():
            thread.join(2.0)
            if thread.is_alive() or key in errors:
                in_doubt = in_doubt or thread.is_alive()
                self._drop(key)  # a connection in doubt is not used again (closing it ends a wait)
                thread.join(2.0)
        return in_doubt

    def _block(
        self,
        key: str,
        connection: ConnectionInterface,
        seconds: int,
        moved: threading.Event,
        errors: dict[str, BaseException],
    ) -> None:
        try:
            connection.send_command("BLMOVE", key, self._claimed, "LEFT", "RIGHT", seconds)
            if connection.read_response() is not None:
                moved.set()
        except BaseException as error:
            errors[key] = error

    def _drop(self, key: str) -> None:
        connection, _ = self._connections.pop(key, (None, 0))
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.disconnect()

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)
        self._made.clear()


class IdleWait:
    """A worker with nothing to run: waits for work, quietly. The waiter (whoever takes the seat) blocks
    on all its queues and does the upkeep meanwhile; the others wait on the machine for its bell."""

    def __init__(
        self,
        turns: IdleTurns,
        watch: QueueWatch,
        upkeep: Upkeep,
        bad_keys: BadKeys,
        state: LoopState,
        idle_wait: int,
        may_wait_on_redis: bool = True,
    ) -> None:
        self.turns, self.watch, self.upkeep, self.bad_keys = turns, watch, upkeep, bad_keys
        self.state, self.idle_wait = state, idle_wait
        # Only a process's lead worker: the waiter must keep its lease (a job it moves is in its claims).
        self.may_wait_on_redis = may_wait_on_redis

    def until_work(self) -> None:
        """Return when jobs may be there (for us to claim), or on a stop."""
        rings = self.turns.rings
        while not self.state.stopping and self.turns.rings == rings:
            waiter = self.may_wait_on_redis and self.turns.take_seat()
            try:
                self.upkeep.when_due(idle=True, sweep=waiter)
                if waiter and self._watch_queues():
                    self.turns.ring()
                    return
                if not waiter and self.may_wait_on_redis:
                    self.state.stop_event.wait(LOOK_EVERY)  # for the bell of another process, or a free seat
                elif not waiter:
                    # Rung by this process's lead (or stopped): at once.
                    self.turns.wait_here(rings, self.state.stop_event, LOOK_EVERY * 20)
            finally:
                if waiter:
                    self.turns.leave_seat()
        if self.may_wait_on_redis:
            self.turns.wake_here()  # a ring from another process: this process's other workers too

    def wake(self) -> None:
        """A stop: out of `until_work` at once."""
        self.turns.wake_here()

    def more_waiting(self) -> None:
        """A busy worker saw jobs left in the queues after its claim: the idle ones (who wait for the
        bell while the waiter's seat is taken, or, in a crew, for their lead) come for them."""
        self.turns.ring()

    def _watch_queues(self) -> bool:
        """Block on all our queues (a job lands: True, straight in our claims); a queue of the wrong type
        is named, and looked at again a wait later."""
        try:
            tick = functools.partial(self.upkeep.when_due, idle=True, sweep=True)
            return self.watch.wait(self.idle_wait, self.state.stop_event, tick)
        except ResponseError:
            problems = wrong_types(self.watch.client, self.watch.keys_used())
            if not problems:
                raise
            self.bad_keys.report(problems)
            self.state.stop_event.wait(self.idle_wait)
            return False

    def close(self) -> None:
        self.watch.close()
