"""RedisIdempotencyStore: idempotency records on Redis, one atomic script per step.

A record is one Redis hash, ``<key_prefix>{<key>}`` (one hash tag per record:
every script touches one key, so Redis Cluster routes it whole), with fields
``s`` (``p`` in progress, ``d`` done), ``t`` (the owner token), ``f`` (the
payload fingerprint) and ``v`` (the stored outcome). The key's TTL is the
lease while in progress and the retention once done: every key expires.
A stored-result hit is one round trip (BEGIN returns the outcome); a first
call two (BEGIN, COMPLETE).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, List, Tuple

from .errors import BackendError
from .idempotency import ACQUIRED, BUSY, DONE, OK, RAISED, BeginResult, Serializer

__all__ = ["RedisIdempotencyStore"]

_BEGIN = b"""
local r = redis.call('HMGET', KEYS[1], 's', 'f', 'v')
if r[1] then return {r[1], r[2], r[3]} end
redis.call('HSET', KEYS[1], 's', 'p', 't', ARGV[2], 'f', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'a'}
"""

_COMPLETE = b"""
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'p' or r[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 's', 'd', 'v', ARGV[2], 't', '')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RENEW = b"""
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'p' or r[2] ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE = b"""
local r = redis.call('HMGET', KEYS[1], 's', 't')
if r[1] ~= 'p' or r[2] ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

_SHA = {s: hashlib.sha1(s).hexdigest().encode() for s in (_BEGIN, _COMPLETE, _RENEW, _RELEASE)}


def _ms(seconds: float) -> bytes:
    return str(max(1, int(seconds * 1000))).encode()


class RedisIdempotencyStore:
    """RedisIdempotencyStore(backend, key_prefix='prs:idem:', *, serializer=json)

    Idempotency records on Redis (a :class:`~pyresilience.RedisBackend`):
    atomic Lua scripts, owner tokens, a TTL on every key, one hash tag per
    record (Redis Cluster safe). Results are stored through ``serializer``
    (``dumps``/``loads``; JSON by default, so a result comes back as JSON
    gives it back). Unpickling data from a shared store runs code chosen by
    whoever can write it: use ``pickle`` only on a Redis you trust. A stored
    exception comes back as a RuntimeError naming it."""

    local = False

    def __init__(self, backend: Any, key_prefix: str = "prs:idem:", *,
                 serializer: Serializer = json) -> None:  # type: ignore[assignment]
        if not callable(getattr(backend, "_command", None)):
            raise TypeError(f"backend must be a RedisBackend, got {backend!r}")
        if not isinstance(key_prefix, str):
            raise TypeError(f"key_prefix must be a str, got {key_prefix!r}")
        if not (callable(getattr(serializer, "dumps", None))
                and callable(getattr(serializer, "loads", None))):
            raise TypeError(f"serializer must have dumps() and loads(), got {serializer!r}")
        self.backend = backend
        self.key_prefix = key_prefix
        self.serializer = serializer

    def __repr__(self) -> str:
        return f"RedisIdempotencyStore({self.backend!r}, key_prefix={self.key_prefix!r})"

    def redis_key(self, key: str) -> bytes:
        """The Redis key of ``key``'s record (its hash tag is the whole key)."""
        return f"{self.key_prefix}{{{key}}}".encode()

    # -- encoding ------------------------------------------------------------

    def _encode(self, outcome: Any) -> bytes:
        kind, value = outcome
        if kind == RAISED:
            data: Any = f"{type(value).__name__}: {value}"
            return b"e" + str(data).encode()
        data = self.serializer.dumps(value)
        return b"o" + (data.encode() if isinstance(data, str) else bytes(data))

    def _decode(self, raw: bytes) -> Tuple[int, Any]:
        if raw[:1] == b"e":
            return (RAISED, raw[1:].decode("utf-8", "replace"))
        return (OK, self.serializer.loads(raw[1:]))

    def _begin_result(self, r: Any, fingerprint: Any) -> BeginResult:
        if r[0] == b"a":
            return (ACQUIRED, fingerprint, None)
        fp = r[1].decode() if isinstance(r[1], bytes) else r[1]
        if fp == str(fingerprint):
            fp = fingerprint
        if r[0] == b"d":
            return (DONE, fp, self._decode(r[2]))
        return (BUSY, fp, None)

    # -- sync ----------------------------------------------------------------

    def _eval(self, script: bytes, key: str, *argv: bytes) -> Any:
        b = self.backend
        rkey = self.redis_key(key)
        try:
            return b._command("EVALSHA", _SHA[script], 1, rkey, *argv)
        except BackendError as e:
            if "NOSCRIPT" not in str(e):
                raise
            return b._command("EVAL", script, 1, rkey, *argv)

    def begin(self, key: str, fingerprint: Any, token: str, lease: float) -> BeginResult:
        r = self._eval(_BEGIN, key, str(fingerprint).encode(), token.encode(), _ms(lease))
        return self._begin_result(r, fingerprint)

    def complete(self, key: str, token: str, outcome: Any, ttl: float) -> bool:
        return bool(self._eval(_COMPLETE, key, token.encode(), self._encode(outcome), _ms(ttl)))

    def renew(self, key: str, token: str, lease: float) -> bool:
        return bool(self._eval(_RENEW, key, token.encode(), _ms(lease)))

    def release(self, key: str, token: str) -> bool:
        return bool(self._eval(_RELEASE, key, token.encode()))

    def wait(self, key: str, timeout: float) -> None:
        # Redis has no wake-up for us here: one short poll slice
        time.sleep(min(timeout, 0.01))

    def delete(self, key: str) -> None:
        """Forget ``key``'s record, whoever owns it."""
        self.backend._command("DEL", self.redis_key(key))

    # -- async (the event loop's own connection) ----------------------------

    async def _eval_async(self, script: bytes, key: str, *argv: bytes) -> Any:
        from . import _redis_async
        rkey = self.redis_key(key)
        args: List[bytes] = [b"1", rkey, *argv]
        try:
            r = await _redis_async.command(self.backend, [b"EVALSHA", _SHA[script], *args])
            if isinstance(r, _redis_async.RespError) and str(r).startswith("NOSCRIPT"):
                r = await _redis_async.command(self.backend, [b"EVAL", script, *args])
        except _redis_async._TransportFailure as e:
            raise BackendError(str(e)) from None
        if isinstance(r, Exception):
            raise BackendError(f"redis: {r}")
        return r

    async def begin_async(self, key: str, fingerprint: Any, token: str,
                          lease: float) -> BeginResult:
        r = await self._eval_async(_BEGIN, key, str(fingerprint).encode(), token.encode(),
                                   _ms(lease))
        return self._begin_result(r, fingerprint)

    async def complete_async(self, key: str, token: str, outcome: Any, ttl: float) -> bool:
        return bool(await self._eval_async(_COMPLETE, key, token.encode(), self._encode(outcome),
                                           _ms(ttl)))

    async def renew_async(self, key: str, token: str, lease: float) -> bool:
        return bool(await self._eval_async(_RENEW, key, token.encode(), _ms(lease)))

    async def release_async(self, key: str, token: str) -> bool:
        return bool(await self._eval_async(_RELEASE, key, token.encode()))

    async def wait_async(self, key: str, timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.01))


