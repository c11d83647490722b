"""When a settled job's end reaches its creator.

On a single Redis the settle step publishes the end itself, in the same atomic step that stores it:
a creator never hears of an end that is not stored. With replicas to wait for (a Sentinel group),
the step stores the end but holds its event back, and the end is announced only once the replicas
confirmed it, so a creator never hears of an end that a failover takes back (and runs again).
"""

from __future__ import annotations

import dataclasses

import redis

from queuing_system.job_run import JobRun
from queuing_system.keys import JOB_EVENTS_CHANNEL
from queuing_system.ordered_connection import OrderedConnection
from queuing_system.replication import Confirmation
from queuing_system.steps import Settlement


class Announcer:
    """Holds an end's event back while it is not confirmed, and announces it once it is."""

    def __init__(self, connection: redis.Redis, line: OrderedConnection) -> None:
        self._confirmation = Confirmation.of(connection)
        self._line = line

    def held_back(self, settle: Settlement | None) -> Settlement | None:
        """The settlement to send: as it is, or, with replicas to wait for, without its event (kept
        in `held_event` for `announce`)."""
        if settle is None or not settle.event or not self._confirmation.needed():
            return settle
        return dataclasses.replace(settle, event="", held_event=settle.event)

    def announce(self, run: JobRun, settle: Settlement | None) -> None:
        """Once the settled end is confirmed (Unconfirmed: the loop repeats the step, which finds it
        settled), publish what the step held back, and run a custom announcement."""
        self._confirmation.confirm(self._line.call)
        if settle is not None and settle.held_event:
            self._line.call("PUBLISH", JOB_EVENTS_CHANNEL, settle.held_event)
        if run.announce is not None:
            run.announce()
