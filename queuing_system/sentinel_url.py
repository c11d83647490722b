"""A Redis named by its sentinels: `redis+sentinel://[:password@]host1:port1,host2:port2/<master>/<db>`.

The format is the Redis-Sentinel-Url package's (rq-dashboard reads REDIS_URL with it), so the
dashboard and every other process take the same value. Differences, all stricter or additive:
the master name is required (the package falls back to none), IPv6 sentinels may be written
`[::1]:26379`, the password is percent-decoded like redis-py's URLs, and the only query option
is `sentinel_password` (for sentinels that require one; anything else is refused, not ignored).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
EXAMPLE = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380,127.0.0.1:26381/mymaster/0"
# Sentinel's own rule for a master name is loose; these are the names that need no quoting.
_MASTER = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOST = re.compile(r"\[[0-9A-Fa-f:.%a-z]+\]|[A-Za-z0-9._-]{1,255}")


@dataclass(frozen=True)
class SentinelAddress:
    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    password: str | None = None  # the primary's and replicas' (AUTH), as in Redis-Sentinel-Url
    username: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelAddress:
        """The address `url` names, or ValueError saying in a few words what is wrong."""
        scheme, _, rest = url.partition("://")
        if scheme != SCHEME:
            raise ValueError(f"scheme {scheme!r} is not {SCHEME}://")
        rest, _, query = rest.partition("?")
        netloc, _, path = rest.partition("/")
        auth, at, hosts = netloc.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = auth.partition(":")
            if not colon:
                raise ValueError("expected ':password@' before the sentinels")
            username, password = (unquote(user) or None), unquote(secret)
        if not hosts:
            raise ValueError(f"no sentinels; expected something like {EXAMPLE}")
        sentinels = tuple(_sentinel(part) for part in hosts.split(","))
        names = path.split("/") if path else []
        if not names or not names[0]:
            raise ValueError(f"no master name after the sentinels; expected something like {EXAMPLE}")
        if not _MASTER.fullmatch(names[0]):
            raise ValueError(f"master name {names[0]!r} is not letters, digits, '.', '_' or '-'")
        database = names[1] if len(names) > 1 and names[1] else "0"
        if len(names) > 2 or not (database.isdigit() and int(database) < 2**31):
            raise ValueError(f"database {'/'.join(names[1:])!r} is not a number (the path is /<master>/0, /1, …)")
        return cls(sentinels, names[0], int(database), password, username, _sentinel_password(query))

    def url(self, *, hide_password: bool = False) -> str:
        """The URL back (with `***` for passwords if asked, for banners and logs)."""

        def secret(value: str) -> str:
            return "***" if hide_password else quote(value, safe="")

        auth = f"{quote(self.username or '', safe='')}:{secret(self.password)}@" if self.password else ""
        hosts = ",".join(f"{host if ':' not in host else f'[{host}]'}:{port}" for host, port in self.sentinels)
        query = f"?sentinel_password={secret(self.sentinel_password)}" if self.sentinel_password else ""
        return f"{SCHEME}://{auth}{hosts}/{self.master}/{self.db}{query}"


def is_sentinel_url(url: str) -> bool:
    return url.startswith(f"{SCHEME}://")


def _sentinel(spec: str) -> tuple[str, int]:
    host, port = spec, ""
    if spec.startswith("["):
        host, _, port = spec.partition("]")
        host, port = host + "]", port.removeprefix(":")
    elif ":" in spec:
        host, _, port = spec.rpartition(":")
    if not _HOST.fullmatch(host):
        raise ValueError(f"sentinel {spec!r} is not host:port")
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"sentinel {spec!r}: port {port!r} is not a port number from 1 to 65535")
    return host.strip("[]"), int(port) if port else DEFAULT_SENTINEL_PORT


def _sentinel_password(query: str) -> str | None:
    if not query:
        return None
    try:
        options = parse_qs(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        options = {}
    unknown = sorted(set(options) - {"sentinel_password"})
    if not options or unknown or len(options["sentinel_password"]) > 1:
        raise ValueError(f"query {query!r}: the only option is sentinel_password=<password>")
    return options["sentinel_password"][0]
