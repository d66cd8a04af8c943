"""Events and names of the Redis limiters, against a real redis-server (issue 16)."""
import os
import uuid

import pytest

import pyresilience as pr
from pyresilience import _core

if os.environ.get("PRS_SKIP_REDIS") or not _core.HAVE_REDIS:
    pytest.skip("no Redis here (test_redis.py says why)", allow_module_level=True)

from test_redis import Server  # noqa: E402  the same throwaway server


@pytest.fixture(scope="module")
def backend():
    s = Server()
    s.start()
    b = pr.RedisBackend(s.url, timeout=2.0, connect_timeout=2.0)
    yield b
    b.close()
    s.stop()


def test_redis_limiter_name_and_rejection_events(backend):
    lim = pr.RedisRateLimiter(backend, "fixed_window", limit=1, window=60,
                              key_prefix=f"obs-{uuid.uuid4().hex}:")
    assert lim.name.startswith("RedisRateLimiter-")
    lim.name = "edge"
    seen = []
    lim.add_event_listener(seen.append)
    assert lim.allow("k")
    assert not lim.allow("k")
    assert not lim.check("k").allowed
    with pytest.raises(pr.RateLimitExceeded):
        lim.acquire("k", timeout=0)
    assert [(e.kind, e.name, e.pattern) for e in seen] == [("rejected", "edge", "redis")] * 3
    lim.remove_event_listener(seen.append)
    assert type(lim) is pr.RedisRateLimiter
