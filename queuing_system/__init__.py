"""Shared pieces of the Queuing System port: settings, keys, console, embedded Redis, job events."""

from queuing_system import requirements as _requirements  # noqa: F401 - one line, not a traceback, when they are missing
