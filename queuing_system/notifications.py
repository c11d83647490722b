"""The notification job's data, checked the same way by creators and processors."""

from __future__ import annotations

from typing import Any

FIELDS = ("phoneNumber", "message")


class JobDataError(ValueError):
    """A notification job's data is not `{"phoneNumber": str, "message": str}`."""


def validate_notification(data: Any) -> tuple[str, str]:
    """Return (phone number, message) or raise JobDataError saying what is wrong, in one line."""
    if not isinstance(data, dict):
        raise JobDataError(f"Invalid job data: expected an object with phoneNumber and message, got {data!r}")
    missing = [name for name in FIELDS if name not in data]
    if missing:
        raise JobDataError(f"Invalid job data: missing {', '.join(missing)}")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        raise JobDataError(f"Invalid job data: unexpected field {', '.join(map(str, extra))}")
    for name in FIELDS:
        if not isinstance(data[name], str) or not data[name].strip():
            raise JobDataError(f"Invalid job data: {name} must be a non-empty string, got {data[name]!r}")
    return data["phoneNumber"], data["message"]
