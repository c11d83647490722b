"""On a Python without the project's requirements, one line on how to set up (and exit 2).

A learner who opens a new terminal and forgets `. .venv/bin/activate` runs the lessons
on the machine's Python, which has no redis-py, RQ or Flask: instead of a
ModuleNotFoundError traceback (even for --help), this says what to do. Every lesson
imports it before anything else, and the package imports it, so `python -m
queuing_system.…` says it too. It is the one module that acts when imported: that is
its whole job, and with the requirements in place it only looks them up (and keeps a Ctrl+C
during the imports that follow from printing a traceback).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# What every lesson needs before it can even answer --help.
NEEDED = ("redis", "rq", "flask")
ROOT = Path(__file__).resolve().parent.parent


def missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def how_to_set_up(absent: list[str]) -> str:
    here = Path.cwd().resolve() == ROOT
    venv = ".venv" if here else str(ROOT / ".venv")
    if (ROOT / ".venv" / "bin" / "python").exists():
        step = f"activate the project's virtualenv in this terminal first: . {venv}/bin/activate"
    else:
        where = "" if here else f" in {ROOT}"
        step = f"run `make demo` once{where} (it creates .venv), then . {venv}/bin/activate in each terminal"
    return f"No module {absent[0]!r} in this Python ({sys.executable}): {step}"


def _quiet_interrupt(kind: type[BaseException], value: BaseException, traceback: object) -> None:
    """Ctrl+C while a lesson is still starting (its imports take a moment, before it arms its own
    handlers): no traceback; the process ends by SIGINT as Python ends it."""
    if not issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)  # type: ignore[arg-type]


sys.excepthook = _quiet_interrupt

_absent = missing()
if _absent:
    sys.stderr.write(how_to_set_up(_absent) + os.linesep)
    sys.exit(2)

# RQ checks RQ_KEY_PREFIX when it is first imported, with a ValueError: a bad setting, said in one
# line (exit 2, like every setting) before anything imports RQ, by RQ's own rule.
try:
    import rq.defaults  # noqa: F401
except ValueError as error:
    sys.stderr.write(f"{error}{os.linesep}")
    sys.exit(2)
