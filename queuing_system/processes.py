"""Run a lesson script as a child process and watch what it prints.

The test suite and the tour both need this: start a script with a given
`REDIS_URL`, collect its stdout line by line as it arrives (optionally echoing
each line, labelled, as the tour does), wait for a line or a condition instead
of sleeping, and never leave the child behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class ScriptProcess:
    """A running `python <script> [args]` whose output lines can be awaited."""

    def __init__(
        self,
        script: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.script = script
        self.lines: list[str] = []
        self.stderr = ""
        self._on_line = on_line
        self._changed = threading.Condition()
        # `ScriptProcess("-m", ["pytest", ...])` runs a module instead of a script.
        target = ["-m"] if script == "-m" else [str(ROOT / script)]
        self._process = subprocess.Popen(
            [sys.executable, *target, *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # signals reach it only when we send them
        )
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = raw.rstrip("\n")
            if self._on_line:
                self._on_line(line)
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        self._process.stdout.close()

    def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        self.stderr = self._process.stderr.read()
        self._process.stderr.close()

    def wait_until(self, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        """Wait until `condition()` holds (checked on every new line and every 20 ms)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    waited_for = what or condition
                    raise TimeoutError(f"{self.script}: timed out waiting for {waited_for}; printed {self.lines!r}")
                self._changed.wait(min(left, 0.02))

    def wait_for_line(self, line: str, timeout: float = 20.0, count: int = 1) -> None:
        """Wait until `line` has been printed `count` times."""
        self.wait_until(lambda: self.lines.count(line) >= count, timeout, what=repr(line))

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to end; return its exit code (output fully read)."""
        code = self._process.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def signal(self, signum: int = signal.SIGINT) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it will not go; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the process and everything it started (its session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self.wait(10)

    def __enter__(self) -> ScriptProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process.poll() is None:
            self.kill()
        else:
            self.wait(10)


def run_script(
    script: str, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, list[str], str]:
    """Run a script to completion; return (exit code, stdout lines, stderr)."""
    with ScriptProcess(script, args, env=env) as process:
        code = process.wait(timeout)
        return code, process.lines, process.stderr
