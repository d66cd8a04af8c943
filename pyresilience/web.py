"""Rate-limit rules for web servers, shared by the ASGI and WSGI middleware.

A :class:`Limit` says which requests a limiter counts (paths, methods, an
exemption), under which key (a function of the request), at which cost, and
how it is named in the response headers. :mod:`pyresilience.asgi` and
:mod:`pyresilience.wsgi` check every rule matching a request as one
all-or-nothing decision and answer with the headers clients understand:

- ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (the de facto headers,
  GitHub's), from the most restrictive matching rule;
- the IETF draft-10 structured fields ``RateLimit`` (the most restrictive
  rule: ``"name";r=..;t=..``) and ``RateLimit-Policy`` (one item per matching
  rule: ``"name";q=..;w=..``), ``pk`` (the key, a byte sequence) only with
  ``partition_key=True``;
- on a denial, 429 with ``Retry-After`` in whole seconds (rounded up; omitted
  when the request can never be admitted) and an RFC 9457
  ``application/problem+json`` body of the draft's ``quota-exceeded`` type.

No web framework is needed: this module works on a small request view
(:class:`Request`) built from an ASGI scope or a WSGI environ.
"""
from __future__ import annotations

import base64
import fnmatch
import ipaddress
import json
import math
import re
from math import ceil
from operator import attrgetter
from time import time as _time
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Mapping, MutableMapping, Optional,
                    Sequence, Tuple, Union, cast)

from . import _core
from ._core import Decision
from .bulkhead import Bulkhead
from .keyed import KeyedLimiter, LimiterGroup

__all__ = ["Limit", "Request", "Headers", "client_ip", "header", "path", "Engine", "Outcome",
           "QUOTA_EXCEEDED", "TEMPORARY_REDUCED_CAPACITY", "busy_response", "problem", "status_line"]

Key = Union[str, bytes]
KeyFunc = Callable[["Request"], Optional[Key]]
HeaderList = List[Tuple[str, str]]
#: on_limited's answer: (status, headers, body)
Response = Tuple[int, Union[Mapping[str, str], Iterable[Tuple[str, str]]], Union[bytes, str]]
OnLimited = Callable[["Request", Decision], Optional[Response]]

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"
TEMPORARY_REDUCED_CAPACITY = "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity"

# A retry_after this long (about 146 years) is a saturated clock, not a wait.
_NEVER_S = 2.0 ** 62 / 1e9


# -- the request view ----------------------------------------------------------

class Headers(Mapping[str, str]):
    """Request headers, a read-only case-insensitive mapping. A field sent on
    several lines reads as its values joined by ", " (RFC 9110 5.3);
    :meth:`getlist` gives them one by one."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[Tuple[str, str]]) -> None:
        self._pairs = [(k.lower(), v) for k, v in pairs]

    def getlist(self, name: str) -> List[str]:
        name = name.lower()
        return [v for k, v in self._pairs if k == name]

    def __getitem__(self, name: str) -> str:
        values = self.getlist(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._pairs))

    def __len__(self) -> int:
        return len(set(k for k, _ in self._pairs))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k == name.lower() for k, _ in self._pairs)

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


class _ASGIHeaders(Headers):
    __slots__ = ()

    def __init__(self, scope: Mapping[str, Any]) -> None:  # the scope's (bytes, bytes) pairs
        self._pairs = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]


def _environ_headers(environ: Mapping[str, Any]) -> Headers:
    pairs = []
    for k, v in environ.items():
        if k.startswith("HTTP_"):
            pairs.append((k[5:].replace("_", "-"), str(v)))
        elif k in ("CONTENT_TYPE", "CONTENT_LENGTH") and v:
            pairs.append((k.replace("_", "-"), str(v)))
    return Headers(pairs)


class Request:
    """Request(method, path, headers=(), client=None)

    What a rule sees of a request: ``method`` (upper case), ``path``,
    ``headers`` (a case-insensitive :class:`Headers` mapping), ``client``
    (the peer's address as a string, or None), and the raw ``scope`` (ASGI)
    or ``environ`` (WSGI), None when absent. The middleware's views read the
    scope or environ only when a rule asks."""

    __slots__ = ("_method", "_path", "_client", "_headers")

    def __init__(self, method: str, path: str,
                 headers: Union[Mapping[str, str], Iterable[Tuple[str, str]]] = (),
                 client: Optional[str] = None) -> None:
        self._method = method
        self._path = path
        self._client = client
        self._headers: Optional[Headers] = Headers(
            headers.items() if isinstance(headers, Mapping) else headers)

    @property
    def method(self) -> str:
        return self._method

    @property
    def path(self) -> str:
        return self._path

    @property
    def client(self) -> Optional[str]:
        return self._client

    @property
    def headers(self) -> Headers:
        assert self._headers is not None
        return self._headers

    @property
    def scope(self) -> Optional[MutableMapping[str, Any]]:
        return None

    @property
    def environ(self) -> Optional[Dict[str, Any]]:
        return None

    @staticmethod
    def from_scope(scope: MutableMapping[str, Any]) -> "Request":
        """The view of an ASGI ``http`` or ``websocket`` scope."""
        return _ScopeRequest(scope)

    @staticmethod
    def from_environ(environ: Dict[str, Any]) -> "Request":
        """The view of a WSGI environ (``path`` is SCRIPT_NAME + PATH_INFO)."""
        return _EnvironRequest(environ)

    def __repr__(self) -> str:
        return f"Request(method={self.method!r}, path={self.path!r}, client={self.client!r})"


class _View(Request):
    """A Request read on demand from a server's own mapping (an ASGI scope, a
    WSGI environ): the subclass names the method's key, how to build the
    headers (once) and how to read the rest."""

    __slots__ = ("_raw",)

    _METHOD: str  # the key of the request method in the mapping
    _HEADERS: Callable[[Any], Headers]  # the mapping -> its Headers

    def __init__(self, raw: Any) -> None:  # lazy: nothing read until a rule asks
        self._raw = raw
        self._headers = None

    @property
    def method(self) -> str:
        m: str = self._raw.get(self._METHOD, "GET")
        return m

    @property
    def headers(self) -> Headers:
        h = self._headers
        if h is None:
            h = self._headers = self._HEADERS(self._raw)
        return h


class _ScopeRequest(_View):
    __slots__ = ()
    _METHOD = "method"
    _HEADERS = _ASGIHeaders
    _raw: MutableMapping[str, Any]

    @property
    def path(self) -> str:
        p: str = self._raw["path"]
        return p

    @property
    def client(self) -> Optional[str]:
        c = self._raw.get("client")
        return c[0] if c else None

    @property
    def scope(self) -> Optional[MutableMapping[str, Any]]:
        return self._raw


class _EnvironRequest(_View):
    __slots__ = ()
    _METHOD = "REQUEST_METHOD"
    _HEADERS = staticmethod(_environ_headers)
    _raw: Dict[str, Any]

    @property
    def path(self) -> str:
        e = self._raw
        p: str = e.get("SCRIPT_NAME", "") + e.get("PATH_INFO", "")
        return p

    @property
    def client(self) -> Optional[str]:
        c: Optional[str] = self._raw.get("REMOTE_ADDR") or None
        return c

    @property
    def environ(self) -> Optional[Dict[str, Any]]:
        return self._raw


# -- key functions ---------------------------------------------------------------

_Net = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def _parse_addr(text: str) -> Optional[str]:
    """The canonical address in a forwarding hop ("1.2.3.4", "1.2.3.4:80",
    "[::1]:80", "::1", quoted), or None when it is not an address."""
    s = text.strip().strip('"')
    if s.startswith("["):
        end = s.find("]")
        if end < 0:
            return None
        s = s[1:end]
    elif s.count(":") == 1:  # IPv4 with a port
        s = s.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        return None


def _forwarded_for(value: str) -> List[str]:
    """The for= values of an RFC 7239 Forwarded field, in order."""
    out = []
    for element in value.split(","):
        for pair in element.split(";"):
            name, sep, v = pair.partition("=")
            if sep and name.strip().lower() == "for":
                out.append(v.strip())
    return out


def client_ip(trusted_proxies: Iterable[str] = ()) -> KeyFunc:
    """client_ip(trusted_proxies=())

    A key function: the client's IP address. The peer's address is used
    unless the peer is one of ``trusted_proxies`` (addresses or networks, e.g.
    ``["10.0.0.0/8", "::1"]``); then the RFC 7239 ``Forwarded`` field (or, when
    absent, ``X-Forwarded-For``) is read from the right, skipping trusted
    hops, and the first untrusted hop is the client. A spoofed header from an
    untrusted peer is ignored. A request without a peer address (a Unix
    socket) is keyed "-"."""
    if isinstance(trusted_proxies, (str, bytes)):
        raise TypeError(f"trusted_proxies must be a list of addresses or networks, "
                        f"not a single string: {trusted_proxies!r}")
    nets: List[_Net] = []
    for p in trusted_proxies:
        try:
            nets.append(ipaddress.ip_network(p, strict=False))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"trusted_proxies: {p!r} is not an IP address or network") from exc
    if not nets:
        def peer_key(req: Request) -> Key:
            return req.client or "-"
        return peer_key

    cache: Dict[str, bool] = {}

    def trusted(addr: str) -> bool:
        t = cache.get(addr)
        if t is None:
            try:
                ip = ipaddress.ip_address(addr)
                t = any(ip in n for n in nets)
            except ValueError:
                t = False
            if len(cache) >= 4096:
                cache.clear()
            cache[addr] = t
        return t

    def key(req: Request) -> Key:
        peer = req.client
        if peer is None:
            return "-"
        if not trusted(peer):
            return peer
        h = req.headers
        fwd = h.get("forwarded")
        hops = _forwarded_for(fwd) if fwd is not None else [
            x for x in h.get("x-forwarded-for", "").split(",") if x.strip()]
        for hop in reversed(hops):
            addr = _parse_addr(hop)
            if addr is None:
                return hop.strip().strip('"') or "-"  # obfuscated ("unknown", "_x"): as written
            if not trusted(addr):
                return addr
        if hops:  # every hop trusted: the farthest one
            return _parse_addr(hops[0]) or peer
        return peer
    return key


def header(name: str) -> KeyFunc:
    """header(name)

    A key function: the value of request header ``name`` (e.g. an API key).
    A request without it is not counted by the rule (key None)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty header name, got {name!r}")
    lname = name.lower()

    def key(req: Request) -> Optional[Key]:
        return req.headers.get(lname)
    return key


def path() -> KeyFunc:
    """path()

    A key function: the request path (one limit per path)."""
    def key(req: Request) -> Key:
        return req.path
    return key


# -- rules ---------------------------------------------------------------------

def _path_matcher(paths: Optional[Iterable[str]]) -> Optional[Callable[[str], bool]]:
    if paths is None:
        return None
    if isinstance(paths, str):
        paths = [paths]
    exact = set()
    prefixes: List[str] = []
    globs: List[str] = []
    for p in paths:
        if not isinstance(p, str) or not p:
            raise ValueError(f"paths: each must be a non-empty string, got {p!r}")
        if any(c in p for c in "*?["):
            globs.append(fnmatch.translate(p))
        elif p.endswith("/"):
            prefixes.append(p)
        else:
            exact.add(p)
    pre = tuple(prefixes)
    rx = re.compile("|".join(globs)).match if globs else None

    def match(path: str) -> bool:
        return path in exact or path.startswith(pre) or (rx is not None and rx(path) is not None)
    return match


def _gate_filters(bulkhead: Bulkhead, paths: Optional[Iterable[str]], methods: Optional[Iterable[str]]
                  ) -> Tuple[Optional[Callable[[str], bool]], Optional[frozenset[str]]]:
    """The path matcher and the method set of a bulkhead middleware (ASGI and
    WSGI), after checking that ``bulkhead`` is a pyresilience Bulkhead."""
    if not isinstance(bulkhead, Bulkhead):
        raise TypeError(f"bulkhead must be a pyresilience Bulkhead, not {type(bulkhead).__name__}")
    return _path_matcher(paths), None if methods is None else frozenset(
        m.upper() for m in ([methods] if isinstance(methods, str) else methods))


def _policy_name(name: str) -> str:
    if not isinstance(name, str) or not name or any(not (" " <= c <= "~") for c in name):
        raise ValueError(f"name must be a non-empty string of printable ASCII, got {name!r}")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_redis(limiter: Any) -> bool:
    try:
        from .redis import RedisRateLimiter
    except ImportError:  # pragma: no cover
        return False
    return isinstance(limiter, RedisRateLimiter)


_WINDOWS = ("FixedWindow", "SlidingWindowLog", "SlidingWindowCounter")


def _shape(limiter: Any) -> Tuple[int, Optional[float], float, bool]:
    """(q, w, rate, window) of a limiter: q the quota, w its window in seconds
    (None: none), rate the refill per second of bucket algorithms (GCRA, token
    and leaky buckets: w = q / rate, the time to refill from empty) and
    window True for the window algorithms."""
    if _is_redis(limiter):
        algo = limiter.algorithm
        if algo in ("gcra", "token_bucket"):
            if limiter.rate is not None:
                q = int(limiter.burst or 1)
                rate = float(limiter.rate)
            else:
                q = int(limiter.limit)
                rate = q / float(limiter.window)
            return q, (q / rate if rate > 0 else None), rate, False
        return int(limiter.limit), float(limiter.window), 0.0, True
    t = limiter
    if isinstance(t, KeyedLimiter):
        t = t.limiter
    elif isinstance(t, _core.KeyedLimiterView):
        t = t.limiter.limiter
    names = {c.__name__ for c in type(t).__mro__}
    if names & set(_WINDOWS):
        return int(t.limit), float(t.window), 0.0, True
    if "GCRA" in names:
        q, rate = int(t.burst), float(t.rate)
    elif "TokenBucket" in names:
        q, rate = int(t.capacity), float(t.refill_rate)
    elif "LeakyBucket" in names:
        q, rate = int(t.capacity), float(t.leak_rate)
    else:
        raise TypeError(f"limiter must be a pyresilience limiter, a KeyedLimiter or a "
                        f"RedisRateLimiter, not {type(limiter).__name__}: {limiter!r}")
    return q, (q / rate if rate > 0 else None), rate, False


_SHARED, _KEYED, _REDIS = 0, 1, 2


class Limit:
    """Limit(limiter, *, key=None, paths=None, methods=None, cost=1, name=None, exempt=None, partition_key=False)

    One rate-limit rule of a web middleware.

    - ``limiter``: an in-process limiter (TokenBucket, GCRA, ...: one limit
      shared by every matching request), a :class:`~pyresilience.KeyedLimiter`
      or a :class:`~pyresilience.RedisRateLimiter` (one limit per key).
    - ``key``: a function of the :class:`Request` giving the key (str or
      bytes): :func:`client_ip`, :func:`header`, :func:`path` or your own; a
      key of None leaves the request uncounted by this rule. Default for a
      keyed or Redis limiter: ``client_ip()`` (the peer's address).
    - ``paths``: None (every path) or a list of exact paths, prefixes ending
      in "/" and globs (``*``, ``?``, ``[...]``); ``methods``: None or a list
      of HTTP methods (websocket connections are "GET").
    - ``cost``: an int >= 1, or a function of the request returning one.
    - ``name``: the policy name in the headers (printable ASCII; default
      "limit1", "limit2", ... by position in the middleware).
    - ``exempt``: a predicate on the request; True leaves it uncounted.
    - ``partition_key``: True adds the draft's ``pk`` parameter (the key as
      a byte sequence) to the RateLimit fields. It reveals the key (e.g. the
      client's address as the server sees it) to the client."""

    __slots__ = ("limiter", "key", "paths", "methods", "cost", "name", "exempt", "partition_key",
                 "_kind", "_match_path", "_methods", "_q", "_w", "_rate", "_window")

    def __init__(self, limiter: Any, *, key: Optional[KeyFunc] = None,
                 paths: Optional[Iterable[str]] = None, methods: Optional[Iterable[str]] = None,
                 cost: Union[int, Callable[[Request], int]] = 1, name: Optional[str] = None,
                 exempt: Optional[Callable[[Request], bool]] = None,
                 partition_key: bool = False) -> None:
        if isinstance(limiter, (KeyedLimiter, _core.KeyedLimiter)):
            self._kind = _KEYED
        elif _is_redis(limiter):
            self._kind = _REDIS
        elif isinstance(limiter, (_core._Limiter, _core.KeyedLimiterView)):
            self._kind = _SHARED
            if key is not None:
                raise TypeError("key: a key function needs a KeyedLimiter or a RedisRateLimiter "
                                f"(one limit per key), not {type(limiter).__name__}")
        else:
            raise TypeError(f"limiter must be a pyresilience limiter, a KeyedLimiter or a "
                            f"RedisRateLimiter, not {type(limiter).__name__}: {limiter!r}")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a function of the request, not {type(key).__name__}: {key!r}")
        if self._kind != _SHARED and key is None:
            key = client_ip()
        if callable(cost):
            pass
        elif isinstance(cost, bool) or not isinstance(cost, int):
            raise TypeError(f"cost must be an int or a function of the request, not "
                            f"{type(cost).__name__}: {cost!r}")
        elif cost < 1:
            raise ValueError(f"cost must be >= 1, got {cost!r}")
        if exempt is not None and not callable(exempt):
            raise TypeError(f"exempt must be a predicate on the request, not {type(exempt).__name__}")
        if name is not None:
            _policy_name(name)
        if methods is not None:
            if isinstance(methods, str):
                methods = [methods]
            self._methods: Optional[frozenset[str]] = frozenset(m.upper() for m in methods)
        else:
            self._methods = None
        self.limiter = limiter
        self.key = key
        self.paths = None if paths is None else tuple([paths] if isinstance(paths, str) else paths)
        self.methods = methods
        self.cost = cost
        self.name = name
        self.exempt = exempt
        self.partition_key = bool(partition_key)
        self._match_path = _path_matcher(self.paths)
        self._q, self._w, self._rate, self._window = _shape(limiter)

    def __repr__(self) -> str:
        return (f"Limit({self.limiter!r}, key={self.key!r}, paths={self.paths!r}, "
                f"methods={self.methods!r}, cost={self.cost!r}, name={self.name!r})")


# -- the decision engine ----------------------------------------------------------

def _whole_seconds(s: float) -> int:
    return max(0, ceil(s))


def _sf_bytes(key: Key) -> str:
    b = key.encode() if isinstance(key, str) else bytes(key)
    return ":" + base64.b64encode(b).decode("ascii") + ":"


class _Rule:
    """A Limit compiled for one engine: its name and header templates in the
    engine's string type (bytes for ASGI, str for WSGI)."""

    __slots__ = ("limit", "name", "kind", "limiter", "keyf", "match_path", "methods", "exempt",
                 "cost", "cost_fn", "q", "rate", "window", "pk", "policy", "limit_pair",
                 "item", "item_t", "item_never")

    def __init__(self, limit: Limit, name: str, enc: Callable[[str], Any]) -> None:
        self.limit = limit
        self.name = name
        self.kind = limit._kind
        self.limiter = limit.limiter
        self.keyf = limit.key
        self.match_path = limit._match_path
        self.methods = limit._methods
        self.exempt = limit.exempt
        self.cost_fn = limit.cost if callable(limit.cost) else None
        self.cost = 1 if callable(limit.cost) else limit.cost
        self.q = limit._q
        self.rate = limit._rate
        self.window = limit._window
        self.pk = limit.partition_key
        item = _policy_name(name)
        pol = item + f";q={limit._q}"
        if limit._w is not None:
            pol += f";w={max(1, ceil(limit._w))}"
        self.policy = pol  # str: joined per matched set, then encoded
        self.limit_pair = (enc("X-RateLimit-Limit"), enc(str(limit._q)))
        self.item = item
        self.item_t = enc(item + ";r=%d;t=%d")
        self.item_never = enc(item + ";r=%d")


_available = attrgetter("available")

# A matched rule: (rule, key or None, cost)
Match = Tuple[_Rule, Optional[Key], int]


class Outcome:
    """A denial: the response ``headers`` (name, value), the ``decision``
    behind it (a Decision), the names of the ``violated`` rules and
    ``retry_after`` (seconds; math.inf when the request can never be
    admitted)."""

    __slots__ = ("headers", "decision", "violated", "retry_after")

    def __init__(self, headers: List[Tuple[Any, Any]], decision: Decision,
                 violated: Sequence[str], retry_after: float) -> None:
        self.headers = headers
        self.decision = decision
        self.violated = violated
        self.retry_after = retry_after


_REASONS = {429: "Too Many Requests", 503: "Service Unavailable"}


def status_line(status: int) -> str:
    """The WSGI status line for ``status``."""
    from http import HTTPStatus
    try:
        return f"{status} {_REASONS.get(status) or HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def problem(status: int, type_: str, title: str, detail: str, **extra: Any) -> bytes:
    """An RFC 9457 problem details body (JSON bytes)."""
    body: Dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update(extra)
    return json.dumps(body, separators=(",", ":")).encode()


def _enc_bytes(s: str) -> bytes:
    return s.encode("latin-1")


def _enc_str(s: str) -> str:
    return s


class Engine:
    """Engine(limits, *, headers="both", reset="epoch", on_limited=None, raw=False)

    The rules of one middleware and their all-or-nothing decision, shared by
    the ASGI and WSGI middleware and the per-route forms. ``raw=True`` makes
    header names (lower case) and values bytes, as ASGI wants.

    - ``fast``: None, or (one rule, no filter, no key) a function of no
      argument deciding a request: the headers list when admitted, an
      :class:`Outcome` when denied;
    - ``match(request)``: the rules counting a request, with keys and costs;
    - ``decide(matched)``: take every matched rule's cost, all or nothing:
      the headers list when admitted, an :class:`Outcome` when denied;
    - ``remote(matched)``: True when deciding does network I/O (a Redis rule:
      the ASGI forms then decide in a worker thread);
    - ``denied_response(request, outcome)``: (status, headers, body)."""

    __slots__ = ("limits", "headers", "reset", "on_limited", "raw", "fast", "_rules", "_legacy",
                 "_draft", "_both", "_epoch", "_enc", "_n_rem", "_n_reset", "_n_rl", "_n_pol", "_d",
                 "_policies", "_groups", "_any_remote", "_any_pk", "_plan", "_n_ra", "_n_ct", "_n_len",
                 "_bodies")

    def __init__(self, limits: Union[Limit, Iterable[Limit]], *, headers: str = "both",
                 reset: str = "epoch", on_limited: Optional[OnLimited] = None,
                 raw: bool = False) -> None:
        if isinstance(limits, Limit):
            limits = [limits]
        if isinstance(limits, (str, bytes)) or not isinstance(limits, Iterable):
            raise TypeError(f"limits must be a Limit or a list of Limit rules, not "
                            f"{type(limits).__name__}: {limits!r}")
        given = list(limits)
        if not given:
            raise ValueError("limits: at least one Limit is needed")
        for i, r in enumerate(given):
            if not isinstance(r, Limit):
                raise TypeError(f"limits must be Limit rules, item {i} is {type(r).__name__}: {r!r}")
        if headers not in ("legacy", "draft", "both", "none"):
            raise ValueError(f'headers must be "legacy", "draft", "both" or "none", got {headers!r}')
        if reset not in ("epoch", "delta"):
            raise ValueError(f'reset must be "epoch" or "delta", got {reset!r}')
        if on_limited is not None and not callable(on_limited):
            raise TypeError(f"on_limited must be a function (request, decision), not "
                            f"{type(on_limited).__name__}")
        enc: Callable[[str], Any] = _enc_bytes if raw else _enc_str
        names = set()
        rules = []
        for i, r in enumerate(given):
            n = r.name if r.name is not None else f"limit{i + 1}"
            if n in names:
                raise ValueError(f"limits: two rules are named {n!r}")
            names.add(n)
            rules.append(_Rule(r, n, enc))
        self.limits = tuple(given)
        self.headers = headers
        self.reset = reset
        self.on_limited = on_limited
        self.raw = raw
        self._rules = tuple(rules)
        self._plan = tuple((r, r.methods, r.match_path, r.exempt, r.keyf, r.cost, r.cost_fn)
                           for r in rules)
        self._legacy = headers in ("legacy", "both")
        self._draft = headers in ("draft", "both")
        self._both = headers == "both"
        self._epoch = reset == "epoch"
        self._enc = enc

        def low(name: str) -> str:
            return name.lower() if raw else name
        self._n_rem = enc(low("X-RateLimit-Remaining"))
        self._n_reset = enc(low("X-RateLimit-Reset"))
        self._n_rl = enc(low("RateLimit"))
        self._n_pol = enc(low("RateLimit-Policy"))
        for rr in rules:
            rr.limit_pair = (enc(low("X-RateLimit-Limit")), rr.limit_pair[1])
        self._d = enc("%d")
        self._n_ra = enc(low("Retry-After"))
        self._n_ct = enc(low("Content-Type"))
        self._n_len = enc(low("Content-Length"))
        self._bodies: Dict[Tuple[Tuple[str, ...], int], Tuple[bytes, List[Tuple[Any, Any]]]] = {}
        self._policies: Dict[Tuple[_Rule, ...], Any] = {}
        self._groups: Dict[Tuple[Match, ...], Tuple[LimiterGroup, List[Any], Any]] = {}
        self._any_remote = any(rr.kind == _REDIS for rr in rules)
        self._any_pk = any(rr.pk for rr in rules)
        r0 = rules[0]
        self.fast: Optional[Callable[[], Union[List[Tuple[Any, Any]], Outcome]]] = None
        if (len(rules) == 1 and r0.kind == _SHARED and r0.match_path is None
                and r0.methods is None and r0.exempt is None and r0.cost_fn is None):
            check, cost, policy, build = r0.limiter.check, r0.cost, enc(r0.policy), self._build

            def fast() -> Union[List[Tuple[Any, Any]], Outcome]:
                d = check(cost)
                if d.allowed:
                    return build(r0, None, d.remaining, d.reset_after, policy)
                return self._denied(d, [(r0, None, d.remaining, d.reset_after)], 0, d.retry_after,
                                    [(r0, None, cost)])
            self.fast = fast
            if self._both and not r0.pk:  # the common case, inlined
                lim, n_rem, n_reset, n_rl, n_pol = r0.limit_pair, self._n_rem, self._n_reset, self._n_rl, self._n_pol
                fmt, item_t, epoch = self._d, r0.item_t, self._epoch

                def fast_both() -> Union[List[Tuple[Any, Any]], Outcome]:
                    d = check(cost)
                    reset = d.reset_after
                    if d.allowed and reset < _NEVER_S:
                        remaining = d.remaining
                        t = ceil(reset)
                        return [lim, (n_rem, fmt % remaining),
                                (n_reset, fmt % (ceil(_time() + reset) if epoch else t)),
                                (n_rl, item_t % (remaining, t)), (n_pol, policy)]
                    if d.allowed:
                        return build(r0, None, d.remaining, reset, policy)
                    return self._denied(d, [(r0, None, d.remaining, reset)], 0, d.retry_after,
                                        [(r0, None, cost)])
                self.fast = fast_both

    # -- matching ---------------------------------------------------------------

    def match(self, req: Request) -> List[Match]:
        """The rules counting ``req``, with their keys and costs."""
        out: List[Match] = []
        method = path = None
        for r, methods, match_path, exempt, keyf, cost, cost_fn in self._plan:
            if methods is not None:
                if method is None:
                    method = req.method
                if method not in methods:
                    continue
            if match_path is not None:
                if path is None:
                    path = req.path
                if not match_path(path):
                    continue
            if exempt is not None and exempt(req):
                continue
            k: Optional[Key] = None
            if keyf is not None:
                k = keyf(req)
                if k is None:
                    continue
            if cost_fn is not None:
                cost = cost_fn(req)
                if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
                    raise ValueError(f"cost function of rule {r.name!r} returned {cost!r}, "
                                     "not an int >= 0")
                if cost == 0:
                    continue
            out.append((r, k, cost))
        return out

    def remote(self, matched: List[Match]) -> bool:
        """True when deciding ``matched`` does network I/O (a Redis rule)."""
        return self._any_remote and any(m[0].kind == _REDIS for m in matched)

    # -- deciding ---------------------------------------------------------------

    def decide(self, matched: List[Match]) -> Union[List[Tuple[Any, Any]], Outcome]:
        """Take every matched rule's cost, all or nothing: the headers to add
        when admitted, an Outcome when denied."""
        if len(matched) != 1:
            return self._decide_many(matched)
        r, k, cost = matched[0]
        d = r.limiter.check(cost) if r.kind == _SHARED else r.limiter.check(k, cost)
        if d.allowed:
            return self._build(r, k, d.remaining, d.reset_after, self._policy(matched))
        return self._denied(d, [(r, k, d.remaining, d.reset_after)], 0, d.retry_after, matched)

    def _policy(self, matched: List[Match]) -> Any:
        """The RateLimit-Policy value of a matched set."""
        if self._any_pk:
            return self._enc(", ".join(
                r.policy + (";pk=" + _sf_bytes(k) if r.pk and k is not None else "")
                for r, k, _ in matched))
        ident = tuple([m[0] for m in matched])
        v = self._policies.get(ident)
        if v is None:
            v = self._policies[ident] = self._enc(", ".join(r.policy for r in ident))
        return v

    def _local_state(self, r: _Rule, member: Any) -> Tuple[int, float]:
        avail = member.available
        remaining = int(avail) if avail > 0 else 0
        if r.window:
            reset = member.peek(1).reset_after
        elif r.rate > 0:
            reset = (r.q - avail) / r.rate if avail < r.q else 0.0
        else:
            reset = 0.0 if avail >= r.q else math.inf
        return remaining, reset

    def _decide_many(self, matched: List[Match]) -> Union[List[Tuple[Any, Any]], Outcome]:
        if self._any_remote:
            return self._decide_mixed(matched)
        # in-process rules, one cost: one LimiterGroup (cached per rules, keys and costs)
        ident = tuple(matched)
        cached = self._groups.get(ident)
        if cached is None:
            cost = matched[0][2]
            if any(m[2] != cost for m in matched) or len(
                    {(id(r.limiter), k.encode() if isinstance(k, str) else k) for r, k, _ in matched}
            ) != len(matched):  # different costs, or one limiter in two rules
                return self._decide_mixed(matched)
            members = [r.limiter.for_key(k) if r.kind == _KEYED else r.limiter for r, k, _ in matched]
            if len(self._groups) >= 4096:
                self._groups.clear()
            cached = self._groups[ident] = (LimiterGroup(*members), members, self._policy(matched))
        g, members, policy = cached
        d = g.check(matched[0][2])
        if not d.allowed:
            return self._denied_at(d, matched, matched, members, None, matched[d.denied_by or 0])
        # the most restrictive: least remaining, then longest reset
        avails = list(map(_available, members))
        low = min(avails)
        best_i = avails.index(low)
        if avails.count(low) == 1:
            r = matched[best_i][0]
            mem = members[best_i]
            rem = int(low) if low > 0 else 0
            if r.window:
                reset = mem.peek(1).reset_after
            elif r.rate > 0:
                reset = (r.q - low) / r.rate if low < r.q else 0.0
            else:
                reset = 0.0 if low >= r.q else math.inf
        else:
            rem, reset = -1, -1.0
            for i, a in enumerate(avails):
                if a == low:
                    st = self._local_state(matched[i][0], members[i])
                    if st[1] > reset:
                        best_i, (rem, reset) = i, st
        r, k, _ = matched[best_i]
        return self._build(r, k, rem, reset, policy)

    @staticmethod
    def _merge(items: List[Tuple[Any, Optional[Key], int, Any]]) -> List[List[Any]]:
        """[member, summed cost, index of its first item] per distinct limiter
        state: two rules over one limiter (or one key of one KeyedLimiter)
        each take their cost from it."""
        out: Dict[Any, List[Any]] = {}
        for i, (lim, k, c, mem) in enumerate(items):
            ident = (id(lim), k.encode() if isinstance(k, str) else k)
            e = out.get(ident)
            if e is None:
                out[ident] = [mem, c, i]
            else:
                e[1] += c
        return list(out.values())

    def _decide_mixed(self, matched: List[Match]) -> Union[List[Tuple[Any, Any]], Outcome]:
        local = [m for m in matched if m[0].kind != _REDIS]
        remote = [m for m in matched if m[0].kind == _REDIS]
        members = [r.limiter.for_key(k) if r.kind == _KEYED else r.limiter for r, k, _ in local]
        units = self._merge([(r.limiter, k if r.kind == _KEYED else None, c, mem)
                             for (r, k, c), mem in zip(local, members)])
        # 1. remote rules are taken only when every local one would admit
        if remote and local:
            for mem, c, i in units:
                p = mem.peek(c)
                if not p.allowed:
                    return self._denied_at(p, matched, local, members, None, local[i])
        rd: Optional[Decision] = None
        if remote:
            runits = self._merge([(r.limiter, k, c, r.limiter) for r, k, c in remote])
            if len(runits) == 1:
                r, k, _ = remote[0]
                rd = r.limiter.check(k, runits[0][1])
            else:
                from .redis import RedisLimiterGroup
                rd = RedisLimiterGroup([(lim, cast(Key, remote[i][1]), c) for lim, c, i in runits]).check()
            if not rd.allowed:
                bi = runits[rd.denied_by][2] if rd.denied_by is not None and len(runits) > 1 else 0
                return self._denied_at(rd, matched, local, members, rd, remote[bi])
        # 2. the local rules, as one group
        if local:
            bad_i = 0
            if len(units) == 1:
                ld = units[0][0].check(units[0][1])
            elif all(u[1] == units[0][1] for u in units):
                ld = LimiterGroup(*[u[0] for u in units]).check(units[0][1])
                bad_i = units[ld.denied_by or 0][2]
            else:
                # different costs: every limiter is asked first (nothing taken), then taken
                # (two requests racing between the steps may take from some rules and be
                # denied by another: under-admission, never over-admission)
                first: Optional[Decision] = None
                for mem, c, i in units:
                    p = mem.peek(c)
                    if not p.allowed:
                        first, bad_i = p, i
                        break
                if first is None:
                    for mem, c, i in units:
                        first = mem.check(c)
                        if not first.allowed:
                            bad_i = i
                            break
                assert first is not None
                ld = first
            if not ld.allowed:
                return self._denied_at(ld, matched, local, members, rd, local[bad_i])
        states = self._states(matched, local, members, rd)
        best = states[0]
        for s in states:
            if s[2] < best[2] or (s[2] == best[2] and s[3] > best[3]):
                best = s
        return self._build(best[0], best[1], best[2], best[3], self._policy(matched))

    def _states(self, matched: List[Match], local: List[Match], members: List[Any],
                remote_d: Optional[Decision]) -> List[Tuple[_Rule, Optional[Key], int, float]]:
        out = []
        by_rule = {id(m[0]): mem for m, mem in zip(local, members)}
        n_remote = len(matched) - len(local)
        for r, k, _ in matched:
            if r.kind == _REDIS:
                if remote_d is not None and n_remote == 1:
                    out.append((r, k, remote_d.remaining, remote_d.reset_after))
                else:  # the member's own state: a peek (what 1 more would leave)
                    p = r.limiter.peek(k, 1)
                    reset = p.reset_after
                    if p.allowed and not r.window and r.rate > 0:
                        reset = max(0.0, reset - 1 / r.rate)
                    out.append((r, k, p.remaining + 1 if p.allowed else 0, reset))
            else:
                rem, reset = self._local_state(r, by_rule[id(r)])
                out.append((r, k, rem, reset))
        return out

    def _denied_at(self, d: Decision, matched: List[Match], local: List[Match], members: List[Any],
                   rd: Optional[Decision], bad: Match) -> Outcome:
        states = self._states(matched, local, members, rd)
        vi = next(i for i, m in enumerate(matched) if m[0] is bad[0])
        return self._denied(d, states, vi, d.retry_after, matched)

    def _denied(self, d: Decision, states: List[Tuple[_Rule, Optional[Key], int, float]], vi: int,
                retry_after: float, matched: List[Match]) -> Outcome:
        if retry_after >= _NEVER_S:
            retry_after = math.inf
        r, k, _, reset = states[vi]  # the violated rule leads the headers, remaining 0
        if math.isinf(retry_after):
            reset = math.inf
        hs = self._build(r, k, 0, reset, self._policy(matched))
        return Outcome(hs, d, [r.name], retry_after)

    # -- headers ----------------------------------------------------------------

    def _build(self, r: _Rule, k: Optional[Key], remaining: int, reset: float,
               policy: Any) -> List[Tuple[Any, Any]]:
        out: List[Tuple[Any, Any]] = []
        if reset >= _NEVER_S:  # never: no reset to announce
            if self._legacy:
                out.append(r.limit_pair)
                out.append((self._n_rem, self._d % remaining))
            if self._draft:
                item = r.item_never % remaining
                if r.pk and k is not None:
                    item += self._enc(";pk=" + _sf_bytes(k))
                out.append((self._n_rl, item))
                out.append((self._n_pol, policy))
            return out
        t = ceil(reset) if reset > 0 else 0
        if self._both and not r.pk:
            return [r.limit_pair, (self._n_rem, self._d % remaining),
                    (self._n_reset, self._d % (ceil(_time() + reset) if self._epoch else t)),
                    (self._n_rl, r.item_t % (remaining, t)), (self._n_pol, policy)]
        if self._legacy:
            out.append(r.limit_pair)
            out.append((self._n_rem, self._d % remaining))
            out.append((self._n_reset, self._d % (ceil(_time() + reset) if self._epoch else t)))
        if self._draft:
            item = r.item_t % (remaining, t)
            if r.pk and k is not None:
                item += self._enc(";pk=" + _sf_bytes(k))
            out.append((self._n_rl, item))
            out.append((self._n_pol, policy))
        return out

    # -- the denial ---------------------------------------------------------------

    def denied_response(self, req: Request, outcome: Outcome) -> Tuple[int, List[Tuple[Any, Any]], bytes]:
        """(status, headers, body) answering a denied request: on_limited's
        answer if it gives one, else 429 with Retry-After and an RFC 9457
        problem body. Headers are pairs of the engine's string type (bytes
        with lower-case names when ``raw``), Content-Length included."""
        enc = self._enc
        hs = list(outcome.headers)
        if self.on_limited is not None:
            custom = self.on_limited(req, outcome.decision)
            if custom is not None:
                status, extra, body = custom
                pairs = list(extra.items()) if isinstance(extra, Mapping) else list(extra)
                names = {str(n).lower() for n, _ in pairs}
                if self.raw:
                    hs = [h for h in hs if h[0].decode("latin-1") not in names]
                    hs += [(enc(str(n).lower()), enc(str(v))) for n, v in pairs]
                else:
                    hs = [h for h in hs if h[0].lower() not in names] + [(str(n), str(v)) for n, v in pairs]
                if isinstance(body, str):
                    body = body.encode()
                body = bytes(body)
                if "content-length" not in names:
                    hs.append((self._n_len, enc(str(len(body)))))
                return int(status), hs, body
        ra = outcome.retry_after
        secs = -1 if math.isinf(ra) else max(1, _whole_seconds(ra))
        key = (tuple(outcome.violated), secs)
        cached = self._bodies.get(key)
        if cached is None:
            if secs < 0:
                detail = ("This request can never be admitted: it exceeds a quota that does not "
                          "refill (or its cost exceeds the quota).")
            else:
                detail = f"Rate limit exceeded; retry in {secs} s."
            body = problem(429, QUOTA_EXCEEDED,
                           "Request cannot be satisfied as assigned quota has been exceeded",
                           detail, **{"violated-policies": list(outcome.violated)})
            tail = [(self._n_ra, enc(str(secs)))] if secs >= 0 else []
            tail += [(self._n_ct, enc("application/problem+json")), (self._n_len, enc(str(len(body))))]
            if len(self._bodies) >= 1024:
                self._bodies.clear()
            cached = self._bodies[key] = (body, tail)
        hs += cached[1]
        return 429, hs, cached[0]


def busy_response(retry_after: Optional[float]) -> Tuple[int, HeaderList, bytes]:
    """(status, headers, body) of a request refused by a full bulkhead: 503,
    Retry-After (the bulkhead's estimate; 1 s when it has none)."""
    ra = 1.0 if retry_after is None or not math.isfinite(retry_after) else retry_after
    secs = max(1, _whole_seconds(ra))
    body = problem(503, TEMPORARY_REDUCED_CAPACITY, "Service Unavailable",
                   f"The server is at its concurrency limit; retry in {secs} s.")
    return 503, [("Retry-After", str(secs)), ("Content-Type", "application/problem+json"),
                 ("Content-Length", str(len(body)))], body
