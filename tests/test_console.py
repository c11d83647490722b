"""How lines reach the learner: each one whole and flushed; a burst of them (a creator's batch of
events) in as few writes as whole lines allow, each small enough for a pipe to keep in one piece."""

from __future__ import annotations

import io
import signal
import subprocess
import sys

import pytest

from queuing_system.console import lines_together, say
from queuing_system.processes import ROOT


class Recorder(io.StringIO):
    """A stdout that keeps what each flush sent out."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue()[sum(map(len, self.flushed)) :])


def test_a_line_is_flushed_at_once_and_a_burst_when_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Recorder()
    monkeypatch.setattr("sys.stdout", out)
    say("alone")
    assert out.flushed == ["alone\n"]
    with lines_together():
        say("one")
        with lines_together():  # nested: the outer one writes
            say("two")
        say("three")
        assert out.flushed == ["alone\n"]  # held until the burst ends
    assert out.flushed == ["alone\n", "one\ntwo\nthree\n"]


def test_a_long_burst_goes_out_in_whole_lines_of_at_most_pipe_buf_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Recorder()
    monkeypatch.setattr("sys.stdout", out)
    lines = [f"Notification job {n} completed" for n in range(1000)] + ["é" * 3000]
    with lines_together():
        for line in lines:
            say(line)
    assert "".join(out.flushed) == "".join(f"{line}\n" for line in lines)
    assert len(out.flushed) > 1
    for piece in out.flushed:
        assert piece.endswith("\n")
        assert len(piece.encode()) <= 4096 or piece.count("\n") == 1  # only a line longer than that alone


# A lesson whose Ctrl+C / SIGTERM lands while an object's finalizer runs (on Python 3.12+ the garbage
# collector runs at the very checkpoint where signal handlers do, so this is what happened to
# `5_subscriber.py` retrying on a database that does not exist: a redis-py pool's `__del__`).
SIGNAL_IN_A_FINALIZER = """
import os, signal, time
from queuing_system.console import run_lesson

class SignalsWhileCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIG{name})  # handled inside this call, so inside this finalizer
        sum(range(1000))

def main():
    SignalsWhileCollected()
    time.sleep(10)  # the signal, taken up again, ends this wait
    print("still here: the signal was lost", flush=True)

run_lesson(main, interrupted_exit=0)
"""


# The same in a weakref callback (weakref.finalize, WeakSet): no `__del__` frame to see there.
SIGNAL_IN_A_WEAKREF_CALLBACK = """
import os, signal, time, weakref
from queuing_system.console import run_lesson

class Anything:
    pass

def signals_while_called():
    os.kill(os.getpid(), signal.SIG{name})  # handled inside this call, so inside the callback
    sum(range(1000))

def main():
    thing = Anything()
    weakref.finalize(thing, signals_while_called)
    del thing  # the callback runs now
    time.sleep(10)  # the signal, taken up again, ends this wait
    print("still here: the signal was lost", flush=True)

run_lesson(main, interrupted_exit=0)
"""


@pytest.mark.parametrize("script", [SIGNAL_IN_A_FINALIZER, SIGNAL_IN_A_WEAKREF_CALLBACK], ids=["__del__", "weakref"])
@pytest.mark.parametrize("name", ["TERM", "INT"])
def test_a_signal_that_lands_in_a_finalizer_still_ends_the_lesson_quietly(script: str, name: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", script.format(name=name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert (child.returncode, child.stdout, child.stderr) == (0, "", "")


def test_ctrl_c_while_a_lesson_is_still_importing_prints_no_traceback() -> None:
    # Before run_lesson arms its handlers, a Ctrl+C is Python's own KeyboardInterrupt, uncaught. (Armed
    # here as a terminal's Python has it: started in the background, Python leaves SIGINT ignored.)
    arm_and_interrupt = "signal.signal(signal.SIGINT, signal.default_int_handler); os.kill(os.getpid(), signal.SIGINT)"
    child = subprocess.run(
        [sys.executable, "-c", f"import queuing_system.requirements, os, signal; {arm_and_interrupt}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert (child.returncode, child.stdout, child.stderr) == (-signal.SIGINT, "", "")
