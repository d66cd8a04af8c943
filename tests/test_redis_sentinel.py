"""The Redis limiters behind Redis Sentinel, against real processes (never a
mock): one redis-server master, one replica and two ``redis-server
--sentinel`` instances, started here on free 127.0.0.1 ports and stopped by
PID at the end.

``redis+sentinel://host:port[,host:port]/service_name`` asks the sentinels
for the master (SENTINEL get-master-addr-by-name), sends everything there,
and asks again after a connection failure or when the master answers
READONLY (a failover made it a replica: nothing was written, so the call is
sent again to the master named now) - blocking and asyncio alike.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Callable, Iterator, List

import pytest

import pyresilience as pr
from pyresilience import _core

if os.environ.get("PRS_SKIP_REDIS"):
    pytest.skip("PRS_SKIP_REDIS is set", allow_module_level=True)
if not _core.HAVE_REDIS:
    pytest.fail("pyresilience was built without hiredis: run `make deps install`", pytrace=False)

SERVICE = "prsmaster"


def _free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _cli(port: int, *args: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, timeout=5)
    return out.stdout.decode().strip()


def _wait(ok: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if ok():
                return
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class Sentinels:
    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None or shutil.which("redis-cli") is None:
            pytest.fail("redis-server / redis-cli are not installed (make deps)", pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="prs-sentinel-")
        self.master, self.replica, *self.sentinels = _free_ports(4)
        self.procs: List[subprocess.Popen[bytes]] = []
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]
        self._start([exe, "--port", str(self.master), *common])
        self._start([exe, "--port", str(self.replica), *common, "--replicaof", "127.0.0.1", str(self.master)])
        _wait(lambda: "master_link_status:up" in _cli(self.replica, "INFO", "replication"), "the replica")
        for port in self.sentinels:
            conf = os.path.join(self.dir, f"sentinel-{port}.conf")
            with open(conf, "w") as f:
                f.write(f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {self.master} 1\n"
                        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                        f"sentinel failover-timeout {SERVICE} 3000\n")
            self._start([exe, conf, "--sentinel"])
        for port in self.sentinels:
            _wait(lambda p=port: f"slave0:ip=127.0.0.1,port={self.replica}" in
                  _cli(p, "INFO", "sentinel") or str(self.replica) in
                  _cli(p, "SENTINEL", "REPLICAS", SERVICE), "the sentinels to see the replica")

    def _start(self, argv: List[str]) -> None:
        self.procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def url(self) -> str:
        return "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinels) + "/" + SERVICE

    def named_master(self) -> int:
        return int(_cli(self.sentinels[0], "SENTINEL", "get-master-addr-by-name", SERVICE).split()[1])

    def failover(self) -> int:
        """SENTINEL FAILOVER: the replica becomes the master, the old master
        its replica (it answers writes with READONLY). The new master's port."""
        old, new = self.master, self.replica
        assert _cli(old, "WAIT", "1", "2000") == "1"  # the replica has every write
        # NOGOODSLAVE until the sentinel has its own INFO from the replica: ask again
        _wait(lambda: _cli(self.sentinels[0], "SENTINEL", "FAILOVER", SERVICE) == "OK", "a promotable replica")
        _wait(lambda: all(int(_cli(p, "SENTINEL", "get-master-addr-by-name", SERVICE).split()[1]) == new
                          for p in self.sentinels), "the sentinels to name the new master")
        _wait(lambda: "role:master" in _cli(new, "INFO", "replication"), "the promotion")
        _wait(lambda: "role:slave" in _cli(old, "INFO", "replication"), "the old master to turn replica")
        self.master, self.replica = new, old
        return new

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def sentinels() -> Iterator[Sentinels]:
    s = Sentinels()
    yield s
    s.stop()


def test_sentinel_url_needs_hosts_and_a_service_name() -> None:
    for bad in ("redis+sentinel://127.0.0.1:26379", "redis+sentinel://127.0.0.1:26379/",
                "redis+sentinel:///mymaster", "redis+sentinel://127.0.0.1:x/mymaster"):
        with pytest.raises((ValueError, pr.BackendError), match="redis\\+sentinel://|service"):
            pr.RedisBackend(bad)


def test_sentinel_decisions_go_to_the_master_and_follow_a_failover(sentinels: Sentinels) -> None:
    """Blocking and asyncio clients on one sentinel URL decide on the master
    the sentinels name; after SENTINEL FAILOVER the old master answers
    READONLY, both ask the sentinels again, and their next decisions land on
    the new master, counting on from where the old one stopped."""
    pfx = f"sn{os.getpid()}:"
    b = pr.RedisBackend(sentinels.url(), timeout=2.0, connect_timeout=1.0)
    lim = pr.RedisRateLimiter(b, "gcra", rate=0.001, burst=10, key_prefix=pfx)
    fw = pr.RedisRateLimiter(b, "fixed_window", limit=10, window=3600, key_prefix=pfx + "fw")
    # A group's keys need no common slot: Sentinel is one server.
    group = pr.RedisLimiterGroup([(lim, "g1", 1), (fw, "g2", 1)])
    first = sentinels.master

    async def decide(n: int) -> List[int]:
        out = []
        for _ in range(n):
            out.append((await lim.check_async("a")).remaining)
            out.append((await fw.check_async("a")).remaining)
            assert (await group.check_async()).allowed
        return out

    assert [lim.check("s").remaining for _ in range(3)] == [9, 8, 7]
    assert [fw.check("s").remaining for _ in range(3)] == [9, 8, 7]
    assert group.check().allowed
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(decide(2)) == [9, 9, 8, 8]
        assert _cli(first, "EXISTS", lim._redis_key("s").decode()) == "1"
        new = sentinels.failover()
        assert new != first and sentinels.named_master() == new
        # The same backend, its connections still open to the old master.
        assert lim.check("s").remaining == 6 and fw.check("s").remaining == 6
        assert loop.run_until_complete(decide(1)) == [7, 7]
        assert group.check().allowed
        assert _cli(new, "EXISTS", lim._redis_key("s").decode()) == "1"
        ds = loop.run_until_complete(lim.check_many_async([("s", 1), ("a", 1)]))
        assert [d.remaining for d in ds] == [5, 6]
        assert loop.run_until_complete(b.ping_async())
    finally:
        loop.close()
        b.close()


def test_sentinel_unreachable_policies(sentinels: Sentinels) -> None:
    """No sentinel answers: each call's on_backend_error decides (blocking and
    asyncio), within the timeout."""
    port = _free_ports(1)[0]
    b = pr.RedisBackend(f"redis+sentinel://127.0.0.1:{port}/{SERVICE}", timeout=0.5, connect_timeout=0.2)
    deny = pr.RedisRateLimiter(b, "gcra", rate=1, burst=1, on_backend_error="deny")
    strict = pr.RedisRateLimiter(b, "gcra", rate=1, burst=1)
    assert not deny.check("k").allowed
    with pytest.raises(pr.BackendError):
        strict.check("k")

    async def main() -> None:
        assert not (await deny.check_async("k")).allowed
        with pytest.raises(pr.BackendError):
            await strict.check_async("k")

    asyncio.run(main())
    b.close()
