"""Kue's job options, the RQ way, with their bounds.

- attempts + exponential backoff -> `rq.Retry(max, interval=[b, 2b, 4b, …])` (needs a worker's scheduler);
- delay -> the scheduled registry (a worker's scheduler enqueues the job when due);
- priority -> a sibling queue (`queuing_system.queues`);
- ttl -> the job timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rq import Retry, get_current_job

from queuing_system.queues import Priority
from queuing_system.settings import env_int

MAX_ATTEMPTS = 20
MAX_DELAY = 30 * 24 * 3600  # thirty days
MAX_BACKOFF = 3600  # no wait between two attempts is longer than an hour


def job_timeout() -> int:
    """QUEUING_JOB_TIMEOUT: the seconds a job may run (Kue's ttl), for the jobs a creator makes and for
    the jobs a processor finds without one."""
    return env_int("QUEUING_JOB_TIMEOUT", 20, 1, 86400)


@dataclass(frozen=True)
class JobSettings:
    """Kue's job options. The defaults reproduce the curriculum exactly (one attempt, no delay)."""

    timeout: int = field(default_factory=job_timeout)  # Kue's ttl
    attempts: int = 1
    backoff: int = field(default_factory=lambda: env_int("QUEUING_RETRY_BACKOFF", 1, 1, 3600))  # 1st retry after, s
    delay: int = 0
    priority: Priority = Priority.NORMAL
    result_ttl: int = 24 * 3600  # finished jobs stay inspectable for a day
    failure_ttl: int = 7 * 24 * 3600  # failed jobs (the dead letters) for a week

    def retry(self) -> Retry | None:
        if self.attempts <= 1:
            return None
        return Retry(
            max=self.attempts - 1, interval=[min(self.backoff * 2**n, MAX_BACKOFF) for n in range(self.attempts - 1)]
        )


def no_retry(error: Exception) -> Exception:
    """Mark the running job's failure as permanent (no further attempts): `raise no_retry(Error(...))`."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    return error
