"""Tasks 0, 1, 2 and 4, each run as the learner runs it, output asserted line for line."""

import os
import subprocess
import sys

import pytest

from queuing_system.processes import ROOT, run_script

CONNECTED = "Redis client connected to the server"


def test_0_connects(redis_url: str) -> None:
    assert run_script("0_redis_client.py") == (0, [CONNECTED], "")


@pytest.mark.parametrize("script", ["1_redis_op.py", "2_redis_op_async.py"])
def test_1_and_2_after_task_0_seed(script: str, r) -> None:
    r.set("Holberton", "School")  # the curriculum's step before task 1
    assert run_script(script) == (0, [CONNECTED, "School", "Reply: OK", "100"], "")
    assert r.get("HolbertonSanFrancisco") == "100"


@pytest.mark.parametrize("script", ["1_redis_op.py", "2_redis_op_async.py"])
def test_1_and_2_on_an_empty_server_print_none(script: str, r) -> None:
    assert run_script(script) == (0, [CONNECTED, "None", "Reply: OK", "100"], "")


def test_4_hash_twice(r) -> None:
    mapping = "{'Portland': '50', 'Seattle': '80', 'New York': '20', 'Bogota': '20', 'Cali': '40', 'Paris': '2'}"
    assert run_script("4_redis_advanced_op.py") == (0, [CONNECTED, *["Reply: 1"] * 6, mapping], "")
    assert run_script("4_redis_advanced_op.py") == (0, [CONNECTED, *["Reply: 0"] * 6, mapping], "")
    assert r.hgetall("HolbertonSchools") == {
        "Portland": "50",
        "Seattle": "80",
        "New York": "20",
        "Bogota": "20",
        "Cali": "40",
        "Paris": "2",
    }


@pytest.mark.parametrize(
    "script",
    [
        "0_redis_client.py",
        "1_redis_op.py",
        "2_redis_op_async.py",
        "4_redis_advanced_op.py",
        "5_publisher.py",
        "6_job_creator.py",
        "7_job_creator.py",
    ],
)
def test_redis_down_is_one_line_and_exit_1(script: str, closed_url: str) -> None:
    code, lines, stderr = run_script(script, env={"REDIS_URL": closed_url})
    assert code == 1
    assert len(lines) == 1
    assert lines[0].startswith("Redis client not connected to the server: Error 111 connecting to 127.0.0.1:")
    assert "Traceback" not in stderr


@pytest.mark.parametrize("script", ["0_redis_client.py", "1_redis_op.py", "4_redis_advanced_op.py"])
def test_output_whose_reader_has_gone_ends_quietly(script: str, redis_url: str) -> None:
    # `python 4_redis_advanced_op.py | head -1`, with the reader gone before the first line.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        child = subprocess.run(
            [sys.executable, script], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=20
        )
    finally:
        os.close(write_end)
    assert (child.returncode, child.stderr) == (1, "")
