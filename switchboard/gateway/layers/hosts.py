"""The ``hosts`` forms channels_redis accepts, turned into the Redis URLs our storage uses.

A Channels project's ``CHANNEL_LAYERS`` lists its Redis servers in any of these forms, and
they must keep working unchanged:

* a URL: ``"redis://:password@host:6379/0"``, ``"rediss://..."``, ``"unix:///run/redis.sock"``;
* a ``(host, port)`` pair (tuple or list);
* a dict with ``"address"`` (a URL or a pair) and redis-py connection options
  (``{"address": "redis://host:6379", "password": "...", "ssl_cert_reqs": None}``);
* a dict of redis-py ``Redis()`` arguments without ``"address"``
  (``{"host": "h", "port": 6379, "db": 1, "password": "..."}``).

Each server becomes one URL (what it is: scheme, credentials, host, port, database), and
every other option becomes a connection option, which must then be the same for every
server: the storage keeps one set of options, and servers that differed silently would
be a configuration bug.

Two more forms name a topology rather than one server:

* a Sentinel-managed primary, channels_redis's dict
  ``{"sentinels": [("h", 26379), ...], "master_name": "mymaster", "sentinel_kwargs": {...}}``
  (other keys, ``db``, ``password``..., are the primary's connection options), or the URL
  ``"redis+sentinel://h1:26379,h2:26379/mymaster/0"``. It becomes that URL, with
  ``sentinel_kwargs`` as a connection option. Such entries may be mixed with plain servers:
  each is one shard of the hash ring.
* a Redis Cluster seed, ``"redis+cluster://host:port"`` (``rediss+cluster://`` with TLS).
  Every entry must then be a seed of the same cluster: a cluster cannot be one shard of a
  hash ring, and :func:`is_cluster` refuses the mix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

DEFAULT_URL = "redis://127.0.0.1:6379/0"

# Keys of a Redis() argument dict that are part of the URL rather than connection options.
_URL_KEYS = {"host", "port", "db", "username", "password", "ssl", "path"}


def _pair_url(host: Any, port: Any) -> str:
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"a Redis host pair must be (host: str, port: int), got {(host, port)!r}")
    shown = f"[{host}]" if ":" in host else host
    return f"redis://{shown}:{port}"


def _url_from_arguments(entry: Mapping[str, Any]) -> str:
    if entry.get("path"):
        return f"unix://{entry['path']}" + (f"?db={int(entry['db'])}" if entry.get("db") else "")
    scheme = "rediss" if entry.get("ssl") else "redis"
    host = entry.get("host", "127.0.0.1")
    port = entry.get("port", 6379)
    credentials = ""
    if entry.get("password") is not None or entry.get("username") is not None:
        credentials = f"{quote(str(entry.get('username') or ''), safe='')}:{quote(str(entry.get('password') or ''), safe='')}@"
    shown = f"[{host}]" if ":" in str(host) else str(host)
    return f"{scheme}://{credentials}{shown}:{int(port)}/{int(entry.get('db', 0))}"


CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")


def scheme(url: str) -> str:
    return url.partition("://")[0].lower()


def is_cluster(urls: Sequence[str], option: bool = False) -> bool:
    """Whether ``urls`` (from :func:`redis_hosts`) name a Redis Cluster; refuses a mix.

    ``option`` is the layer's ``cluster: true``, which makes plain ``redis://`` entries seeds.
    """
    seeds = [url for url in urls if scheme(url) in CLUSTER_SCHEMES]
    if seeds and len(seeds) != len(urls):
        others = [url for url in urls if scheme(url) not in CLUSTER_SCHEMES]
        raise ValueError(
            f"hosts mix Redis Cluster seeds ({seeds[0]!r}) with other servers ({others[0]!r}): "
            "a cluster is the whole layer, list only its seeds"
        )
    if option and any(scheme(url) in SENTINEL_SCHEMES or scheme(url) == "unix" for url in urls):
        raise ValueError("cluster: true needs redis:// seed URLs of the cluster, not Sentinel or unix-socket entries")
    return bool(seeds) or option


def _sentinel_url(entry: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    options = dict(entry)
    sentinels = options.pop("sentinels", None)
    master = options.pop("master_name", None)
    if not master or not isinstance(master, str):
        raise ValueError(f'a Sentinel hosts entry needs "master_name" (the monitored primary\'s name), got {entry!r}')
    if not sentinels or isinstance(sentinels, (str, bytes)):
        raise ValueError(f'a Sentinel hosts entry needs "sentinels": a list of (host, port) pairs, got {sentinels!r}')
    addresses = []
    for sentinel in sentinels:
        if not isinstance(sentinel, (tuple, list)) or len(sentinel) != 2:
            raise ValueError(f"a Sentinel address must be a (host, port) pair, got {sentinel!r}")
        host, port = sentinel
        addresses.append(_pair_url(host, port).partition("://")[2])
    db = int(options.pop("db", 0) or 0)
    url = f"{'rediss' if options.pop('ssl', False) else 'redis'}+sentinel://{','.join(addresses)}/{quote(master, safe='')}/{db}"
    if options.get("sentinel_kwargs") is None:
        options.pop("sentinel_kwargs", None)
    return url, options


def _one(entry: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(entry, str):
        if "://" not in entry:
            raise ValueError(f"Redis host must be a URL like {DEFAULT_URL!r}, a (host, port) pair or a dict, not {entry!r}")
        return entry, {}
    if isinstance(entry, (tuple, list)):
        if len(entry) != 2:
            raise ValueError(f"a Redis host pair must be (host, port), got {entry!r}")
        return _pair_url(*entry), {}
    if isinstance(entry, Mapping):
        if "sentinels" in entry or "master_name" in entry:
            return _sentinel_url(entry)
        options = dict(entry)
        if "address" in options:
            address = options.pop("address")
            url, _ = _one(address)
            return url, options
        url = _url_from_arguments(options)
        return url, {key: value for key, value in options.items() if key not in _URL_KEYS}
    raise ValueError(f"cannot read Redis host {entry!r}: use a URL, a (host, port) pair or a dict")


def redis_hosts(hosts: Any) -> tuple[list[str], dict[str, Any]]:
    """``(urls, connection options)`` for a channels_redis-style ``hosts`` value.

    ``None`` means the local default server; an empty list is refused (a list that lost
    its entries is a mistake, not a wish for the default). One URL string is taken as a
    list of one.
    """
    if hosts is None:
        return [DEFAULT_URL], {}
    if not hosts:
        raise ValueError("no Redis hosts given: list at least one server, or leave hosts out for the local default")
    entries: Sequence[Any] = [hosts] if isinstance(hosts, (str, Mapping)) else list(hosts)
    if isinstance(hosts, tuple) and len(hosts) == 2 and isinstance(hosts[0], str) and isinstance(hosts[1], int):
        entries = [hosts]  # one bare (host, port) pair
    urls: list[str] = []
    common: dict[str, Any] | None = None
    for entry in entries:
        url, options = _one(entry)
        if common is None:
            common = options
        elif options != common:
            raise ValueError(
                f"Redis hosts have different connection options ({common!r} and {options!r}); "
                "the Switchboard Redis layer uses one set for all of its servers"
            )
        urls.append(url)
    return urls, common or {}
