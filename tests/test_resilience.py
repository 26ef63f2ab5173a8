"""retry, CircuitBreaker and ResilientBroker, with injected sleep and clock: nothing here waits."""
from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from adapters.broker import Broker, BrokerError
from adapters.orders import Order, OrderEvent, OrderStatus, Side, TimeInForce
from adapters.paper import PaperBroker, PaperConfig
from adapters.resilience import (BreakerState, CircuitBreaker, CircuitOpenError, ResilientBroker, RetryPolicy,
                                 retry)

TRANSIENT = BrokerError("timed out", retryable=True)
PERMANENT = BrokerError("insufficient permissions", retryable=False)


class Script:
    """A call that raises the given errors in turn, then returns 'ok'."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("failures, delays", [
    (0, []),
    (1, [0.5]),
    (2, [0.5, 1.0]),
    (4, [0.5, 1.0, 1.5, 1.5]),  # doubling, capped at max_delay
])
def test_retry_succeeds_after_transient_errors_with_exponential_backoff(failures, delays):
    sleeps: list[float] = []
    call = Script(*[TRANSIENT] * failures)
    assert retry(call, attempts=5, base_delay=0.5, max_delay=1.5, jitter=0, sleep=sleeps.append) == "ok"
    assert (call.calls, sleeps) == (failures + 1, delays)


def test_retry_gives_up_after_attempts_with_the_last_error():
    sleeps: list[float] = []
    last = BrokerError("still down", retryable=True)
    call = Script(TRANSIENT, TRANSIENT, last)
    with pytest.raises(BrokerError) as raised:
        retry(call, attempts=3, base_delay=0.1, jitter=0, sleep=sleeps.append)
    assert (raised.value, call.calls, sleeps) == (last, 3, [0.1, 0.2])


@pytest.mark.parametrize("error, retry_on, retried", [
    (PERMANENT, (), False),
    (PERMANENT, (BrokerError,), False),  # a permanent broker error is never retried
    (TimeoutError(), (), False),         # unclassified errors are not retried unless listed
    (TimeoutError(), (TimeoutError, ConnectionError), True),
    (ValueError(), (TimeoutError,), False),
])
def test_retry_only_retries_transient_errors(error, retry_on, retried):
    sleeps: list[float] = []
    call = Script(error)
    if retried:
        assert retry(call, attempts=3, jitter=0, sleep=sleeps.append, retry_on=retry_on) == "ok"
    else:
        with pytest.raises(type(error)):
            retry(call, attempts=3, jitter=0, sleep=sleeps.append, retry_on=retry_on)
    assert (call.calls, len(sleeps)) == ((2, 1) if retried else (1, 0))


def test_retry_jitter_is_seeded_and_only_shortens_the_delay():
    def delays(seed: int) -> list[float]:
        sleeps: list[float] = []
        retry(Script(*[TRANSIENT] * 4), attempts=5, base_delay=1, max_delay=8, jitter=0.5, sleep=sleeps.append,
              rng=random.Random(seed))
        return sleeps

    draws = random.Random(3)
    assert delays(3) == [cap * (1 - 0.5 * draws.random()) for cap in (1, 2, 4, 8)]
    assert delays(3) != delays(4)
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays(5), (1, 2, 4, 8), strict=True))


def test_circuit_breaker_opens_rejects_and_recovers():
    clock, changes = Clock(), []
    breaker = CircuitBreaker(failure_threshold=3, recovery_timeout=30, clock=clock,
                             on_state_change=lambda old, new: changes.append((old, new)))

    def fail() -> None:
        with pytest.raises(BrokerError):
            breaker.call(Script(TRANSIENT))

    for _ in range(2):
        fail()
    assert breaker.call(Script()) == "ok"  # a success resets the count: failures must be consecutive
    for _ in range(2):
        fail()
    assert breaker.state is BreakerState.CLOSED
    fail()
    assert breaker.state is BreakerState.OPEN

    untouched = Script()
    clock.now += 29.9
    with pytest.raises(CircuitOpenError, match="circuit open") as raised:
        breaker.call(untouched)
    assert (untouched.calls, raised.value.retryable) == (0, False)

    clock.now += 0.1
    assert breaker.state is BreakerState.HALF_OPEN
    fail()  # the trial fails: open again, for a whole recovery_timeout
    assert breaker.state is BreakerState.OPEN
    clock.now += 29.9
    assert breaker.state is BreakerState.OPEN
    clock.now += 0.1
    assert breaker.call(Script()) == "ok"
    assert breaker.state is BreakerState.CLOSED
    assert changes == [(BreakerState.CLOSED, BreakerState.OPEN), (BreakerState.OPEN, BreakerState.HALF_OPEN),
                       (BreakerState.HALF_OPEN, BreakerState.OPEN), (BreakerState.OPEN, BreakerState.HALF_OPEN),
                       (BreakerState.HALF_OPEN, BreakerState.CLOSED)]


def test_half_open_lets_a_single_trial_through():
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5, clock=clock)
    with pytest.raises(BrokerError):
        breaker.call(Script(TRANSIENT))
    clock.now += 5
    refused = []

    def trial() -> str:
        # A second caller arriving while the trial runs is turned away.
        with pytest.raises(CircuitOpenError, match="trial") as raised:
            breaker.call(Script())
        refused.append(raised.value)
        return "ok"

    assert breaker.call(trial) == "ok"
    assert len(refused) == 1 and breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize("half_open", [False, True])
def test_permanent_errors_mean_the_broker_is_up(half_open):
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=5, clock=clock)
    if half_open:
        with pytest.raises(BrokerError):
            breaker.call(Script(TRANSIENT))
        clock.now += 5
    with pytest.raises(BrokerError, match="permissions"):
        breaker.call(Script(PERMANENT))
    assert breaker.state is BreakerState.CLOSED


class FlakyBroker:
    """Wraps a real broker; its first `failures` submit/cancel calls fail. lost_reply: the
    request reaches the broker and the reply is lost (a timeout after the fact), else the
    request never gets there (connection refused)."""

    def __init__(self, inner: Broker, failures: int, *, lost_reply: bool) -> None:
        self.inner = inner
        self.failures = failures
        self.lost_reply = lost_reply
        self.calls = 0

    def _call(self, method, *args):
        self.calls += 1
        if self.calls > self.failures:
            return method(*args)
        if self.lost_reply:
            method(*args)
            raise BrokerError("read timed out", retryable=True)
        raise BrokerError("connection refused", retryable=True)

    def submit(self, order: Order) -> OrderEvent:
        return self._call(self.inner.submit, order)

    def cancel(self, client_order_id: str) -> OrderEvent:
        return self._call(self.inner.cancel, client_order_id)

    def poll_events(self) -> list[OrderEvent]:
        return self.inner.poll_events()


T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
ORDER = Order(client_order_id="tf-1", account_id="ACC1", strategy_id="s1", symbol="AAPL", side=Side.BUY,
              qty=D(100), time_in_force=TimeInForce.GTC, created_at=T0 + timedelta(seconds=30))


def resilient(failures: int, lost_reply: bool, threshold: int = 5) -> tuple[ResilientBroker, FlakyBroker, list]:
    sleeps: list[float] = []
    paper = PaperBroker(PaperConfig(), clock=lambda: T0 + timedelta(seconds=31))
    flaky = FlakyBroker(paper, failures, lost_reply=lost_reply)
    policy = RetryPolicy(attempts=4, base_delay=0.2, jitter=0, sleep=sleeps.append)
    return ResilientBroker(flaky, CircuitBreaker(failure_threshold=threshold, clock=Clock()), policy), flaky, sleeps


@pytest.mark.parametrize("lost_reply", [False, True])
@pytest.mark.parametrize("failures", [0, 1, 3])
def test_resilient_broker_submits_exactly_once_through_failures(failures, lost_reply):
    broker, flaky, sleeps = resilient(failures, lost_reply)
    assert isinstance(broker, Broker)
    assert broker.submit(ORDER).status is OrderStatus.ACK
    assert (flaky.calls, sleeps) == (failures + 1, [0.2, 0.4, 0.8][:failures])
    flaky.inner.on_bar("AAPL", T0 + timedelta(minutes=1), D(10), D(10), D(10), D(10), D(100_000))
    events = broker.poll_events()
    # However many times it was sent, the broker holds one order and filled it once.
    assert [(e.status, e.filled_qty) for e in events] == [(OrderStatus.ACK, 0), (OrderStatus.FILLED, 100)]


def test_resilient_cancel_retried_after_a_lost_reply_cancels_once():
    broker, flaky, _ = resilient(0, lost_reply=True)
    broker.submit(ORDER)
    flaky.failures = 2  # the cancel reaches the broker, its reply is lost
    cancelled = broker.cancel("tf-1")
    assert cancelled.status is OrderStatus.CANCELLED
    assert [e.status for e in broker.poll_events()] == [OrderStatus.ACK, OrderStatus.CANCELLED]


def test_resilient_broker_stops_retrying_once_the_circuit_opens():
    broker, flaky, sleeps = resilient(failures=100, lost_reply=False, threshold=2)
    with pytest.raises(CircuitOpenError):
        broker.submit(ORDER)
    assert flaky.calls == 2 and len(sleeps) == 2
    assert broker.breaker.state is BreakerState.OPEN


def test_resilient_broker_does_not_retry_a_permanent_error():
    broker, flaky, sleeps = resilient(0, lost_reply=False)
    broker.submit(ORDER)
    with pytest.raises(BrokerError, match="already used"):
        broker.submit(replace(ORDER, qty=D(5)))
    assert (flaky.calls, sleeps, broker.breaker.state) == (2, [], BreakerState.CLOSED)
