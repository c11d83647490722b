"""Small HTTP helpers for tests that talk to a real server process."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any


def request(port: int, path: str, method: str = "GET", timeout: float = 10.0) -> tuple[int, str, Any]:
    """(status, content type, parsed JSON body) of one request on its own connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        return response.status, response.getheader("Content-Type", ""), json.loads(body) if body else None
    finally:
        connection.close()


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
