"""Many Python threads on one object, every count exact (issue 17).

Each test starts THREADS threads at one barrier on one shared object, with time
frozen (a ManualClock) wherever the object reads time, and checks exact
totals: what is admitted equals what a single thread admits on a twin object,
a half-open breaker lets exactly its trials through, queues lose and duplicate
nothing. Under the GIL these run too (the switch interval is lowered so threads
interleave inside Python code); under a free-threaded interpreter
(``make test-free-threaded``) the threads truly run at once, and the first test
checks that importing pyresilience keeps the GIL off.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import threading
from collections import Counter
from typing import Any, Callable, Iterator, List

import pytest

import pyresilience as pr

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
THREADS = 16


@pytest.fixture(autouse=True)
def _interleave() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(fn: Callable[[int], Any], n: int = THREADS) -> List[Any]:
    """fn(i) in n threads started together; their results, in thread order.
    An exception in any thread fails the test."""
    barrier = threading.Barrier(n)
    results: List[Any] = [None] * n
    errors: List[BaseException] = []

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# ---- the interpreter ---------------------------------------------------------


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded interpreter only")
def test_import_keeps_the_gil_off() -> None:
    """The extension declares Py_MOD_GIL_NOT_USED: importing the whole package
    in a fresh interpreter (PYTHON_GIL unset) leaves the GIL disabled."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = ("import sys, pyresilience, pyresilience.web, pyresilience.asgi, pyresilience.wsgi;"
            "print(sys._is_gil_enabled())")
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.skipif(not FREE_THREADED, reason="a free-threaded interpreter only")
def test_running_without_the_gil() -> None:
    assert not sys._is_gil_enabled()  # type: ignore[attr-defined]


# ---- rate limiters -----------------------------------------------------------

LIMITERS = {
    "TokenBucket": lambda c: pr.TokenBucket(capacity=100, refill_rate=1.0, clock=c),
    "GCRA": lambda c: pr.GCRA(rate=1.0, burst=100, clock=c),
    "LeakyBucket": lambda c: pr.LeakyBucket(capacity=100, leak_rate=1.0, clock=c),
    "FixedWindow": lambda c: pr.FixedWindow(limit=100, window=10.0, clock=c),
    "SlidingWindowLog": lambda c: pr.SlidingWindowLog(limit=100, window=10.0, clock=c),
    "SlidingWindowCounter": lambda c: pr.SlidingWindowCounter(limit=100, window=10.0, clock=c),
}


def sequential_admits(make: Callable[[pr.ManualClock], Any], tries: int) -> int:
    lim = make(pr.ManualClock(start=5.0))
    return sum(lim.allow() for _ in range(tries))


@pytest.mark.parametrize("name", sorted(LIMITERS))
def test_limiter_admits_exactly_its_capacity(name: str) -> None:
    make = LIMITERS[name]
    per_thread = 20
    expected = sequential_admits(make, THREADS * per_thread)
    assert 0 < expected < THREADS * per_thread
    lim = make(pr.ManualClock(start=5.0))

    def work(i: int) -> int:
        got = 0
        for j in range(per_thread):
            if i % 4 == 0 and j % 2:  # readers interleaved with the writers
                assert lim.peek().limit > 0 and lim.available >= 0
            got += lim.allow() if i % 2 else lim.check().allowed
        return got

    assert sum(run_threads(work)) == expected
    assert not lim.allow()


@pytest.mark.parametrize("name", sorted(LIMITERS))
def test_limiter_weighted_requests_never_overdraw(name: str) -> None:
    """n=3 requests from every thread: the sum of admitted weight equals a
    single thread's on a twin limiter."""
    make = LIMITERS[name]
    twin = make(pr.ManualClock(start=5.0))
    expected = sum(3 for _ in range(THREADS * 10) if twin.allow(3))
    lim = make(pr.ManualClock(start=5.0))
    admitted = sum(run_threads(lambda i: sum(3 for _ in range(10) if lim.allow(3))))
    assert admitted == expected > 0


def test_acquire_advances_a_shared_manual_clock_exactly() -> None:
    """Every thread waits for tokens on one ManualClock: the waits advance it
    to the admission instants, never past the last one needed."""
    clock = pr.ManualClock()
    bucket = pr.TokenBucket(capacity=4, refill_rate=1000.0, clock=clock)  # 1 token per ms
    per_thread = 25
    run_threads(lambda i: [bucket.acquire() for _ in range(per_thread)])
    assert clock.now_ns() == (THREADS * per_thread - 4) * 1_000_000
    assert not bucket.allow()


def test_async_wait_object_admits_once() -> None:
    """One _RateWait stepped from every thread at once: it is admitted once and
    takes its tokens once (binding: the steps run under the object's lock)."""
    bucket = pr.TokenBucket(capacity=100, refill_rate=1.0, clock=pr.ManualClock())
    for _ in range(50):
        w = bucket._waiter(2)
        outcomes = run_threads(lambda i: _step(w))
        assert outcomes.count("admitted") == 1 and outcomes.count("again") == THREADS - 1
    assert bucket.available == 0


def _step(w: Any) -> str:
    try:
        return "admitted" if w.step() is None else "sleep"
    except RuntimeError:
        return "again"


@pytest.mark.parametrize("keyed", [False, True])
def test_concurrent_reconfigures_lose_no_update(keyed: bool) -> None:
    """One thread changes the capacity, another the rate, each many times: the
    limiter ends with the last value of each (binding: reconfigure() reads the
    config in force and applies it under the object's operation lock)."""
    clock = pr.ManualClock()
    if keyed:
        lim: Any = pr.KeyedLimiter(pr.TokenBucket, capacity=10, refill_rate=1.0, clock=clock)
        lim.allow("k")
    else:
        lim = pr.TokenBucket(capacity=10, refill_rate=1.0, clock=clock)
    rounds = 300

    def work(i: int) -> int:
        reverted = 0  # my last value undone by the other thread's stale copy
        for j in range(rounds):
            if i == 0:
                reverted += not keyed and j > 0 and lim.capacity != 10 + j
                lim.reconfigure(capacity=11 + j)
            else:
                reverted += not keyed and j > 0 and lim.refill_rate != 1.0 + j
                lim.reconfigure(refill_rate=2.0 + j)
        return reverted

    assert run_threads(work, n=2) == [0, 0]
    capacity, rate = 10 + rounds, 1.0 + rounds  # the last value of each
    if not keyed:
        assert dict(lim._config()) == {"capacity": capacity, "refill_rate": rate}
        return
    # the table's params, seen through a fresh key: it holds exactly `capacity`
    # and refills `rate` per second
    assert lim.peek("fresh", capacity).allowed and not lim.peek("fresh", capacity + 1).allowed
    assert lim.allow("r", capacity)
    clock.advance(1.0)
    assert lim.available("r") == rate


def test_manual_clock_concurrent_advances_add_up() -> None:
    clock = pr.ManualClock()
    run_threads(lambda i: [clock.advance_ns(7) for _ in range(1000)])
    assert clock.now_ns() == THREADS * 1000 * 7


# ---- keyed limiters and groups ----------------------------------------------


def test_keyed_limiter_exact_per_key() -> None:
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.TokenBucket, capacity=30, refill_rate=1.0, clock=clock)
    shared = ["a", "b", b"c", "d"]
    views = {k: keyed.for_key(k) for k in shared}

    def work(i: int) -> Counter:
        got: Counter = Counter()
        for j in range(40):
            k = shared[(i + j) % len(shared)]
            ok = views[k].allow() if j % 3 == 0 else keyed.allow(k)
            got[k] += ok
            got[f"own{i}"] += keyed.allow(f"own{i}")
            assert k in keyed and len(keyed) >= 1
        return got

    total = sum(run_threads(work), Counter())
    for k in shared:
        assert total[k] == 30, k
    for i in range(THREADS):
        assert total[f"own{i}"] == 30
    assert len(keyed) == len(shared) + THREADS


def test_keyed_limiter_bounded_table_under_churn() -> None:
    """Distinct keys from every thread into a small table: never more keys than
    max_keys, and a key that is limited is never evicted (every hot key stays
    exactly at its capacity)."""
    clock = pr.ManualClock()
    keyed = pr.KeyedLimiter(pr.GCRA, rate=1.0, burst=5, max_keys=64, clock=clock)

    def work(i: int) -> int:
        hot = 0
        for j in range(200):
            keyed.allow(f"cold-{i}-{j}")
            hot += keyed.allow("hot")
        return hot

    assert sum(run_threads(work)) == 5
    assert len(keyed) <= 64


def test_group_is_all_or_nothing() -> None:
    clock = pr.ManualClock()
    a = pr.TokenBucket(capacity=100, refill_rate=1.0, clock=clock)
    keyed = pr.KeyedLimiter(pr.FixedWindow, limit=60, window=10.0, clock=clock)
    group = pr.LimiterGroup(a, keyed.for_key("user"))
    admitted = sum(run_threads(lambda i: sum(group.allow() for _ in range(10))))
    assert admitted == 60
    assert a.available == 40  # nothing taken from `a` by a denied group call
    assert keyed.available("user") == 0


# ---- circuit breaker ----------------------------------------------------------


def test_breaker_half_open_lets_exactly_its_trials_through() -> None:
    clock = pr.ManualClock()
    transitions: List[Any] = []
    lock = threading.Lock()

    def listener(b: Any, old: Any, new: Any) -> None:
        with lock:
            transitions.append((old.name, new.name))

    cb = pr.CircuitBreaker(failure_threshold=1, success_threshold=5, half_open_max_calls=5,
                           timeout_seconds=10.0, on_state_change=listener, clock=clock)
    cb.record_failure()
    assert cb.state == pr.CircuitState.OPEN
    clock.advance(10.0)
    tokens = run_threads(lambda i: cb._acquire())
    admitted = [t for t in tokens if isinstance(t, tuple)]
    rejected = [t for t in tokens if isinstance(t, pr.CircuitOpenError)]
    assert len(admitted) == 5 and len(rejected) == THREADS - 5
    assert cb.metrics.half_open_in_flight == 5
    run_threads(lambda i: cb._record(admitted[i]), n=5)  # five successes, at once
    assert cb.state == pr.CircuitState.CLOSED
    assert transitions == [("CLOSED", "OPEN"), ("OPEN", "HALF_OPEN"), ("HALF_OPEN", "CLOSED")]


def test_breaker_counts_every_call() -> None:
    clock = pr.ManualClock()
    cb = pr.CircuitBreaker(failure_threshold=10**9, clock=clock)

    def boom() -> None:
        raise ValueError("x")

    def work(i: int) -> None:
        for j in range(100):
            if j % 10 == 0:
                with pytest.raises(ValueError):
                    cb.call(boom)
            else:
                assert cb.call(lambda: j) == j

    run_threads(work)
    m = cb.metrics
    assert (m.calls, m.failures) == (THREADS * 100, THREADS * 10)


def test_breaker_listeners_added_and_removed_concurrently() -> None:
    """The listener tuple is replaced whole under the object's lock: no
    addition is lost, and a transition fires each listener present once."""
    cb = pr.CircuitBreaker(clock=pr.ManualClock())
    fns = [[(lambda *a: None) for _ in range(20)] for _ in range(THREADS)]

    def work(i: int) -> None:
        for f in fns[i]:
            cb.add_listener(f)
        cb.open()
        cb.close()
        for f in fns[i][:10]:
            cb.remove_listener(f)

    run_threads(work)
    assert len(cb.listeners) == THREADS * 10
    assert set(map(id, cb.listeners)) == {id(f) for fs in fns for f in fs[10:]}


# ---- bulkhead -----------------------------------------------------------------


def test_bulkhead_try_acquire_hands_out_exactly_its_permits() -> None:
    bh = pr.Bulkhead("stress", max_concurrent=5, max_wait_seconds=0)
    got = run_threads(lambda i: bh.try_acquire())
    assert sum(got) == 5
    assert bh.available == 0 and bh.active_count == 5
    run_threads(lambda i: bh.release(), n=5)
    assert bh.available == 5 and bh.active_count == 0


def test_bulkhead_never_exceeds_its_limit() -> None:
    bh = pr.Bulkhead("stress", max_concurrent=3, max_wait_seconds=60)
    lock = threading.Lock()
    active = [0, 0]  # now, most seen

    def work(i: int) -> None:
        for _ in range(30):
            with bh:
                with lock:
                    active[0] += 1
                    active[1] = max(active[1], active[0])
                with lock:
                    active[0] -= 1

    run_threads(work)
    m = bh.metrics
    assert active[1] <= 3
    assert (m.acquired_count, m.released_count, m.active_count, m.rejected_count) == (
        THREADS * 30, THREADS * 30, 0, 0)


# ---- queues -------------------------------------------------------------------


def test_bounded_queue_loses_and_duplicates_nothing() -> None:
    q: pr.BoundedQueue[Any] = pr.BoundedQueue(max_size=16)
    producers, per_producer = THREADS // 2, 200
    done = object()

    def work(i: int) -> List[Any]:
        if i < producers:
            for j in range(per_producer):
                assert q.put((i, j), timeout=60)
            q.put(done, timeout=60)
            return []
        got = []
        while True:
            item = q.get(timeout=60)
            if item is done:
                return got
            got.append(item)

    results = run_threads(work, n=producers * 2)
    items = [x for r in results for x in r]
    assert len(items) == producers * per_producer
    assert set(items) == {(i, j) for i in range(producers) for j in range(per_producer)}
    assert q.qsize() == 0


@pytest.mark.parametrize("strategy", ["error", "drop_newest", "drop_oldest"])
def test_backpressure_queue_counts_are_exact(strategy: str) -> None:
    q: pr.BackpressureQueue[Any] = pr.BackpressureQueue(max_size=100, strategy=strategy)

    def work(i: int) -> List[Any]:
        accepted = []
        for j in range(20):
            try:
                if q.put_nowait((i, j)):
                    accepted.append((i, j))
            except pr.QueueFullError:
                pass
        return accepted

    accepted = {x for r in run_threads(work) for x in r}
    assert q.qsize() == 100
    left = [x for r in run_threads(lambda i: [q.get_nowait() for _ in range(25)], n=4) for x in r]
    assert len(set(left)) == 100 and set(left) <= accepted
    if strategy == "drop_oldest":
        assert len(accepted) == THREADS * 20  # every put stored; the oldest were evicted
    else:
        assert set(left) == accepted  # the 100 that fitted, nothing else
    assert q.qsize() == 0


def test_queue_resized_concurrently_stays_consistent() -> None:
    """maxsize assigned from every thread: the capacity the queue enforces is
    the maxsize it reports (binding: both change under the object's lock)."""
    q: pr.BoundedQueue[Any] = pr.BoundedQueue(max_size=8)
    run_threads(lambda i: [setattr(q, "maxsize", 8 + (i * 7 + j) % 5) for j in range(200)])
    assert q.maxsize == q.max_size and 8 <= q.maxsize <= 12
    stored = 0
    while q.put(stored, block=False) if not q.full() else False:
        stored += 1
    assert stored == q.maxsize


# ---- retry --------------------------------------------------------------------


def test_retry_budget_withdrawals_are_exact() -> None:
    def make() -> pr.RetryBudget:
        return pr.RetryBudget(ratio=0.2, min_retries_per_second=1.0, window=10.0,
                              clock=pr.ManualClock())

    twin = make()
    for _ in range(THREADS * 50):
        twin.deposit()
    expected = sum(twin.withdraw() for _ in range(THREADS * 50))
    budget = make()
    run_threads(lambda i: [budget.deposit() for _ in range(50)])
    allowed = sum(run_threads(lambda i: sum(budget.withdraw() for _ in range(50))))
    assert allowed == expected > 0
    m = budget.metrics
    assert (m.attempts, m.retries_allowed, m.retries_denied) == (
        THREADS * 50, expected, THREADS * 50 - expected)


def test_retry_policy_shared_rng_stays_in_bounds() -> None:
    policy = pr.RetryConfig(max_attempts=5, base_delay=1.0, max_delay=8.0, jitter="full")
    delays = run_threads(lambda i: [pr.calculate_delay(a, policy) for a in range(4) for _ in range(50)])
    flat = [d for ds in delays for d in ds]
    assert len(flat) == THREADS * 200 and all(0.0 <= d <= 8.0 for d in flat)
