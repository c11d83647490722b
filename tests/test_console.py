"""How lines reach the learner: each one whole and flushed; a burst of them (a creator's batch of
events) in as few writes as whole lines allow, each small enough for a pipe to keep in one piece."""

from __future__ import annotations

import io

import pytest

from queuing_system.console import lines_together, say


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
