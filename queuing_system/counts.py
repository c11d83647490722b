"""What a server keeps in Redis and must notice losing: the stock's reserved counts, the seat count.

They are created once, when the server first reaches Redis (a first start on this Redis); from then
on a missing count is data Redis lost (an empty Redis, a FLUSHALL): said once, answered 503, and
nothing sold until an operator restarts the server with `--reset`. With `--workers`, granian's main
process creates them (`prepare_until_done`) and its worker processes never do: one started after a
loss would sell everything again. Until the main process has done it they answer 503.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from redis.exceptions import RedisError

from queuing_system.console import say
from queuing_system.reconnect import Reconnection
from queuing_system.web import NotServingYet, idempotent, say_fault


class StoredCounts:
    """First contact and loss of a server's counts. `create()` makes them (a step safe to repeat);
    `created_elsewhere()`, when given, says whether another process did (granian's main process):
    this one then never creates them itself, and answers 503 until they are there."""

    def __init__(
        self, create: Callable[[], object], lost_line: str, created_elsewhere: Callable[[], bool] | None = None
    ) -> None:
        self._create = create
        self._lost_line = lost_line
        self._created_elsewhere = created_elsewhere
        self._ready = threading.Event()
        self._lost = threading.Event()  # said once, until a count is found again

    def reach_at_launch(self) -> None:
        """At launch, as the curriculum says; if Redis is away or refuses, say so: the first request
        once it is back creates them."""
        try:
            self.ensure()
        except NotServingYet:
            pass
        except RedisError as error:
            say_fault(error)

    def ensure(self) -> None:
        """Before a request uses the counts: created if this is the first contact (or NotServingYet)."""
        if self._ready.is_set():
            return
        if self._created_elsewhere is None:
            idempotent(self._create)
        elif not self._created_elsewhere():
            raise NotServingYet
        self._ready.set()

    def lost(self) -> tuple[dict[str, str], int]:
        """A count was missing: said once, and a 503 naming the way back."""
        if not self._lost.is_set():
            self._lost.set()
            say(self._lost_line)
        return {"status": self._lost_line}, 503

    def found(self) -> None:
        """A count was there (again: an operator reset the stock from another server)."""
        if self._lost.is_set():  # (clear() takes a lock: on every request, for nothing)
            self._lost.clear()


def prepare_until_done(step: Callable[[], None]) -> None:
    """`step()` (safe to repeat) until Redis takes it: a line for each failed attempt (not connected, or
    what Redis refused), with the one capped backoff of long-running processes between them."""
    reconnection = Reconnection()
    while True:
        try:
            step()
            return
        except RedisError as error:
            say_fault(error)
            reconnection.wait()
