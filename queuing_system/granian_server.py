"""`--workers N`: the same app on granian, N processes sharing the port, a dead one replaced.

What must happen once before requests are served (`prepare`: the counts created, or reset) runs in
the main process, in the background: while Redis is away the workers already answer (JSON 503s,
as the development server does) and ask `prepared()` until it is done.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from queuing_system.dev_server import HEADER_TIMEOUT
from queuing_system.processes import ROOT

# The file the main process creates once `prepare` is done (its path travels to the workers in the
# environment: granian starts them as fresh interpreters).
PREPARED_ENV = "QUEUING_SERVER_PREPARED_FILE"
# How long the banner waits for `prepare` before it is printed all the same (seconds).
PREPARE_GRACE = 2.0
# Seconds a stopping worker gets to finish before granian kills it: the longest a stop takes.
STOP_TIMEOUT = 5


def prepared() -> bool:
    """In a granian worker: whether the main process has done `prepare` (always, without one)."""
    path = os.environ.get(PREPARED_ENV)
    return path is None or os.path.exists(path)


class GranianBindError(Exception):
    """Granian could not bind the port (its message, first line only)."""


def serve_granian(
    target: str,
    host: str,
    port: int,
    workers: int,
    threads: int,
    prepare: Callable[[], None] | None,
    listening: Callable[[int], None],
    verbose: bool,
) -> int:
    """`target` ("module:factory") on granian: `workers` processes, each `threads` request threads;
    a worker that dies is replaced; clients get HEADER_TIMEOUT seconds for their headers; a stop
    takes at most ~5 s. `prepare` runs once the port is bound, beside the workers (see `prepared`);
    `listening(port)` once a worker answers on it. The port must be a real one (not 0)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings

    server = Granian(
        target,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        factory=True,
        working_dir=ROOT,
        workers=workers,
        blocking_threads=threads,
        backpressure=4096,
        backlog=4096,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_TIMEOUT * 1000),
        respawn_failed_workers=True,
        respawn_interval=0.5,
        workers_kill_timeout=STOP_TIMEOUT,
        log_enabled=verbose,
        log_access=verbose,
    )

    flag_dir = Path(tempfile.mkdtemp(prefix="queuing-server-"))
    flag = flag_dir / "prepared"
    if prepare is not None:
        os.environ[PREPARED_ENV] = str(flag)

    done = threading.Event()

    def prepare_then_flag() -> None:
        if prepare is not None:
            prepare()
        flag.touch()
        done.set()

    def announce_when_answering() -> None:
        # With Redis there, the banner comes once the workers serve the curriculum's answers; with Redis
        # away (prepare still waiting after a moment), once they answer at all (503s until it is back).
        done.wait(PREPARE_GRACE)
        _announce_when_answering(host, port, listening)

    @server.on_startup
    def announce() -> None:  # runs once granian has bound the port, before its workers start
        import_ahead()
        threading.Thread(target=prepare_then_flag, daemon=True).start()
        threading.Thread(target=announce_when_answering, daemon=True).start()

    try:
        server.serve()
    except OSError as error:
        raise GranianBindError(os.strerror(error.errno) if error.errno else str(error)) from None
    except RuntimeError as error:  # granian's bind, in Rust: "Address already in use (os error 98)\n\nStack…"
        raise GranianBindError(str(error).splitlines()[0]) from None
    except SystemExit as stop:
        return int(stop.code or 0)
    finally:
        shutil.rmtree(flag_dir, ignore_errors=True)
    return 0


def import_ahead() -> None:
    """Import now what the two background threads would import on first use. Granian forks its workers
    while they run, and a module a thread of this process is importing at that moment stays locked in
    the forked worker for good: its first import of it waits forever, and that worker never serves
    (seen: one start in about ten under load, and every stop then waited for the kill timeout). Each
    connection to Redis reads redis-py's version (importlib.metadata, imported lazily); resolving an
    address needs the idna codec. tests/test_serving.py checks that they then import nothing."""
    import encodings.idna  # noqa: F401

    from redis.utils import get_lib_version

    get_lib_version()


def _announce_when_answering(host: str, port: int, listening: Callable[[int], None]) -> None:
    """Granian's workers each listen when they are ready: say so once one answers."""
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                listening(port)
                return
        except OSError:
            time.sleep(0.05)
