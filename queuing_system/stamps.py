"""What a processor stamps on every job, made cheaply: RQ's timestamp text and execution ids.

A processor writes two timestamps and one execution id per job; RQ's `utcformat` (strftime) and
`uuid4().hex` took a few microseconds each, a noticeable part of a quick job's cost.
"""

from __future__ import annotations

import itertools
import os
from datetime import datetime


def utc_text(moment: datetime) -> str:
    """RQ's `utcformat` ('%Y-%m-%dT%H:%M:%S.%fZ'), through `isoformat` (no format string to parse).
    Like RQ's, it writes the fields as they are: `moment` is UTC already (the processor's clock is)."""
    return moment.isoformat(timespec="microseconds")[:26] + "Z"


class _ExecutionIds:
    """Execution ids as RQ makes them (32 hex digits, like `uuid4().hex`): 64 random bits for this
    process, then a counter. Unique without drawing 128 random bits per job; a forked child draws its
    own random half (os.register_at_fork), so two worker processes never share one."""

    def __init__(self) -> None:
        self._reseed()

    def _reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


execution_id = _ExecutionIds()
os.register_at_fork(after_in_child=execution_id._reseed)
