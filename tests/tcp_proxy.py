"""A TCP proxy in front of a Redis that a test can freeze: a network cut as a client sees it.

While frozen, nothing moves in either direction and no new connection is served; what a
client sent meanwhile is delivered when the proxy thaws (as TCP delivers after a cut heals),
so a command whose reply was lost may still run later: the unknown outcome of issue 19.
"""

from __future__ import annotations

import select
import socket
import threading


class FreezableProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._thawed = threading.Event()
        self._thawed.set()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._freeze_at: int | None = None  # client bytes forwarded, after which the proxy freezes itself
        self._sent = 0
        self.frozen = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self._thawed.clear()
        self.frozen.set()

    def thaw(self) -> None:
        self.frozen.clear()
        self._thawed.set()

    def freeze_after_sent(self, byte_count: int) -> None:
        """Freeze at the first reply after clients have sent this many more bytes: the command reaches
        Redis whole, its reply is caught in the cut (an outcome the client cannot know)."""
        with self._lock:
            self._freeze_at = self._sent + byte_count

    def _accept(self) -> None:
        while not self._closing.is_set():
            self._thawed.wait()
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions of one connection; stops moving bytes while frozen."""
        peers = {client: upstream, upstream: client}
        try:
            while not self._closing.is_set():
                self._thawed.wait()
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for source in readable:
                    if not self._thawed.is_set():
                        break  # frozen between select and recv: the bytes wait in the kernel
                    data = source.recv(65536)
                    if not data:
                        return
                    if source is upstream and self._armed():
                        self.freeze()
                        self._thawed.wait()
                    peers[source].sendall(data)
                    if source is client:
                        self._count_sent(len(data))
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def _count_sent(self, byte_count: int) -> None:
        with self._lock:
            self._sent += byte_count

    def _armed(self) -> bool:
        with self._lock:
            if self._freeze_at is None or self._sent < self._freeze_at:
                return False
            self._freeze_at = None
            return True

    def close(self) -> None:
        self._closing.set()
        self._thawed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def __enter__(self) -> FreezableProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
