"""The tour is the project's front door: run it so it cannot rot."""

from queuing_system.embedded import find_redis_server, server_version
from queuing_system.processes import run_script


def test_tour_runs_every_task_and_passes(tmp_path) -> None:
    # A temp dir of its own: other test runs on this machine make and remove theirs in /tmp meanwhile.
    code, lines, stderr = run_script("tour.py", env={"TMPDIR": str(tmp_path)}, timeout=120)
    assert code == 0, "\n".join(lines) + stderr
    version = server_version(find_redis_server())  # which server, said up front
    assert f" ({version}; yours is not touched)" in next(line for line in lines if line.startswith("Embedded Redis"))
    summary = lines[lines.index("Summary") + 2 :]
    assert [row.split()[0] for row in summary] == ["0", "1", "2", "4", "5", "6", "7", "8", "9", "100"]
    assert all(" pass " in row for row in summary)
    assert list(tmp_path.glob("queuing-redis-*")) == []  # its Redis dir is gone


def test_tour_runs_one_task_and_rejects_unknown_ones() -> None:
    code, lines, _ = run_script("tour.py", ["4"])
    assert code == 0
    assert [line for line in lines if line.startswith("Task ")] == [
        "Task 4 · 4_redis_advanced_op.py — a hash: HSET field by field, HGETALL"
    ]
    code, _, stderr = run_script("tour.py", ["3"])
    assert code == 2
    assert "unknown task 3" in stderr


def test_tour_with_a_server_that_does_not_exist_says_so_in_one_line() -> None:
    code, lines, stderr = run_script("tour.py", ["0"], env={"QUEUING_REDIS_SERVER": "/no/such/redis-server"})
    assert (code, lines) == (2, [])
    assert stderr == (
        "QUEUING_REDIS_SERVER='/no/such/redis-server': no such program (a path, a command on PATH, or bundled)\n"
    )
