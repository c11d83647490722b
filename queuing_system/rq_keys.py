"""RQ's key names, from RQ itself: its classes and templates honour `RQ_KEY_PREFIX`
(read from the environment when rq is imported), and so does everything built from here.

Kept apart from `keys.py` so that lessons which never touch RQ do not import it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rq.defaults import RQ_KEY_PREFIX
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, ExecutionRegistry
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.worker import BaseWorker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY


@dataclass(frozen=True)
class RqKeys:
    """RQ's key names, from RQ itself (its classes and templates honour `RQ_KEY_PREFIX`).

    The `*_prefix` strings are for the Lua steps: a step that finds a job id inside
    Redis builds that job's keys from the prefixes it was given, never from a literal.
    """

    prefix: str = RQ_KEY_PREFIX
    job_prefix: str = Job.redis_job_namespace_prefix
    queue_prefix: str = Queue.redis_queue_namespace_prefix
    worker_prefix: str = BaseWorker.redis_worker_namespace_prefix
    wip_prefix: str = StartedJobRegistry.key_template.format("")
    finished_prefix: str = FinishedJobRegistry.key_template.format("")
    execution_prefix: str = f"{RQ_KEY_PREFIX}:execution:"  # rq.executions.Execution.key
    executions_prefix: str = ExecutionRegistry.key_template.format("")
    results_prefix: str = Result.get_key("")
    queues: str = Queue.redis_queues_keys  # set of every queue's key
    workers: str = REDIS_WORKER_KEYS  # set of every worker's key

    @staticmethod
    def job(job_id: str) -> str:
        return Job.key_for(job_id)

    def queue(self, name: str) -> str:
        return self.queue_prefix + name

    def worker(self, name: str) -> str:
        return self.worker_prefix + name

    @staticmethod
    def worker_executions(name: str) -> str:
        return WORKER_EXECUTIONS_KEY_TEMPLATE.format(name)

    @staticmethod
    def workers_of(queue: str) -> str:
        return WORKERS_BY_QUEUE_KEY % queue

    @staticmethod
    def scheduler_lock(queue: str) -> str:
        return SCHEDULER_LOCKING_KEY_TEMPLATE % queue

    @staticmethod
    def wip(queue: str) -> str:
        return StartedJobRegistry.key_template.format(queue)

    @staticmethod
    def scheduled(queue: str) -> str:
        return ScheduledJobRegistry.key_template.format(queue)

    @staticmethod
    def deferred(queue: str) -> str:
        return DeferredJobRegistry.key_template.format(queue)

    @staticmethod
    def finished(queue: str) -> str:
        return FinishedJobRegistry.key_template.format(queue)

    @staticmethod
    def failed(queue: str) -> str:
        return FailedJobRegistry.key_template.format(queue)


RQ = RqKeys()
