"""The tour: every task of the curriculum, end to end, on a private Redis.

Run:  make demo               (or: python tour.py [TASK ...], e.g. python tour.py 5 7)

It starts its own embedded Redis (never yours: the lessons write fixed keys),
runs each task's scenario the way a learner would in separate terminals, shows
what every process prints, checks it against what the curriculum says each task
prints (the expected lines are spelled out below, next to each scenario), and ends
with a summary.
The exit code is non-zero, naming the task and the line, if anything differed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module

import queuing_system.requirements  # noqa: F401 - before redis, rq, flask: one line on how to set up if missing

# isort: split

import redis

from queuing_system.console import sigterm_as_interrupt
from queuing_system.embedded import EmbeddedRedis, EmbeddedRedisError, free_port, server_version
from queuing_system.http_requests import request_raw
from queuing_system.keys import SCHOOL_CHANNEL
from queuing_system.processes import ScriptProcess
from queuing_system.settings import ConfigError

JOBS_7 = import_module("7_job_creator").JOBS
BLACKLISTED_7 = import_module("7_job_processor").BLACKLISTED_NUMBERS

CONNECTED = "Redis client connected to the server"
STOCK_LIST = (
    '[{"itemId":1,"itemName":"Suitcase 250","price":50,"initialAvailableQuantity":4},'
    '{"itemId":2,"itemName":"Suitcase 450","price":100,"initialAvailableQuantity":10},'
    '{"itemId":3,"itemName":"Suitcase 650","price":350,"initialAvailableQuantity":2},'
    '{"itemId":4,"itemName":"Suitcase 1050","price":550,"initialAvailableQuantity":5}]'
)
SCHOOLS = "{'Portland': '50', 'Seattle': '80', 'New York': '20', 'Bogota': '20', 'Cali': '40', 'Paris': '2'}"


class Mismatch(Exception):
    """What a scenario printed is not what the curriculum says it prints."""


@dataclass
class Outcome:
    task: str
    checked: str
    passed: bool
    seconds: float
    detail: str = ""


class Screen:
    """Prints the tour; bold headings only on a terminal, safe from several reader threads."""

    def __init__(self) -> None:
        self.quiet_labels: set[str] = set()  # processes whose lines are kept but not shown
        self._lock = threading.Lock()
        self._bold = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None

    def line(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)

    def heading(self, text: str) -> None:
        self.line()
        self.line(f"\033[1m{text}\033[0m" if self._bold else text)

    def labelled(self, label: str) -> Callable[[str], None]:
        def show(text: str) -> None:
            if label not in self.quiet_labels:
                self.line(f"    [{label}] {text}" if label else f"    {text}")

        return show


class Tour:
    """What every scenario needs: the private Redis, a screen, and ways to run and check scripts."""

    def __init__(self, server: EmbeddedRedis, screen: Screen) -> None:
        self.url = server.url
        self.screen = screen
        self.redis = redis.Redis.from_url(server.url, decode_responses=True)
        self.env = {"REDIS_URL": server.url}

    def start(self, script: str, *args: str, label: str = "", env: dict[str, str] | None = None) -> ScriptProcess:
        shown = " ".join(f"{k}={v}" for k, v in (env or {}).items())
        command = f"{shown} python {script} {' '.join(args)}".strip()
        self.screen.line(f"  $ {command}" + (f"   [{label}]" if label else ""))
        return ScriptProcess(script, args, env={**self.env, **(env or {})}, on_line=self.screen.labelled(label))

    def run(self, script: str, *args: str, timeout: float = 30.0) -> list[str]:
        with self.start(script, *args) as process:
            code = process.wait(timeout)
        if code != 0:
            raise Mismatch(f"{script} exited {code}: {process.stderr.strip()[-300:]}")
        return process.lines

    @staticmethod
    def expect(what: str, actual: Sequence[str], expected: Sequence[str]) -> None:
        for number, (got, want) in enumerate(zip(actual, expected, strict=False), start=1):
            if got != want:
                raise Mismatch(f"{what}, line {number}: expected {want!r}, got {got!r}")
        if len(actual) != len(expected):
            raise Mismatch(f"{what}: expected {len(expected)} lines, got {len(actual)}: {list(actual)!r}")


# -- the scenarios, in curriculum order -------------------------------------------------


def task_0(tour: Tour) -> str:
    tour.expect("0_redis_client.py", tour.run("0_redis_client.py"), [CONNECTED])
    return "connected line"


def task_1(tour: Tour) -> str:
    tour.screen.line("  $ python -m queuing_system.redis_cli SET Holberton School     (task 0's step)")
    tour.redis.set("Holberton", "School")
    tour.expect("1_redis_op.py", tour.run("1_redis_op.py"), [CONNECTED, "School", "Reply: OK", "100"])
    return "GET, SET, GET lines"


def task_2(tour: Tour) -> str:
    tour.expect("2_redis_op_async.py", tour.run("2_redis_op_async.py"), [CONNECTED, "School", "Reply: OK", "100"])
    return "same lines with async/await"


def task_4(tour: Tour) -> str:
    expected = [CONNECTED, *["Reply: 1"] * 6, SCHOOLS]
    tour.expect("4_redis_advanced_op.py", tour.run("4_redis_advanced_op.py"), expected)
    return "6 HSET replies and the mapping"


def task_5(tour: Tour) -> str:
    with tour.start("5_subscriber.py", label="subscriber") as subscriber:
        subscriber.wait_until(
            lambda: dict(tour.redis.pubsub_numsub(SCHOOL_CHANNEL)).get(SCHOOL_CHANNEL) == 1, what="subscription"
        )
        with tour.start("5_publisher.py", label="publisher") as publisher:
            publisher.wait(10)
            subscriber.wait(10)
    tour.expect(
        "5_subscriber.py",
        subscriber.lines,
        [CONNECTED, "Holberton Student #1 starts course", "Holberton Student #2 starts course", "KILL_SERVER"],
    )
    tour.expect(
        "5_publisher.py",
        publisher.lines,
        [CONNECTED]
        + [
            f"About to send {m}"
            for m in (
                "Holberton Student #1 starts course",
                "Holberton Student #2 starts course",
                "KILL_SERVER",
                "Holberton Student #3 starts course",
            )
        ],
    )
    return "subscriber stops at KILL_SERVER"


def task_6(tour: Tour) -> str:
    with tour.start("6_job_creator.py", label="creator") as creator:
        creator.wait_for_line("Notification job created: 1")
        with tour.start("6_job_processor.py", label="processor") as processor:
            creator.wait(20)
            processor.wait_until(lambda: len(processor.lines) == 1, what="the Sending line")
            tour.screen.line("  (Ctrl+C to the processor: it finishes the job in hand and exits 0)")
            processor.signal(signal.SIGINT)
            code = processor.wait(20)
    tour.expect("6_job_creator.py", creator.lines, ["Notification job created: 1", "Notification job completed"])
    tour.expect(
        "6_job_processor.py",
        processor.lines,
        ["Sending notification to 4153518743, with message: This is the code 4321 to verify your account"],
    )
    if code != 0:
        raise Mismatch(f"6_job_processor.py exited {code} on Ctrl+C")
    return "created, sent, completed; clean stop"


def expected_7_lines(first_id: int) -> dict[str, list[str]]:
    """Task 7's creator lines per job id (jobs interleave: two run at a time)."""
    expected = {}
    for offset, data in enumerate(JOBS_7):
        job_id, phone = str(first_id + offset), data["phoneNumber"]
        lines = [f"Notification job created: {job_id}", f"Notification job {job_id} 0% complete"]
        if phone in BLACKLISTED_7:
            lines.append(f"Notification job {job_id} failed: Phone number {phone} is blacklisted")
        else:
            lines += [f"Notification job {job_id} 50% complete", f"Notification job {job_id} completed"]
        expected[job_id] = lines
    return expected


def task_7(tour: Tour) -> str:
    tour.screen.line("  (NOTIFICATION_SEND_MS=100: each send takes 100 ms, so two at a time shows)")
    with tour.start("7_job_processor.py", label="processor", env={"NOTIFICATION_SEND_MS": "100"}) as processor:
        with tour.start("7_job_creator.py", label="creator") as creator:
            creator.wait(30)
        processor.wait_until(lambda: len(processor.lines) == 9, what="nine Sending lines")
        processor.signal(signal.SIGINT)
        processor.wait(20)
    first_id = int(creator.lines[0].rsplit(" ", 1)[-1])
    by_job: dict[str, list[str]] = {}
    for line in creator.lines:
        words = line.split()
        job_id = words[-1] if line.startswith("Notification job created") else words[2].rstrip(":")
        by_job.setdefault(job_id, []).append(line)
    expected = expected_7_lines(first_id)
    for job_id, lines in expected.items():
        tour.expect(f"7_job_creator.py job {job_id}", by_job.get(job_id, []), lines)
    sent = sorted(processor.lines)
    want = sorted(
        f"Sending notification to {d['phoneNumber']}, with message: {d['message']}"
        for d in JOBS_7
        if d["phoneNumber"] not in BLACKLISTED_7
    )
    tour.expect("7_job_processor.py (sorted)", sent, want)
    return "11 jobs: 9 completed, 2 blacklisted"


def task_8(tour: Tour) -> str:
    tour.screen.line("  (-s shows what the function prints, as mocha did: pytest hides it otherwise)")
    with tour.start("-m", "pytest", "tests/test_8_job.py", "-s", "-q", "-p", "no:cacheprovider") as tests:
        code = tests.wait(60)
    summary = tests.lines[-1] if tests.lines else ""
    if "Notification job created: 1" not in " ".join(tests.lines):
        raise Mismatch("tests/test_8_job.py -s: the created lines were not shown")
    if code != 0 or " passed" not in summary or "failed" in summary:
        raise Mismatch(f"tests/test_8_job.py: {summary or 'no summary'} (exit {code})")
    return summary.split(" in ")[0] + " (fakeredis)"


def curl(tour: Tour, port: int, path: str, expected: str | None = None, show: bool = True) -> str:
    """GET `path` like `curl localhost:<port><path>`, show the answer, check it if `expected`."""
    status, _, body = request_raw(port, path)
    if show:
        tour.screen.line(f"  $ curl localhost:{port}{path}")
        tour.screen.line(f"    {body}")
    if status != 200 or (expected is not None and body != expected):
        raise Mismatch(f"GET {path}: expected {expected!r}, got HTTP {status} {body!r}")
    return body


def task_9(tour: Tour) -> str:
    port = free_port()
    with tour.start("9_stock.py", label="server", env={"PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        product = '{"itemId":1,"itemName":"Suitcase 250","price":50,"initialAvailableQuantity":4'
        curl(tour, port, "/list_products", STOCK_LIST)
        curl(tour, port, "/list_products/1", product + ',"currentQuantity":4}')
        curl(tour, port, "/list_products/12", '{"status":"Product not found"}')
        for _ in range(4):
            curl(tour, port, "/reserve_product/1", '{"status":"Reservation confirmed","itemId":1}')
        curl(tour, port, "/reserve_product/1", '{"status":"Not enough stock available","itemId":1}')
        curl(tour, port, "/list_products/1", product + ',"currentQuantity":0}')
        server.signal(signal.SIGINT)
        server.wait(20)
    tour.expect("9_stock.py", server.lines, [f"API available on localhost port {port}"])
    return "bodies; 4 of 4 units, no more"


def task_100(tour: Tour) -> str:
    port = free_port()
    with tour.start("100_seat.py", label="server", env={"PORT": str(port)}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        curl(tour, port, "/available_seats", '{"numberOfAvailableSeats":"50"}')
        for _ in range(3):
            curl(tour, port, "/reserve_seat", '{"status":"Reservation in process"}')
        curl(tour, port, "/process", '{"status":"Queue processing"}')
        server.wait_until(lambda: len(server.lines) == 4, what="three jobs to end")
        curl(tour, port, "/available_seats", '{"numberOfAvailableSeats":"47"}')
        tour.screen.line("  (47 more reservations drain the seats; their job lines are not shown)")
        server_lines_before = len(server.lines)
        tour.screen.quiet_labels.add("server")
        for _ in range(47):
            curl(tour, port, "/reserve_seat", '{"status":"Reservation in process"}', show=False)
        server.wait_until(lambda: len(server.lines) == server_lines_before + 47, what="47 more jobs to end")
        tour.screen.quiet_labels.discard("server")
        curl(tour, port, "/available_seats", '{"numberOfAvailableSeats":"0"}')
        curl(tour, port, "/reserve_seat", '{"status":"Reservation are blocked"}')
        server.signal(signal.SIGINT)
        server.wait(20)
    job_ids = [line.split()[3] for line in server.lines[1:]]
    tour.expect(
        "100_seat.py",
        server.lines,
        [f"API available on localhost port {port}"] + [f"Seat reservation job {i} completed" for i in job_ids],
    )
    if len(job_ids) != 50:
        raise Mismatch(f"100_seat.py: {len(job_ids)} jobs completed, expected 50")
    return "50 seats sold, then blocked"


@dataclass
class Task:
    key: str
    title: str
    teaches: str
    scenario: Callable[[Tour], str]


TASKS = [
    Task("0", "0_redis_client.py", "connect to Redis", task_0),
    Task("1", "1_redis_op.py", "SET and GET a string", task_1),
    Task("2", "2_redis_op_async.py", "the same with async/await", task_2),
    Task("4", "4_redis_advanced_op.py", "a hash: HSET field by field, HGETALL", task_4),
    Task("5", "5_subscriber.py + 5_publisher.py", "pub/sub: messages reach whoever is subscribed", task_5),
    Task("6", "6_job_creator.py + 6_job_processor.py", "a job queue: create a job, process it", task_6),
    Task("7", "7_job_creator.py + 7_job_processor.py", "progress, failures, two jobs at a time", task_7),
    Task("8", "8_job.py + tests/test_8_job.py", "job creation under test (Kue's test mode)", task_8),
    Task("9", "9_stock.py", "an HTTP API on Redis: atomic stock reservations", task_9),
    Task("100", "100_seat.py", "reservations through a queue, processed in the background", task_100),
]


def run_tour(keys: Sequence[str], screen: Screen) -> list[Outcome]:
    chosen = [task for task in TASKS if not keys or task.key in keys]
    outcomes = []
    with EmbeddedRedis() as server:
        version = server_version(server.binary)
        screen.line(f"Embedded Redis for this tour at {server.url} ({version}; yours is not touched)")
        tour = Tour(server, screen)
        for task in chosen:
            screen.heading(f"Task {task.key} · {task.title} — {task.teaches}")
            started = time.monotonic()
            try:
                checked = task.scenario(tour)
                outcomes.append(Outcome(task.key, checked, True, time.monotonic() - started))
            except (Mismatch, TimeoutError) as problem:
                outcomes.append(Outcome(task.key, "see below", False, time.monotonic() - started, str(problem)))
                screen.line(f"  !! {problem}")
        tour.redis.close()
    return outcomes


def print_summary(outcomes: Sequence[Outcome], screen: Screen) -> None:
    screen.heading("Summary")
    screen.line(f"  {'task':<6}{'checked':<42}{'result':<8}seconds")
    for outcome in outcomes:
        result = "pass" if outcome.passed else "FAIL"
        screen.line(f"  {outcome.task:<6}{outcome.checked:<42}{result:<8}{outcome.seconds:.1f}")
    for outcome in outcomes:
        if not outcome.passed:
            screen.line(f"  task {outcome.task} differed: {outcome.detail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="*", help="task numbers to run (default: all)")
    args = parser.parse_args(argv)
    known = {task.key for task in TASKS}
    unknown = [key for key in args.tasks if key not in known]
    if unknown:
        parser.error(f"unknown task {', '.join(unknown)}; choose from {', '.join(sorted(known, key=int))}")
    sigterm_as_interrupt()  # Ctrl+C or SIGTERM: every child and the embedded Redis are stopped on the way out
    screen = Screen()
    outcomes = run_tour(args.tasks, screen)
    print_summary(outcomes, screen)
    return 0 if all(outcome.passed for outcome in outcomes) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Every child and the embedded Redis were stopped by their `with` blocks on the way out.
        print("\nTour interrupted.", file=sys.stderr)
        sys.exit(130)
    except ConfigError as error:  # QUEUING_REDIS_SERVER names no program
        print(error, file=sys.stderr)
        sys.exit(2)
    except EmbeddedRedisError as error:
        print(f"Cannot start the tour's Redis: {error}", file=sys.stderr)
        sys.exit(1)
