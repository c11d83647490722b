"""Task 100 — seat reservations through a queue: never below zero, never oversold.

Teaches: an API that only enqueues, a worker that does the (atomic) work, state shared in Redis.
Run:     python 100_seat.py [--reset]
         curl localhost:1245/available_seats; curl localhost:1245/reserve_seat; curl localhost:1245/process
Serve:   python 100_seat.py --workers 4  (granian, four processes, each processing the queue after /process)
Prints:  API available on localhost port 1245
         Seat reservation job <id> completed | Seat reservation job <id> failed: <message>
HOST and PORT say where it listens (127.0.0.1, 1245; PORT=0 picks a free port).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from typing import Any, cast

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis
from flask import Flask, jsonify
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Callback, Queue, get_current_job
from rq.exceptions import DuplicateJobError
from rq.job import Job

from queuing_system import events
from queuing_system.console import REDIS_DOWN, arguments, not_connected, run_lesson, say
from queuing_system.counts import StoredCounts, prepare_until_done
from queuing_system.granian_server import prepared
from queuing_system.jobs import JobSettings, job_queue, next_job_id
from queuing_system.keys import AVAILABLE_SEATS, SEAT_QUEUE
from queuing_system.replication import Confirmation
from queuing_system.serving import add_server_options, on_exit, run_server
from queuing_system.settings import connect, url_of
from queuing_system.web import idempotent, json_app, per_thread_client
from queuing_system.worker import BackgroundProcessing, configure_logging

INITIAL_SEATS = 50
TAKE_SEAT_JOB = "100_seat.take_one_seat"
SEAT_JOB_COMPLETED = "100_seat.seat_job_completed"
SEAT_JOB_FAILED = "100_seat.seat_job_failed"

# Take one seat for a job, atomically: however many workers run, seats never go below 0, and a job
# that runs again (its processor died mid-job) does not take a second seat.
# KEYS[1]: available_seats (missing counts as 0)   KEYS[2]: queuing:seat:<job id>, set while the job holds a seat
# Returns the seats left after taking one (or, for a job that already holds its seat, the seats left),
# or -1 when none was left.
TAKE_ONE_SEAT = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return tonumber(redis.call('GET', KEYS[1]) or '0')
end
local seats = tonumber(redis.call('GET', KEYS[1]) or '0')
if seats <= 0 then
  return -1
end
redis.call('SET', KEYS[2], '1', 'EX', 604800)
return redis.call('DECR', KEYS[1])
"""

# Give back the seat of a job that did not complete: a sold seat always has a reservation.
# KEYS[1]: available_seats   KEYS[2]: queuing:seat:<job id>
# Returns 1 if a seat was given back, 0 if the job held none.
GIVE_SEAT_BACK = """
if redis.call('DEL', KEYS[2]) == 1 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCR', KEYS[1])
  return 1
end
return 0
"""


class NoSeatsLeftError(Exception):
    pass


class OutcomeUnknownError(RedisConnectionError):
    """Redis stayed away while a seat job was enqueued: it may or may not be queued."""


# How long an enqueue is repeated until it is known whether the job is queued (seconds).
ENQUEUE_PATIENCE = 5.0


def reserve_seat(client: redis.Redis, number: int) -> None:
    """The curriculum's reserveSeat: set the number of available seats."""
    client.set(AVAILABLE_SEATS, number)


def get_current_available_seats(client: redis.Redis) -> str | None:
    return cast("str | None", client.get(AVAILABLE_SEATS))  # the server's clients decode replies


def reservations_enabled(client: redis.Redis) -> bool:
    """Derived from Redis, so every server process agrees (the original kept a process global)."""
    return int(get_current_available_seats(client) or 0) > 0


# -- the job and what the server prints as each one ends (run by the worker thread) ----------


def seat_key(job_id: str) -> str:
    return f"queuing:seat:{job_id}"


def take_one_seat() -> int:
    job = get_current_job()
    assert job is not None, "run by RQ, as a job"
    seats_left = job.connection.register_script(TAKE_ONE_SEAT)(keys=[AVAILABLE_SEATS, seat_key(job.id)])
    if seats_left < 0:
        raise NoSeatsLeftError("Not enough seats available")
    return seats_left


def seat_job_completed(job: Job, connection: redis.Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    say(f"Seat reservation job {job.id} completed")
    events.on_success(job, connection, result)


def seat_job_failed(job: Job, connection: redis.Redis, exc_type: type, exc_value: BaseException, *args: Any) -> None:
    """A job that ended without its reservation (no seat left, or its processor died mid-job)."""
    connection.register_script(GIVE_SEAT_BACK)(keys=[AVAILABLE_SEATS, seat_key(job.id)])
    say(f"Seat reservation job {job.id} failed: {events.failure_message(exc_type, exc_value)}")
    events.on_failure(job, connection, exc_type, exc_value)


# -- the API ---------------------------------------------------------------------------------

SEATS_LOST = "Seat count lost: available_seats is missing from Redis. Restart the server with --reset to sell 50"


def initialise_seats(client: redis.Redis, reset: bool) -> None:
    """50 seats on first start (or with --reset); a restart keeps what was sold. Waits for Redis."""
    prepare_until_done(lambda: reserve_seat(client, INITIAL_SEATS) if reset else set_first_seats(client))


def set_first_seats(client: redis.Redis) -> None:
    client.set(AVAILABLE_SEATS, INITIAL_SEATS, nx=True)


def enqueue_seat_job(queue: Queue) -> Job:
    """A seat job on `queue`, enqueued at most once: its id comes first (a repeat after a lost reply
    may skip an id, never duplicate a job), then RQ's unique enqueue, one Lua step that checks the
    id, so repeating it after a lost reply or a timeout cannot queue the job twice."""
    job_id = idempotent(lambda: next_job_id(queue.connection))  # failing here, certainly no job
    settings = JobSettings()
    job = queue.create_job(
        TAKE_SEAT_JOB,
        job_id=job_id,
        timeout=settings.timeout,
        result_ttl=settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        on_success=Callback(SEAT_JOB_COMPLETED),
        on_failure=Callback(SEAT_JOB_FAILED),
    )

    replicated = Confirmation.of(queue.connection)

    def put() -> None:
        with contextlib.suppress(DuplicateJobError):  # an earlier copy of this step landed
            queue.enqueue_job(job, unique=True)
        # With a Sentinel group, "in process" only once the job is on the primary and its replicas
        # (there and confirmed, in one round trip); gone means a failover took it back: put it again.
        if replicated.needed() and not replicated.run(queue.connection, lambda on: on.exists(job.key)):
            raise RedisConnectionError(f"seat job {job.id} was taken back by a failover")

    try:
        idempotent(put, patience=ENQUEUE_PATIENCE)  # until it is known whether the job is queued
    except REDIS_DOWN as error:
        raise OutcomeUnknownError(error) from error
    return job


def create_app(
    client: redis.Redis | None = None, *, verbose: bool = False, created_elsewhere: Callable[[], bool] | None = None
) -> Flask:
    """The seat API on `client` (default: a client for REDIS_URL, a connection per request thread).

    The 50 seats are set the first time the app reaches Redis and finds no count (a first start),
    unless `created_elsewhere` says another process does; from then on a missing count is data
    Redis lost, and nothing is sold (queuing_system/counts.py).
    """
    redis_client = client or per_thread_client()
    url = url_of(redis_client)
    # Each request thread enqueues on a connection of its own (RQ reads bytes): a replication check
    # (WAIT) can follow the enqueue on the same connection.
    queue = job_queue(SEAT_QUEUE, per_thread_client(url, decode_responses=False))
    # Only the seat job runs here; its end is printed by the callbacks below, once it is stored.
    processing = BackgroundProcessing(
        SEAT_QUEUE,
        {TAKE_SEAT_JOB: take_one_seat},
        callbacks={SEAT_JOB_COMPLETED: seat_job_completed, SEAT_JOB_FAILED: seat_job_failed},
        url=url,
    )
    on_exit(processing.stop)  # however the server stops, the job in hand is finished; queued ones wait
    configure_logging(verbose)
    app = json_app(__name__)
    app.extensions["seat_processing"] = processing
    seats = StoredCounts(lambda: set_first_seats(redis_client), SEATS_LOST, created_elsewhere)
    seats.reach_at_launch()  # at launch, as the curriculum says; if Redis is away, once it is back

    @app.get("/available_seats")
    def available_seats():
        seats.ensure()
        number = idempotent(lambda: get_current_available_seats(redis_client))
        if number is None:  # never sell again what may have been sold: the count comes back with --reset
            return seats.lost()
        seats.found()
        return jsonify({"numberOfAvailableSeats": number})

    @app.get("/reserve_seat")
    def reserve():
        seats.ensure()
        if not idempotent(lambda: reservations_enabled(redis_client)):
            return jsonify({"status": "Reservation are blocked"})
        try:
            enqueue_seat_job(queue)
        except OutcomeUnknownError:
            raise  # Redis away mid-enqueue: a JSON 503 (and the not-connected line), the job queued or not
        except REDIS_DOWN as error:
            not_connected(error)
            return jsonify({"status": "Reservation failed"})  # no job was created
        return jsonify({"status": "Reservation in process"})

    @app.get("/process")
    def process():
        processing.start()  # once per process; more workers would still be safe (atomic seat taking)
        return jsonify({"status": "Queue processing"})

    return app


def create_served_app() -> Flask:
    """What granian's processes serve: the main process sets the seats (if need be), never they."""
    return create_app(created_elsewhere=prepared)


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", action="store_true", help="start again from 50 available seats")
    add_server_options(parser)


def main(args: argparse.Namespace) -> int:
    # --reset happens once the port is bound (a server that cannot start changes nothing). Granian's
    # processes must not set the seats themselves (one started after Redis lost the count would sell
    # 50 again): the main process does, and they answer 503 until it has. The development server is
    # one process: it sets them when it first reaches Redis, answering 503 until then.
    if args.reset or args.workers:
        return run_server(
            "100_seat:create_served_app",
            lambda: create_app(verbose=args.verbose, created_elsewhere=prepared),
            args,
            prepare=lambda: initialise_seats(connect(), reset=args.reset),
        )
    return run_server("100_seat:create_served_app", lambda: create_app(verbose=args.verbose), args)


if __name__ == "__main__":
    args = arguments(__doc__, options)
    run_lesson(lambda: sys.exit(main(args)), interrupted_exit=0)
