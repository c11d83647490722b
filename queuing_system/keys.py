"""Every Redis key, channel and queue name the port uses, in one place.

RQ's own keys (jobs, queues, registries, workers) are not spelled anywhere in the
port: `rq_keys.RQ` takes them from RQ's classes and templates, so RQ's
`RQ_KEY_PREFIX` moves every one of them. The processor's own keys (`queuing:…`)
are at the bottom of this module.
"""

from __future__ import annotations

# Tasks 1, 2 and 4 (the curriculum's own keys).
SCHOOL_HASH = "HolbertonSchools"

# Task 5.
SCHOOL_CHANNEL = "holberton school channel"
KILL_MESSAGE = "KILL_SERVER"

# Tasks 6, 7, 8 and 100: queues.
QUEUE_6 = "push_notification_code"
QUEUE_7 = "push_notification_code_2"
QUEUE_8 = "push_notification_code_3"
SEAT_QUEUE = "reserve_seat"

# Kue-style job ids and events (shared by every queue, like Kue's `q:ids`).
JOB_ID_COUNTER = "queuing:job_id"
JOB_EVENTS_CHANNEL = "queuing:job_events"
# hash: the ids each chunk of one creator run reserved (so a repeated reservation reserves nothing new)
JOB_CREATION_RECORD = "queuing:creation:{token}"

# Task 9: reserved units of product <id>; its reservations (id -> pending | confirmed); the pending ones' deadlines.
STOCK_RESERVED = "item.{item_id}"
STOCK_RECORDS = "item.{item_id}.reservations"
STOCK_PENDING = "item.{item_id}.pending"

# Task 100.
AVAILABLE_SEATS = "available_seats"

# The functions RQ runs for each queue's jobs (dotted paths the processors import).
PROCESS_6 = "6_job_processor.process_job"
PROCESS_7 = "7_job_processor.process_job"

# The processor's own keys (see processor_lua.py):
CLAIMERS = "queuing:claimers"  # set: workers that may hold claims (looked at by the recovery sweep)
CLAIMED_PREFIX = "queuing:claimed:"  # + worker: list of jobs it took from their queues and has not started
RUNNING_PREFIX = "queuing:running:"  # + worker: "<job id>:<execution id>" of the job it runs now
SWEEPING_PREFIX = "queuing:sweeping:"  # + "<job>:<execution>": which sweeper ends that abandoned job


def claimed_key(worker: str) -> str:
    return CLAIMED_PREFIX + worker


def running_key(worker: str) -> str:
    return RUNNING_PREFIX + worker


def sweeping_key(execution_ref: str) -> str:
    return SWEEPING_PREFIX + execution_ref
