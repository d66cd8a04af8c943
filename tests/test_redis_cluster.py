"""The Redis limiters against a real local Redis Cluster (never a mock).

Three primaries (and, for the failover test, a cluster of its own of three
primaries with a replica each), started here on free 127.0.0.1 ports with
``redis-server --cluster-enabled yes`` and joined with
``redis-cli --cluster create``, stopped by PID at the end.

The first tests point a plain backend at the primary that owns a key's
slot and prove that the key layout is Cluster-ready: every key a decision
touches (one per window for fixed_window, two for sliding_window_counter, the
MULTI of the fixed window, a group's script) lies in one slot, that slot is
the one ``prs_redis_key_slot`` computes, and the decisions are exact there.
The rest use ``redis+cluster://`` (slot routing, MOVED/ASK, NOSCRIPT per
node), blocking and asyncio.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Dict, Iterator, List, Tuple

import pytest

import pyresilience as pr
from pyresilience import _core

if os.environ.get("PRS_SKIP_REDIS"):
    pytest.skip("PRS_SKIP_REDIS is set", allow_module_level=True)
if not _core.HAVE_REDIS:
    pytest.fail("pyresilience was built without hiredis: run `make deps install`", pytrace=False)

ALGORITHMS = ["gcra", "token_bucket", "fixed_window", "sliding_window_counter", "sliding_window_log"]


def _free_port_pair(taken: "tuple[int, ...] | list[int]" = ()) -> int:
    """A port p with p and p + 10000 (the cluster bus) both free, and not one
    of `taken` (chosen for another node but not listened on yet)."""
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port + 10000 > 65535 or {port, port - 10000, port + 10000} & set(taken):
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


class Cluster:
    def __init__(self, size: int = 3, replicas: int = 0, node_timeout_ms: int = 2000) -> None:
        self.dir = tempfile.mkdtemp(prefix="prs-cluster-")
        self.ports: List[int] = []
        self.procs: List[subprocess.Popen[bytes]] = []
        exe = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if exe is None or cli is None:
            pytest.fail("redis-server / redis-cli are not installed (make deps)", pytrace=False)
        for i in range(size):
            port = _free_port_pair(self.ports)
            d = os.path.join(self.dir, str(port))
            os.mkdir(d)
            self.procs.append(subprocess.Popen(
                [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", d, "--save", "",
                 "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(node_timeout_ms)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        for port in self.ports:
            self._wait(lambda p=port: self.cli(p, "PING") == "PONG")
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                        "--cluster-replicas", str(replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        for port in self.ports:
            self._wait(lambda p=port: "cluster_state:ok" in self.cli(p, "CLUSTER", "INFO"))
        if replicas:  # every replica known to every node and in sync with its primary
            self._wait(lambda: all(self.cli(p, "CLUSTER", "NODES").count("slave") == len(self.ports) // (replicas + 1)
                                   * replicas for p in self.ports), 30)
            self._wait(lambda: all("master_link_status:up" in self.cli(p, "INFO", "replication")
                                   for p in self.ports if "role:slave" in self.cli(p, "INFO", "replication")), 30)
        self.owner: Dict[int, int] = {}  # slot -> port
        self.replica_of: Dict[int, int] = {}  # replica's port -> its primary's port
        nodes = [line.split() for line in self.cli(self.ports[0], "CLUSTER", "NODES").splitlines()]
        port_of = {f[0]: int(f[1].split(":")[1].split("@")[0]) for f in nodes}
        for f in nodes:
            port = port_of[f[0]]
            if "slave" in f[2]:
                self.replica_of[port] = port_of[f[3]]
            for rng in f[8:]:
                lo, _, hi = rng.partition("-")
                for slot in range(int(lo), int(hi or lo) + 1):
                    self.owner[slot] = port

    @staticmethod
    def _wait(ok: object, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if ok():  # type: ignore[operator]
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.05)
        raise RuntimeError("the Redis Cluster did not come up")

    def cli(self, port: int, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, timeout=5)
        return out.stdout.decode().strip()

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    yield c
    c.stop()


def _slot(c: Cluster, key: bytes) -> int:
    return int(c.cli(c.ports[0], "CLUSTER", "KEYSLOT", key.decode("latin-1")))


def _limiter(b: pr.RedisBackend, algorithm: str, size: int, pfx: str) -> pr.RedisRateLimiter:
    if algorithm in ("gcra", "token_bucket"):
        return pr.RedisRateLimiter(b, algorithm, rate=0.001, burst=size, key_prefix=pfx)
    return pr.RedisRateLimiter(b, algorithm, limit=size, window=3600, key_prefix=pfx)


def _keys_written(c: Cluster, port: int, pfx: str) -> List[Tuple[str, int]]:
    """(key, PTTL) of every key of ours on the node at port."""
    keys = [k for k in c.cli(port, "--no-raw", "KEYS", f"{pfx}*").splitlines() if k]
    keys = [k.split(") ", 1)[-1].strip('"') for k in keys]
    return [(k, int(c.cli(port, "PTTL", k))) for k in keys]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_decision_lives_in_its_keys_slot(cluster: Cluster, algorithm: str) -> None:
    """On the primary that owns the user key's slot (as Cluster computes it for
    the limiter's Redis key), the decisions are exact, every key written is in
    that slot (Redis refuses a command or script across slots) and has a TTL."""
    for i, user in enumerate(("alice", "user:42", "{acct7}global", "x" * 300)):
        pfx = f"c{algorithm[:2]}{os.getpid()}-{i}:"
        probe = pr.RedisBackend(f"redis://127.0.0.1:{cluster.ports[0]}")
        key = _limiter(probe, algorithm, 3, pfx)._redis_key(user)
        probe.close()
        slot = _slot(cluster, key)
        port = cluster.owner[slot]
        with pr.RedisBackend(f"redis://127.0.0.1:{port}", timeout=2.0) as b:
            lim = _limiter(b, algorithm, 3, pfx)
            assert [lim.check(user).allowed for _ in range(4)] == [True, True, True, False], user
            assert not lim.peek(user).allowed
            assert [d.allowed for d in lim.check_many([(user, 1), (user, 1)])] == [False, False]
            written = _keys_written(cluster, port, pfx)
            assert written
            for k, ttl in written:
                assert _slot(cluster, k.encode("latin-1")) == slot, k
                assert ttl > 0, k
            lim.reset(user)
            assert lim.check(user, 3).allowed


def test_a_group_with_one_hash_tag_runs_on_its_slots_primary(cluster: Cluster) -> None:
    pfx = f"cg{os.getpid()}:"
    probe = pr.RedisBackend(f"redis://127.0.0.1:{cluster.ports[0]}")
    slot = _slot(cluster, _limiter(probe, "gcra", 1, pfx)._redis_key("{acct9}user"))
    probe.close()
    with pr.RedisBackend(f"redis://127.0.0.1:{cluster.owner[slot]}", timeout=2.0) as b:
        members = [(_limiter(b, algo, 2, pfx + algo[:2]), "{acct9}" + algo, 1) for algo in ALGORITHMS]
        group = pr.RedisLimiterGroup(members)
        assert group.same_slot
        assert [group.allow() for _ in range(3)] == [True, True, False]
        assert not pr.RedisLimiterGroup([(members[0][0], "a", 1), (members[1][0], "b", 1)]).same_slot


# ---- routing: redis+cluster:// ---------------------------------------------------

def _cluster_backend(c: Cluster) -> pr.RedisBackend:
    return pr.RedisBackend("redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in c.ports[:2]),
                           timeout=2.0, connect_timeout=2.0)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cluster_backend_routes_every_key_to_its_primary(cluster: Cluster, algorithm: str) -> None:
    """Keys spread over the whole slot space (every primary): each decides
    exactly, through check, peek, check_many (split per node) and reset."""
    pfx = f"r{algorithm[:2]}{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        lim = _limiter(b, algorithm, 2, pfx)
        users = [f"user:{i}" for i in range(24)]
        owners = {cluster.owner[_slot(cluster, lim._redis_key(u))] for u in users}
        assert len(owners) == 3  # the keys really span the three primaries
        for u in users:
            assert lim.check(u).allowed
        ds = lim.check_many([(u, 1) for u in users] + [(u, 1) for u in users])
        assert [d.allowed for d in ds] == [True] * len(users) + [False] * len(users)
        assert not any(lim.peek(u).allowed for u in users)
        for u in users:
            lim.reset(u)
        assert all(lim.check(u, 2).allowed for u in users)


def test_cluster_group_on_one_tag_and_refusal_across_slots(cluster: Cluster) -> None:
    pfx = f"rg{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        members = [(_limiter(b, algo, 2, pfx + algo[:2]), "{acct5}" + algo, 1) for algo in ALGORITHMS]
        group = pr.RedisLimiterGroup(members)
        assert [group.allow() for _ in range(3)] == [True, True, False]
        a = members[0][0]
        with pytest.raises(ValueError, match="hash tag"):
            pr.RedisLimiterGroup([(a, "user:1", 1), (a, "user:2", 1)])


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cluster_async_routes_every_key_to_its_primary(cluster: Cluster, algorithm: str) -> None:
    """The asyncio forms on redis+cluster://: every key spread over the three
    primaries decides exactly through check_async, allow_async, peek_async,
    check_many_async (one send per node, all in flight at once) and
    reset_async, and the state is the blocking calls' own."""
    pfx = f"ar{algorithm[:2]}{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        lim = _limiter(b, algorithm, 2, pfx)
        users = [f"user:{i}" for i in range(24)]
        assert len({cluster.owner[_slot(cluster, lim._redis_key(u))] for u in users}) == 3

        async def main() -> None:
            assert all([(await lim.check_async(u)).allowed for u in users])
            ds = await lim.check_many_async([(u, 1) for u in users] + [(u, 1) for u in users])
            assert [d.allowed for d in ds] == [True] * len(users) + [False] * len(users)
            assert not any([(await lim.peek_async(u)).allowed for u in users])
            assert not await lim.allow_async(users[0])
            for u in users:
                await lim.reset_async(u)
            assert all(await asyncio.gather(*[lim.allow_async(u, 2) for u in users]))

        asyncio.run(main())
        assert not any(lim.peek(u).allowed for u in users)  # the same state as the blocking calls see


def test_cluster_async_group_leases_acquire_and_ping(cluster: Cluster) -> None:
    pfx = f"ag{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        members = [(_limiter(b, algo, 2, pfx + algo[:2]), "{acct6}" + algo, 1) for algo in ALGORITHMS]
        group = pr.RedisLimiterGroup(members)
        lim = pr.RedisRateLimiter(b, "gcra", rate=0.001, burst=10, lease=pr.LeaseConfig(5, 60), key_prefix=pfx)
        fast = pr.RedisRateLimiter(b, "gcra", rate=1000, burst=1, key_prefix=pfx + "f")

        async def main() -> None:
            assert [await group.allow_async() for _ in range(3)] == [True, True, False]
            assert (await group.check_async()).denied_by == 0
            assert (await lim.check_async("u")).allowed  # takes a lease of 5 on u's node
            assert (await lim.check_async("u")).allowed  # served by the lease
            await lim.close_async()  # the 3 unspent permits go back to u's node
            await fast.acquire_async("w")
            await fast.acquire_async("w", timeout=1.0)
            assert await b.ping_async()

        asyncio.run(main())
        assert lim.check("u").remaining == 7


def test_cluster_async_reloads_scripts_per_node(cluster: Cluster) -> None:
    """SCRIPT FLUSH on every primary: each node answers NOSCRIPT, the op sends
    EVAL to that node, and the decisions stay exact."""
    pfx = f"an{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        lim = _limiter(b, "sliding_window_log", 2, pfx)
        users = [f"user:{i}" for i in range(12)]

        async def main() -> None:
            assert all([(await lim.check_async(u)).allowed for u in users])
            for p in cluster.ports:
                assert cluster.cli(p, "SCRIPT", "FLUSH") == "OK"
            ds = await lim.check_many_async([(u, 1) for u in users] * 2)
            assert [d.allowed for d in ds] == [True] * 12 + [False] * 12

        asyncio.run(main())


def _migrate(cluster: Cluster, slot: int, finish: bool) -> int:
    """Moves slot's keys to another primary (IMPORTING/MIGRATING, MIGRATE);
    with finish, SETSLOT NODE everywhere. The new owner's port."""
    src = cluster.owner[slot]
    dst = next(p for p in cluster.ports if p != src)
    ids = {p: cluster.cli(p, "CLUSTER", "MYID") for p in cluster.ports}
    assert cluster.cli(dst, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[src]) == "OK"
    assert cluster.cli(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[dst]) == "OK"
    for k in cluster.cli(src, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
        assert cluster.cli(src, "MIGRATE", "127.0.0.1", str(dst), k, "0", "5000") == "OK"
    if finish:
        for p in cluster.ports:
            assert cluster.cli(p, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[dst]) == "OK"
        cluster.owner[slot] = dst
    return dst


def test_cluster_async_follows_ask_then_moved_as_a_slot_migrates(cluster: Cluster) -> None:
    """A slot holding the limiters' keys migrates between async calls: while
    half-migrated (keys moved, slot still the source's) the source answers
    ASK and the op resends after ASKING (the fixed window's whole MULTI block
    too; a lost script as EVAL after ASKING); once the slot is the target's,
    MOVED. No decision is wrong."""
    pfx = f"am{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        lims = [_limiter(b, algo, 4, pfx + algo[:2]) for algo in ALGORITHMS]
        user = "{asker}u"
        slots = {_slot(cluster, lim._redis_key(user)) for lim in lims}
        assert len(slots) == 1
        slot = slots.pop()

        async def check_all() -> List[bool]:
            return [(await lim.check_async(user)).allowed for lim in lims]

        async def main() -> None:
            assert await check_all() == [True] * 5
            dst = _migrate(cluster, slot, finish=False)
            # The sliding window counter's decision reads two keys, one of them
            # absent: a node importing the slot refuses such a command until
            # the migration ends (TRYAGAIN), and on_backend_error decides.
            with pytest.raises(pr.BackendError, match="TRYAGAIN"):
                await lims[3].check_async(user)
            assert [(await lim.check_async(user)).allowed for lim in lims[:3] + lims[4:]] == [True] * 4  # ASK
            ds = await lims[1].check_many_async([(user, 1)])
            assert [d.remaining for d in ds] == [1]
            ids = {p: cluster.cli(p, "CLUSTER", "MYID") for p in cluster.ports}
            for p in cluster.ports:
                assert cluster.cli(p, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[dst]) == "OK"
            cluster.owner[slot] = dst
            ds = [await lim.check_async(user) for lim in lims]  # MOVED, then the map reloads
            assert [d.remaining for d in ds] == [1, 0, 1, 2, 1] and all(d.allowed for d in ds)
            assert await check_all() == [True, False, True, True, True]
            assert cluster.cli(dst, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) != "0"

        asyncio.run(main())


def test_cluster_follows_moved_after_a_slot_migrates(cluster: Cluster) -> None:
    """A slot holding a limiter's key is migrated to another primary between two
    calls (CLUSTER SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE): the next
    call gets MOVED, follows it, and the count continues exactly."""
    pfx = f"rm{os.getpid()}:"
    with _cluster_backend(cluster) as b:
        lim = _limiter(b, "fixed_window", 3, pfx)
        glim = _limiter(b, "gcra", 3, pfx)
        user = "{mover}u"
        assert lim.check(user).allowed and glim.check(user).allowed
        slot = _slot(cluster, lim._redis_key(user))
        src = cluster.owner[slot]
        dst = next(p for p in cluster.ports if p != src)
        ids = {p: cluster.cli(p, "CLUSTER", "MYID") for p in cluster.ports}
        assert cluster.cli(dst, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[src]) == "OK"
        assert cluster.cli(src, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[dst]) == "OK"
        keys = cluster.cli(src, "CLUSTER", "GETKEYSINSLOT", str(slot), "100").split()
        assert keys
        for k in keys:
            assert cluster.cli(src, "MIGRATE", "127.0.0.1", str(dst), k, "0", "5000") == "OK"
        for p in cluster.ports:
            assert cluster.cli(p, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[dst]) == "OK"
        cluster.owner[slot] = dst
        assert [lim.check(user).allowed for _ in range(3)] == [True, True, False]
        assert [glim.check(user).allowed for _ in range(3)] == [True, True, False]
        assert cluster.cli(dst, "CLUSTER", "COUNTKEYSINSLOT", str(slot)) != "0"


# ---- failover: 3 primaries + 3 replicas, a primary killed --------------------------

@pytest.fixture(scope="module")
def replicated_cluster() -> Iterator[Cluster]:
    """Its own cluster (the tests above never see a failover): 3 primaries,
    one replica each, node timeout 1 s so a replica takes over quickly."""
    c = Cluster(size=6, replicas=1, node_timeout_ms=1000)
    yield c
    c.stop()


FAILOVER_TIMEOUT = 0.5  # the backend's whole-call budget
SLACK = 1.0  # scheduling on a loaded 2-core machine; a hang would be far past it


def test_cluster_failover_sync_and_async_keep_deciding(replicated_cluster: Cluster) -> None:
    """A primary (also the first seed of the URL) is SIGKILLed while three
    threads (blocking calls) and an asyncio task keep deciding on keys of
    every primary, under on_backend_error "deny" and "allow": every call
    returns within its timeout, nothing raises, and decisions on the dead
    primary's slots come back (its replica promoted) within 10 s of the kill,
    for the blocking and the async calls alike."""
    c = replicated_cluster
    primaries = sorted(set(c.owner.values()))
    assert len(primaries) == 3 and len(c.replica_of) == 3
    victim = primaries[0]
    seeds = [victim] + primaries[1:]  # the dead node is the first seed: the map comes from the others
    pfx = f"fo{os.getpid()}:"
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in seeds)
    # The blocking and the async calls on backends of their own: each reloads its own map.
    b = pr.RedisBackend(url, timeout=FAILOVER_TIMEOUT, connect_timeout=FAILOVER_TIMEOUT)
    ba = pr.RedisBackend(url, timeout=FAILOVER_TIMEOUT, connect_timeout=FAILOVER_TIMEOUT)

    def limiters(be: pr.RedisBackend) -> Tuple[pr.RedisRateLimiter, pr.RedisRateLimiter]:
        # A huge burst: a "deny" limiter's call is allowed exactly when Redis decided it.
        return (pr.RedisRateLimiter(be, "gcra", rate=1000, burst=10**9, key_prefix=pfx + "d",
                                    on_backend_error="deny"),
                pr.RedisRateLimiter(be, "fixed_window", limit=10**9, window=3600, key_prefix=pfx + "a",
                                    on_backend_error="allow"))

    deny, allow = limiters(b)
    adeny, aallow = limiters(ba)
    users = [f"user:{i}" for i in range(30)]
    on_victim = {u for u in users if c.owner[_slot(c, deny._redis_key(u))] == victim}
    assert on_victim and len({c.owner[_slot(c, deny._redis_key(u))] for u in users}) == 3
    assert all(deny.check(u).allowed for u in users)

    stop = threading.Event()
    killed_at: List[float] = []
    errors: List[BaseException] = []
    slowest: List[float] = [0.0]
    resumed: Dict[str, float] = {}  # who -> monotonic time of its first Redis decision on the victim's slots after the kill

    def note(who: str, u: str, ok: bool, spent: float) -> None:
        slowest[0] = max(slowest[0], spent)
        if ok and u in on_victim and killed_at and who not in resumed:
            resumed[who] = time.monotonic()

    def worker(who: str) -> None:
        try:
            i = 0
            while not stop.is_set():
                u = users[i % len(users)]
                i += 1
                t = time.monotonic()
                ok = deny.check(u).allowed
                assert allow.check(u).allowed
                note(who, u, ok, time.monotonic() - t)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def async_worker() -> None:
        async def main() -> None:
            i = 0
            while not stop.is_set():
                u = users[i % len(users)]
                i += 1
                t = time.monotonic()
                ok = (await adeny.check_async(u)).allowed
                assert await aallow.allow_async(u)
                ds = await adeny.check_many_async([(v, 1) for v in users[:6]])
                assert len(ds) == 6
                note("async", u, ok, time.monotonic() - t)
                await asyncio.sleep(0)
        try:
            asyncio.run(main())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"sync{k}",)) for k in range(3)]
    threads.append(threading.Thread(target=async_worker))
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        victim_proc = c.procs[c.ports.index(victim)]
        victim_proc.send_signal(signal.SIGKILL)
        victim_proc.wait()
        killed_at.append(time.monotonic())
        deadline = killed_at[0] + 10
        while len(resumed) < 4 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        time.sleep(0.3)  # a little more load on the new topology
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        b.close()
        ba.close()
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert slowest[0] <= 2 * FAILOVER_TIMEOUT + SLACK, slowest[0]  # two calls per round: no hang
    assert set(resumed) == {"sync0", "sync1", "sync2", "async"}, resumed
    took = {who: round(t - killed_at[0], 2) for who, t in resumed.items()}
    assert max(took.values()) <= 10, took
    print(f"failover: first Redis decision on the killed primary's slots after {took} s; slowest call {slowest[0]:.3f} s")
    promoted = next(p for p, m in c.replica_of.items() if m == victim)
    assert "role:master" in c.cli(promoted, "INFO", "replication")
