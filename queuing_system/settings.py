"""Where Redis is: one function every script, server, worker, test and benchmark uses."""

from __future__ import annotations

import inspect
import os
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import redis
import redis.asyncio

from queuing_system import sentinel_url
from queuing_system.connection_policy import no_resend, no_resend_async, reconnecting
from queuing_system.sentinel_client import group_client, group_client_async, group_of

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class ConfigError(ValueError):
    """A malformed setting or option: one line naming it and what is wrong (exit 2)."""


def env_int(name: str, default: int, minimum: int, maximum: int) -> int:
    """An integer setting from the environment (unset or empty: `default`), within bounds."""
    return int(_env_number(name, default, minimum, maximum, int, f"a whole number from {minimum} to {maximum}"))


def env_float(name: str, default: float, minimum: float, maximum: float) -> float:
    """A number setting from the environment (unset or empty: `default`), within bounds."""
    return _env_number(name, default, minimum, maximum, float, f"a number from {minimum:g} to {maximum:g}")


def _env_number(
    name: str, default: float, minimum: float, maximum: float, kind: Callable[[str], float], expected: str
) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    value: float | None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not minimum <= value <= maximum:  # also refuses nan and inf
        raise ConfigError(f"{name}={raw!r}: expected {expected}")
    return value


def redis_url(env: Mapping[str, str] | None = None) -> str:
    """`REDIS_URL`; else the seed's `REDIS_HOST`/`REDIS_PORT`/`REDIS_PASSWORD`; else the default.

    A malformed address is a ConfigError naming the variable (a URL without its scheme is the
    most natural mistake: `127.0.0.1:6379` must be `redis://127.0.0.1:6379/0`).
    """
    env = os.environ if env is None else env
    if env.get("REDIS_URL"):
        return check_redis_url(env["REDIS_URL"])
    host, port, password = env.get("REDIS_HOST"), env.get("REDIS_PORT"), env.get("REDIS_PASSWORD")
    if not (host or port or password):
        return DEFAULT_REDIS_URL
    if host is not None and not _HOST.fullmatch(host):
        raise ConfigError(f"REDIS_HOST={host!r}: expected a host name or address")
    if port:
        _port_number("REDIS_PORT", port, minimum=1)
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}{_bracketed(host or '127.0.0.1')}:{port or 6379}/0"


_HOST = re.compile(r"[A-Za-z0-9._:%-]{1,255}")


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _port_number(name: str, raw: str, minimum: int = 0) -> int:
    if not raw.strip().isdigit() or not minimum <= int(raw) <= 65535:
        raise ConfigError(f"{name}={raw!r}: expected a port number from {minimum} to 65535")
    return int(raw)


def check_redis_url(url: str) -> str:
    """`url` if it is a Redis address redis-py can use, else a ConfigError saying what is wrong."""
    problem = f"REDIS_URL={url!r}:"
    example = "redis://127.0.0.1:6379/0"
    if "://" not in url:
        raise ConfigError(f"{problem} no scheme; expected something like {example}")
    if sentinel_url.is_sentinel_url(url):
        try:
            sentinel_url.SentinelAddress.parse(url)
        except ValueError as error:
            raise ConfigError(f"{problem} {error}") from None
        return url
    try:
        parts = urlsplit(url)
        port = parts.port  # out of range or not a number: ValueError
    except ValueError as error:
        raise ConfigError(f"{problem} {error}; expected something like {example}") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{problem} scheme {parts.scheme!r} is not redis://, rediss://, unix:// or redis+sentinel://")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"{problem} expected the socket's path, like unix:///run/redis.sock")
        _check_options(url, problem)
        return url
    if not parts.hostname:
        raise ConfigError(f"{problem} no host; expected something like {example}")
    if port == 0:
        raise ConfigError(f"{problem} port 0 is not a port Redis listens on")
    database = parts.path.lstrip("/")
    if database and not (database.isdigit() and int(database) < 2**31):
        raise ConfigError(f"{problem} database {database!r} is not a number (the path is /0, /1, …)")
    _check_options(url, problem)
    return url


_FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")


def _check_options(url: str, problem: str) -> None:
    """The URL's query options (`?socket_timeout=…`, `?ssl_cert_reqs=…`) as redis-py reads them: an
    option it does not know, a value it cannot use, or a certificate file that is not there is a
    setting refused here, in one line, rather than an error in every process that connects."""
    for name, value in parse_qsl(urlsplit(url).query):
        if name in _FILE_OPTIONS and not os.path.exists(value):
            raise ConfigError(f"{problem} {name}: no such file or folder {value!r}")
    try:
        redis.ConnectionPool.from_url(url).make_connection()  # builds a connection; connects to nothing
    except TypeError as error:  # an option redis-py does not know: "… unexpected keyword argument 'foo'"
        option, scheme = str(error).rpartition(" ")[2], urlsplit(url).scheme
        raise ConfigError(f"{problem} {option} is not an option of {scheme}:// addresses") from None
    except (ValueError, redis.RedisError) as error:
        raise ConfigError(f"{problem} {error}") from None


def connect(
    url: str | None = None,
    *,
    decode_responses: bool = True,
    retries: int = 2,
    socket_timeout: float = 3.0,
    single_connection: bool = False,
) -> redis.Redis:
    """A client for `url` (default: `redis_url()`), a plain Redis or a Sentinel group's primary.

    `retries` quick attempts to connect ride out a blip; a command is never re-sent (see
    connection_policy): a write whose reply was lost is a ConnectionError/TimeoutError for the
    caller, who repeats it only if the write is safe to repeat. A server that accepts the
    connection and never answers is an error after `socket_timeout` seconds (blocking commands
    included: their own timeout must be shorter), never a silent hang.
    RQ needs `decode_responses=False`; the lessons print text, so they decode.
    """
    url = url or redis_url()
    if sentinel_url.is_sentinel_url(url):
        return group_client(
            sentinel_url.SentinelAddress.parse(url),
            decode_responses=decode_responses,
            socket_timeout=socket_timeout,
            socket_connect_timeout=3.0,
            connect_retries=retries,
            single_connection=single_connection,
        )
    wanted = redis.connection.parse_url(url).get("connection_class", redis.Connection)  # TCP, TLS or a socket
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=socket_timeout,
        socket_connect_timeout=3.0,
        retry=no_resend(),
        connection_class=reconnecting(wanted, retries),
        single_connection_client=single_connection,
    )


def connect_async(url: str | None = None, *, retries: int = 2) -> redis.asyncio.Redis:
    """The `redis.asyncio` twin of `connect()` (text replies)."""
    url = url or redis_url()
    if sentinel_url.is_sentinel_url(url):
        return group_client_async(
            sentinel_url.SentinelAddress.parse(url),
            socket_timeout=3.0,
            socket_connect_timeout=3.0,
            connect_retries=retries,
        )
    wanted = redis.asyncio.connection.parse_url(url).get("connection_class", redis.asyncio.Connection)
    return redis.asyncio.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=3.0,
        socket_connect_timeout=3.0,
        retry=no_resend_async(),
        connection_class=reconnecting(wanted, retries),
    )


def shown_url(url: str) -> str:
    """`url` fit to print or show on a page: its password (in the address or the query) as `***`."""
    address, question, query = url.partition("?")
    scheme, sep, rest = address.partition("://")
    netloc, slash, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")  # the last @: a password may hold one, unquoted
    if ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    shown = f"{scheme}{sep}{netloc}{slash}{path}"
    if not question:
        return shown
    pairs = parse_qsl(query, keep_blank_values=True)
    return f"{shown}?" + urlencode([(k, "***" if "password" in k.lower() else v) for k, v in pairs], safe="/*")


def url_of(client: redis.Redis) -> str:
    """The URL a client talks to, to open a twin connection with other options: its address, user,
    password and database, and every TLS setting it has (CA, client certificate and key, verification
    mode, host name check, …) so that the twin trusts what the client trusts. A TLS setting no URL can
    carry is a ValueError, never dropped (a twin without it would fail, or trust too much)."""
    if group := group_of(client):  # a Sentinel group: its URL, so the twin follows failovers too
        return group.url()
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    password = kwargs.get("password")
    user = kwargs.get("username") or ""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if password else ""
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return f"unix://{auth}{kwargs['path']}?db={kwargs.get('db', 0)}"
    host = _bracketed(kwargs.get("host", "127.0.0.1"))
    address = f"{host}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    if not issubclass(pool.connection_class, redis.SSLConnection):
        return f"redis://{auth}{address}"
    query = urlencode(_tls_query(kwargs), safe="/")
    return f"rediss://{auth}{address}" + (f"?{query}" if query else "")


_CERT_REQS = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "optional", ssl.CERT_REQUIRED: "required"}


def _tls_query(kwargs: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The TLS settings among `kwargs` that differ from redis-py's defaults, as redis-py reads them from a URL."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(redis.SSLConnection.__init__).parameters.items()
        if name.startswith("ssl_")
    }
    query: list[tuple[str, str]] = []
    for name, value in kwargs.items():
        if name == "ssl_cert_reqs" and value is None:
            value = ssl.CERT_NONE  # redis-py reads None as "verify nothing"
        if not name.startswith("ssl_") or value is None or value == defaults.get(name):
            continue
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, ssl.VerifyMode):
            text = _CERT_REQS[value]
        elif isinstance(value, int):  # ssl_min_version, a TLSVersion
            text = str(int(value))
        elif isinstance(value, (list, tuple)) and all(isinstance(flag, ssl.VerifyFlags) for flag in value):
            text = ",".join(str(flag.name) for flag in value)
        elif isinstance(value, str):
            text = value
        else:
            raise ValueError(f"the TLS setting {name} cannot be carried in a URL")
        query.append((name, text))
    return query
