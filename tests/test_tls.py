"""TLS settings travel whole (issue 22): every client made from the configured `rediss://` URL keeps its
CA, client certificate and verification mode. A private CA is made here at test time (openssl), and a
redis-server listens with `--tls-port`."""

from __future__ import annotations

import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from queuing_system.embedded import find_redis_server, free_port
from queuing_system.http_requests import request
from queuing_system.processes import ScriptProcess
from queuing_system.settings import url_of

OPENSSL = shutil.which("openssl")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> None:
    """ca.pem (a private CA), server.pem/.key for 127.0.0.1 and localhost, client.pem/.key; all signed by the CA."""
    # The extensions Python 3.13's strict verification (VERIFY_X509_STRICT) asks of a CA and its certificates.
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA", "-keyout",
            "ca.key", "-out", "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    leaf = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
    leaf += "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    (folder / "server.ext").write_text(
        leaf + "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
    )
    (folder / "client.ext").write_text(leaf + "extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=folder)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)  # fmt: skip


@dataclass
class TLSRedis:
    folder: Path
    port: int
    mutual: bool  # whether it demands a client certificate from the CA

    def url(self, query: str) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?{query}"


def start_tls_redis(folder: Path, client_certificates: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [find_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder), "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
         "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", client_certificates],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    client = redis.Redis.from_url(
        f"rediss://127.0.0.1:{port}/0", ssl_ca_certs=str(folder / "ca.pem"), ssl_certfile=str(folder / "client.pem"),
        ssl_keyfile=str(folder / "client.key"), retry=None, socket_timeout=1,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                if process.stdout:
                    process.stdout.close()  # closed before we skip or fail: no unclosed file at teardown
                if "tls" in output.lower():
                    pytest.skip(
                        f"this redis-server has no TLS support ({find_redis_server()}): {output.strip()[-200:]}"
                    )
                raise RuntimeError(f"redis-server with TLS did not start: {output[-500:]}")
            try:
                client.ping()
                return process, port
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    raise
                time.sleep(0.05)
    finally:
        client.close()


@pytest.fixture(scope="module")
def certificates() -> Iterator[Path]:
    if OPENSSL is None:
        pytest.skip("no openssl command here to make a private CA")
    folder = Path(tempfile.mkdtemp(prefix="queuing-tls-"))
    make_certificates(folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["no", "yes"], ids=["server-certificate", "mutual-tls"])
def tls_redis(request, certificates: Path) -> Iterator[TLSRedis]:
    """A TLS-only redis-server; with `mutual-tls` it also demands a client certificate from the CA."""
    process, port = start_tls_redis(certificates, request.param)
    yield TLSRedis(certificates, port, mutual=request.param == "yes")
    process.terminate()
    process.wait(10)
    if process.stdout:
        process.stdout.close()


def test_url_of_keeps_every_tls_setting(tls_redis: TLSRedis) -> None:
    folder = tls_redis.folder
    configured = tls_redis.url(
        f"ssl_ca_certs={folder}/ca.pem&ssl_certfile={folder}/client.pem&ssl_keyfile={folder}/client.key"
    )
    client = redis.Redis.from_url(configured)
    twin = redis.Redis.from_url(url_of(client))
    try:
        assert twin.ping() is True
    finally:
        client.close()
        twin.close()
    kept = {
        key: twin.connection_pool.connection_kwargs.get(key) for key in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
    }
    assert kept == {
        "ssl_ca_certs": f"{folder}/ca.pem",
        "ssl_certfile": f"{folder}/client.pem",
        "ssl_keyfile": f"{folder}/client.key",
    }


def test_url_of_keeps_the_verification_mode() -> None:
    """Verification off stays off, and a twin of a verifying client verifies (never trusts more)."""
    lax = redis.Redis.from_url("rediss://localhost:1/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    assert url_of(lax) == "rediss://localhost:1/0?ssl_cert_reqs=none&ssl_check_hostname=false"
    unset = redis.Redis(host="localhost", port=1, ssl=True, ssl_cert_reqs=None)  # None: verify nothing
    assert url_of(unset) == "rediss://localhost:1/0?ssl_cert_reqs=none"
    strict = redis.Redis(host="localhost", port=1, ssl=True, ssl_cert_reqs=ssl.CERT_REQUIRED, ssl_ca_certs="/ca.pem")
    assert url_of(strict) == "rediss://localhost:1/0?ssl_cert_reqs=required&ssl_ca_certs=/ca.pem"
    with pytest.raises(ValueError, match="ssl_ca_data cannot be carried in a URL"):
        url_of(redis.Redis(host="localhost", port=1, ssl=True, ssl_ca_data=b"\x30\x00"))


def test_the_seat_server_sells_and_processes_seats_over_tls(tls_redis: TLSRedis) -> None:
    """100_seat.py on `rediss://…?ssl_ca_certs=ca.pem` (its worker thread and queue client included)."""
    folder = tls_redis.folder
    query = f"ssl_ca_certs={folder}/ca.pem"
    assert _demands_client_certificate(tls_redis) is tls_redis.mutual
    if tls_redis.mutual:
        query += f"&ssl_certfile={folder}/client.pem&ssl_keyfile={folder}/client.key"
    url = tls_redis.url(query)
    port = free_port()
    with ScriptProcess("100_seat.py", ["--reset"], env={"PORT": str(port), "REDIS_URL": url}) as server:
        server.wait_for_line(f"API available on localhost port {port}")
        assert [request(port, "/reserve_seat")[2] for _ in range(3)] == [{"status": "Reservation in process"}] * 3
        assert request(port, "/process")[2] == {"status": "Queue processing"}
        server.wait_until(lambda: len(server.lines) == 4, what="three jobs to end")
        assert request(port, "/available_seats")[2] == {"numberOfAvailableSeats": "47"}
        server.signal(signal.SIGINT)
        assert server.wait() == 0
    assert server.lines[1:] == [f"Seat reservation job {n} completed" for n in (1, 2, 3)]
    assert server.stderr == ""


def _demands_client_certificate(tls_redis: TLSRedis) -> bool:
    """Whether the server refuses a client without a certificate (the mutual-TLS variant)."""
    bare = redis.Redis.from_url(tls_redis.url(f"ssl_ca_certs={tls_redis.folder}/ca.pem"), retry=None, socket_timeout=2)
    try:
        bare.ping()
        return False
    except redis.exceptions.ConnectionError:
        return True
    finally:
        bare.close()
