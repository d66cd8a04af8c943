"""CircuitBreaker against a pure-Python reference model (hypothesis): random
configurations (consecutive and rate modes, count and time windows, slow
calls) and random schedules of calls, clock moves and manual state changes;
after every step the state and every metric must match the model."""
from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import pyresilience as pr

S_CLOSED, S_OPEN, S_HALF = "closed", "open", "half_open"


class Model:
    """The documented behaviour, written plainly. Calls are sequential (each is
    admitted and finishes before the next), so every permit is current."""

    def __init__(self, ft, sth, timeout, hom, frt, srt, slow, wtype, wsize, minc):
        self.ft, self.sth, self.timeout = ft, sth, timeout
        self.hom = hom or sth
        self.frt, self.srt, self.slow = frt or 0.0, srt or 0.0, slow
        self.rate_mode = self.frt > 0 or self.srt > 0
        self.wtype, self.wsize = wtype, wsize
        self.minc = min(minc, wsize) if wtype == "count" else minc
        self.reset_all()

    def reset_all(self):
        self.state, self.mode = S_CLOSED, "normal"
        self.opened_at = 0.0
        self.cf = self.cs = self.in_flight = 0
        self.calls = self.failures = self.slow_calls = self.rejected = self.ignored = 0
        self.window = []  # count: [(fail, slow)]; time: [(sec, fail, slow)]

    # -- window
    def _live(self, now):
        if self.wtype == "count":
            return self.window[-self.wsize:]
        sec = math.floor(now)
        return [(f, s) for (q, f, s) in self.window if q > sec - self.wsize]

    def _push(self, now, fail, slow):
        if self.wtype == "count":
            self.window.append((fail, slow))
            del self.window[:-self.wsize]
        else:
            self.window.append((math.floor(now), fail, slow))

    def _trips(self, now):
        live = self._live(now)
        n = len(live)
        if n < self.minc:
            return False
        if self.frt > 0 and sum(f for f, _ in live) / n >= self.frt:
            return True
        return self.srt > 0 and sum(s for _, s in live) / n >= self.srt

    # -- transitions
    def _open(self, now, mode="normal"):
        self.state, self.mode, self.opened_at, self.cs, self.in_flight = S_OPEN, mode, now, 0, 0

    def _close(self, mode="normal", clear=True):
        self.state, self.mode, self.in_flight = S_CLOSED, mode, 0
        if clear:
            self.window, self.cf, self.cs = [], 0, 0

    def _half(self):
        self.state, self.mode, self.in_flight, self.cs, self.cf = S_HALF, "normal", 0, 0, 0

    # -- operations
    def acquire(self, now):
        if self.state == S_CLOSED:
            return True
        if self.state == S_OPEN:
            if self.mode == "forced_open" or now - self.opened_at < self.timeout:
                self.rejected += 1
                return False
            self._half()
        if self.in_flight < self.hom:
            self.in_flight += 1
            return True
        self.rejected += 1
        return False

    def record(self, now, outcome, duration):
        slow = outcome != "ignored" and self.slow is not None and duration >= self.slow
        fail = outcome == "failure"
        if outcome == "ignored":
            self.ignored += 1
        else:
            self.calls += 1
            self.failures += fail
            self.slow_calls += slow
        if self.state == S_CLOSED:
            if outcome == "ignored":
                return
            self._push(now, fail, slow)
            if fail:
                self.cf, self.cs = self.cf + 1, 0
            else:
                self.cs, self.cf = self.cs + 1, 0
            if self.mode == "normal" and (self._trips(now) if self.rate_mode else self.cf >= self.ft):
                self._open(now)
        elif self.state == S_HALF:
            if self.in_flight > 0:
                self.in_flight -= 1
            if outcome == "ignored":
                return
            if fail or (slow and self.srt > 0):
                self._open(now)
            else:
                self.cs += 1
                if self.cs >= self.sth:
                    self._close()

    def manual(self, op, now):
        if op == "open":
            self._open(now)
        elif op == "force_open":
            self._open(now, "forced_open")
        elif op == "half_open":
            self._half()
        elif op == "close":
            self._close()
        elif op == "reset":
            self.reset_all()
        elif op == "disable":
            self._close("disabled", clear=self.state != S_CLOSED)

    def retry_after(self, now):
        if self.state != S_OPEN:
            return 0.0
        if self.mode == "forced_open" or math.isinf(self.timeout):
            return math.inf
        return max(0.0, self.opened_at + self.timeout - now)


configs = st.fixed_dictionaries({
    "ft": st.integers(1, 4),
    "sth": st.integers(1, 3),
    "timeout": st.sampled_from([0.0, 1.0, 5.0, math.inf]),
    "hom": st.none() | st.integers(1, 3),
    "frt": st.none() | st.sampled_from([0.25, 0.5, 1.0]),
    "srt": st.none() | st.sampled_from([0.5, 1.0]),
    "slow": st.none() | st.sampled_from([0.5, 2.0]),
    "wtype": st.sampled_from(["count", "time"]),
    "wsize": st.integers(1, 6),
    "minc": st.integers(1, 5),
}).filter(lambda c: c["srt"] is None or c["slow"] is not None)

steps = st.lists(st.one_of(
    st.tuples(st.just("call"), st.sampled_from(["success", "failure", "ignored"]),
              st.sampled_from([0.0, 0.5, 1.0, 3.0])),
    st.tuples(st.just("advance"), st.sampled_from([0.25, 0.5, 1.0, 2.0, 5.0])),
    st.tuples(st.just("manual"), st.sampled_from(["open", "close", "half_open", "reset",
                                                  "force_open", "disable"])),
    st.tuples(st.just("metrics")),
), max_size=60)


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


def _state_tuple(m):
    return (m.state.value, m.mode, m.consecutive_failures, m.consecutive_successes, m.calls,
            m.failures, m.slow_calls, m.rejected, m.ignored, m.half_open_in_flight)


@settings(max_examples=300, deadline=None)
@given(configs, steps)
def test_breaker_matches_the_model(cfg, schedule):
    clock = pr.ManualClock(start=100.0)
    cb = pr.CircuitBreaker(
        cfg["ft"], cfg["sth"], cfg["timeout"], name="m", half_open_max_calls=cfg["hom"],
        failure_rate_threshold=cfg["frt"], slow_call_rate_threshold=cfg["srt"],
        slow_call_duration=cfg["slow"], window_type=cfg["wtype"], window_size=cfg["wsize"],
        minimum_calls=cfg["minc"], ignore_exceptions=Ignored, clock=clock)
    model = Model(**cfg)
    for step in schedule:
        kind = step[0]
        if kind == "call":
            outcome, duration = step[1], step[2]

            def func():
                clock.advance(duration)
                if outcome == "failure":
                    raise Boom()
                if outcome == "ignored":
                    raise Ignored()
                return "ok"
            admitted = model.acquire(clock.now())
            try:
                assert cb.call(func) == "ok"
                got = "success"
            except Boom:
                got = "failure"
            except Ignored:
                got = "ignored"
            except pr.CircuitOpenError as e:
                got = "rejected"
                assert e.retry_after == model.retry_after(clock.now()) or model.state == S_HALF
            if admitted:
                assert got == outcome
                model.record(clock.now(), outcome, duration)
            else:
                assert got == "rejected"
        elif kind == "advance":
            clock.advance(step[1])
        elif kind == "manual":
            getattr(cb, step[1])()
            model.manual(step[1], clock.now())
        m = cb.metrics
        expect = (model.state, model.mode, model.cf, model.cs, model.calls, model.failures,
                  model.slow_calls, model.rejected, model.ignored, model.in_flight)
        assert _state_tuple(m) == expect, (step, _state_tuple(m), expect)
        live = model._live(clock.now())
        assert m.window_calls == len(live)
        assert m.window_failures == sum(f for f, _ in live)
        assert m.window_slow_calls == sum(s for _, s in live)
        assert m.retry_after == model.retry_after(clock.now())
        assert cb.state.value == model.state
