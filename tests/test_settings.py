import pytest

from queuing_system.settings import DEFAULT_REDIS_URL, redis_url


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, DEFAULT_REDIS_URL),
        ({"REDIS_URL": "redis://example:6390/2"}, "redis://example:6390/2"),
        ({"REDIS_URL": "redis://a:1/0", "REDIS_HOST": "b"}, "redis://a:1/0"),
        ({"REDIS_HOST": "cache"}, "redis://cache:6379/0"),
        ({"REDIS_PORT": "6390"}, "redis://127.0.0.1:6390/0"),
        ({"REDIS_HOST": "h", "REDIS_PORT": "1", "REDIS_PASSWORD": "p@ss/w"}, "redis://:p%40ss%2Fw@h:1/0"),
        ({"REDIS_URL": "", "REDIS_HOST": "h"}, "redis://h:6379/0"),
    ],
)
def test_redis_url_precedence(env: dict[str, str], expected: str) -> None:
    assert redis_url(env) == expected
