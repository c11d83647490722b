"""Task 100: seat reservations through an RQ queue — never below zero, never oversold."""

import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module

import pytest
import redis

from queuing_system.embedded import free_port
from queuing_system.http_requests import request
from queuing_system.processes import ScriptProcess
from tests.redis_faults import killing_connections, stalled

seat = import_module("100_seat")

IN_PROCESS = {"status": "Reservation in process"}
BLOCKED = {"status": "Reservation are blocked"}
FAILED_LINE = "failed: Not enough seats available"


def seat_server(*args: str, env: dict | None = None) -> tuple[ScriptProcess, int]:
    port = free_port()
    server = ScriptProcess("100_seat.py", args, env={"PORT": str(port), **(env or {})})
    server.wait_for_line(f"API available on localhost port {port}")
    return server, port


def ended(server: ScriptProcess) -> list[str]:
    return [line for line in server.lines if line.startswith("Seat reservation job ")]


def test_the_curriculum_sequence(redis_url, r) -> None:
    server, port = seat_server()
    with server:
        assert request(port, "/available_seats") == (200, "application/json", {"numberOfAvailableSeats": "50"})
        assert [request(port, "/reserve_seat")[2] for _ in range(3)] == [IN_PROCESS] * 3
        assert request(port, "/process")[2] == {"status": "Queue processing"}
        server.wait_until(lambda: len(ended(server)) == 3, what="three jobs to end")
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "47"}
        server.signal(signal.SIGINT)
        assert server.wait() == 0
    assert server.lines == [
        f"API available on localhost port {port}",
        "Seat reservation job 1 completed",
        "Seat reservation job 2 completed",
        "Seat reservation job 3 completed",
    ]
    assert server.stderr == ""


def test_draining_the_seats(redis_url, r) -> None:
    server, port = seat_server()
    with server:
        assert [request(port, "/reserve_seat")[2] for _ in range(60)] == [IN_PROCESS] * 60
        request(port, "/process")
        server.wait_until(lambda: len(ended(server)) == 60, what="sixty jobs to end")
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "0"}
        assert request(port, "/reserve_seat")[2] == BLOCKED
        server.stop()
    lines = ended(server)
    assert lines[:50] == [f"Seat reservation job {n} completed" for n in range(1, 51)]
    assert lines[50:] == [f"Seat reservation job {n} {FAILED_LINE}" for n in range(51, 61)]
    assert r.get("available_seats") == "0"
    assert server.stderr == ""  # the failed jobs' tracebacks are RQ's log: only with --verbose


def test_200_concurrent_reservations_two_servers_many_process_calls(redis_url, r) -> None:
    first, first_port = seat_server()
    second, second_port = seat_server()
    samples: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            samples.append(int(r.get("available_seats")))

    sampler = threading.Thread(target=sample)
    with first, second:
        sampler.start()
        go = threading.Barrier(210)

        def hit(n: int) -> dict:
            port = first_port if n % 2 else second_port
            go.wait()
            path = "/process" if n >= 200 else "/reserve_seat"  # /process 5 times on each, amid the rush
            return request(port, path)[2]

        with ThreadPoolExecutor(max_workers=210) as pool:
            answers = list(pool.map(hit, range(210)))
        accepted = answers[:200].count(IN_PROCESS)
        assert accepted + answers[:200].count(BLOCKED) == 200
        assert answers[200:] == [{"status": "Queue processing"}] * 10
        everyone = lambda: len(ended(first)) + len(ended(second)) == accepted  # noqa: E731
        first.wait_until(everyone, what="every accepted job to end")
        sampling.set()
        sampler.join()
        assert request(first_port, "/reserve_seat")[2] == BLOCKED  # both processes agree: sold out
        assert request(second_port, "/reserve_seat")[2] == BLOCKED
        first.stop()
        second.stop()
    lines = ended(first) + ended(second)
    assert sum(line.endswith(" completed") for line in lines) == 50
    assert sum(line.endswith(FAILED_LINE) for line in lines) == accepted - 50
    assert min(samples) >= 0 and len(samples) > 10  # never below zero, at any sample
    assert r.get("available_seats") == "0"


def test_a_restart_keeps_what_was_sold_and_queued_jobs_wait_for_the_next_start(redis_url, r) -> None:
    server, port = seat_server()
    with server:
        for _ in range(2):
            request(port, "/reserve_seat")
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    assert r.llen("rq:queue:reserve_seat") == 2  # not processed, not lost

    server, port = seat_server()
    with server:
        request(port, "/process")
        server.wait_until(lambda: len(ended(server)) == 2, what="the two queued jobs")
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "48"}
        server.stop()

    server, port = seat_server()
    with server:
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "48"}
        server.stop()

    server, port = seat_server("--reset")
    with server:
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "50"}
        server.stop()


@pytest.mark.parametrize(
    ("method", "path", "status", "answer"),
    [
        ("POST", "/reserve_seat", 405, {"status": "Method Not Allowed"}),
        ("DELETE", "/available_seats", 405, {"status": "Method Not Allowed"}),
        ("GET", "/reserve_seat/1", 404, {"status": "Not Found"}),
        ("GET", "/seats", 404, {"status": "Not Found"}),
    ],
)
def test_unknown_routes_and_methods_answer_json(r, method, path, status, answer) -> None:
    client = seat.create_app(r).test_client()
    response = client.open(path, method=method)
    assert (response.status_code, response.content_type, response.get_json()) == (status, "application/json", answer)


def test_redis_down_is_a_json_503_and_the_server_recovers(own_redis) -> None:
    server, port = seat_server(env={"REDIS_URL": own_redis.url})
    with server:
        own_redis.kill()
        assert request(port, "/available_seats")[:2] == (503, "application/json")
        assert request(port, "/reserve_seat")[0] == 503
        own_redis.start()  # an empty, new Redis: what was sold is not known any more
        for _ in range(2):
            assert request(port, "/available_seats") == (503, "application/json", {"status": seat.SEATS_LOST})
        assert request(port, "/reserve_seat")[2] == BLOCKED  # never resold
        server.stop()
    assert all(line.startswith("Redis client not connected to the server: ") for line in server.lines[1:3])
    assert server.lines[3:] == [seat.SEATS_LOST]  # said once
    assert "Traceback" not in server.stderr

    server, port = seat_server("--reset", env={"REDIS_URL": own_redis.url})  # what the message says to do
    with server:
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "50"}
        server.stop()


@pytest.mark.slow
def test_killed_connections_and_a_stall_enqueue_each_seat_job_once(own_redis) -> None:
    """Issue 19: CLIENT KILL TYPE normal every 2 ms, then a 4.5 s stall (longer than the 3 s socket
    timeout), under a steady load of reservations: an enqueue whose reply was lost is sent again,
    and the first copy ran — both would queue the job, unless the enqueue checks the job's id."""
    server, port = seat_server(env={"REDIS_URL": own_redis.url})
    stop = threading.Event()
    answers: list[dict] = []

    def keep_reserving() -> None:
        while not stop.is_set():
            answers.append(request(port, "/reserve_seat", timeout=60)[2])

    with server:
        clients = [threading.Thread(target=keep_reserving) for _ in range(16)]
        for client in clients:
            client.start()
        server.wait_until(lambda: len(answers) >= 50, what="the load to be under way")
        with killing_connections(own_redis.url) as killed:
            server.wait_until(lambda: len(answers) >= 400, what="400 reservations under the kills", timeout=60)
        with stalled(own_redis.url):
            pass
        stop.set()
        for client in clients:
            client.join(60)
        r = redis.Redis.from_url(own_redis.url, decode_responses=True)
        queued = r.lrange("rq:queue:reserve_seat", 0, -1)
        request(port, "/process")
        server.wait_until(lambda: len(ended(server)) == len(queued), what="every queued job to end", timeout=60)
        server.stop()
    assert killed[0] > 0
    in_process, failed = answers.count(IN_PROCESS), answers.count({"status": "Reservation failed"})
    unknown = answers.count({"status": "Redis unavailable, try again shortly"})  # Redis away: queued or not
    assert in_process + failed + unknown == len(answers)
    assert len(queued) == len(set(queued))  # no job queued twice
    assert in_process <= len(queued) <= in_process + unknown  # every job said queued is, none said failed is
    assert len(ended(server)) == len(set(ended(server))) == len(queued)  # each job ended once
    assert sum(line.endswith(" completed") for line in ended(server)) == 50
    assert "Traceback" not in server.stderr
