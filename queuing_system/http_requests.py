"""Small HTTP helpers for talking to a real server process (tests, tour, benchmarks)."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any


def request_raw(port: int, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, str, str]:
    """(status, content type, body text) of one request on its own connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def request(port: int, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, str, Any]:
    """(status, content type, parsed JSON body) of one request on its own connection."""
    status, content_type, body = request_raw(port, path, method, timeout)
    return status, content_type, json.loads(body) if body else None


def wait_until_serving(port: int, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request(port, path, timeout=1.0)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
