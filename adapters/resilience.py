"""Retries with backoff, a circuit breaker, and a Broker wrapper that uses both.

retry: a transient failure (BrokerError(retryable=True), or an exception type
listed in retry_on) is retried; attempt k (from 0) is followed by a wait of
min(max_delay, base_delay * 2**k), less a random fraction (up to jitter) of
it, so clients that failed together do not come back together. A permanent
BrokerError is never retried; the last failure propagates.

CircuitBreaker: failure_threshold consecutive failures open it; while OPEN
calls fail at once with CircuitOpenError, sparing a broker that is down. After
recovery_timeout it is HALF_OPEN and lets a single trial call through: success
closes it, failure opens it again. A permanent BrokerError is the broker
answering, so it counts as the broker being up.

ResilientBroker: submit and cancel of any Broker through retry around the
breaker.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Callable, TypeVar

from adapters.broker import Broker, BrokerError, MalformedReport
from adapters.orders import Order, OrderEvent

T = TypeVar("T")
Exceptions = tuple[type[BaseException], ...]


def _transient(exc: BaseException, retry_on: Exceptions) -> bool:
    if isinstance(exc, BrokerError):
        return exc.retryable
    return isinstance(exc, retry_on)


def _outage(exc: BaseException) -> bool:
    return not (isinstance(exc, BrokerError) and not exc.retryable)


def retry(call: Callable[[], T], *, attempts: int = 3, base_delay: float = 0.2, max_delay: float = 5.0,
          jitter: float = 0.5, sleep: Callable[[float], None] = time.sleep, retry_on: Exceptions = (),
          rng: random.Random | None = None) -> T:
    """call() until it succeeds, at most attempts times; rng makes the jitter reproducible."""
    if attempts < 1:
        raise ValueError(f"attempts: at least 1, got {attempts}")
    if not 0 <= jitter <= 1:
        raise ValueError(f"jitter: in [0, 1], got {jitter}")
    rng = rng or random.Random()
    attempt = 0
    while True:
        try:
            return call()
        except Exception as exc:
            if attempt + 1 >= attempts or not _transient(exc, retry_on):
                raise
        sleep(min(max_delay, base_delay * 2 ** attempt) * (1 - jitter * rng.random()))
        attempt += 1


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """retry's settings, kept together so a ResilientBroker can be configured once."""
    attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    jitter: float = 0.5
    retry_on: Exceptions = ()
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def run(self, call: Callable[[], T]) -> T:
        return retry(call, attempts=self.attempts, base_delay=self.base_delay, max_delay=self.max_delay,
                     jitter=self.jitter, sleep=self.sleep, retry_on=self.retry_on, rng=self.rng)


class BreakerState(StrEnum):
    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitOpenError(BrokerError):
    """Refused without calling: not retryable now, the breaker decides when to try again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class CircuitBreaker:
    """Thread-safe. on_state_change(old, new) is called on every transition, in order, under the lock."""

    def __init__(self, failure_threshold: int = 5, recovery_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, *,
                 on_state_change: Callable[[BreakerState, BreakerState], None] | None = None) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold: at least 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self.recovery_timeout = recovery_timeout
        self.on_state_change = on_state_change
        self._clock = clock
        self._lock = threading.RLock()  # reentrant: a callback may read state
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            # Time alone ends OPEN: report HALF_OPEN as soon as a trial would be let through.
            if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.recovery_timeout:
                self._move(BreakerState.HALF_OPEN)
            return self._state

    def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        with self._lock:
            state = self.state
            if state is BreakerState.OPEN:
                wait = self.recovery_timeout - (self._clock() - self._opened_at)
                raise CircuitOpenError(f"circuit open: calls refused for another {wait:.3g} s")
            trial = state is BreakerState.HALF_OPEN
            if trial:
                if self._trial_running:
                    raise CircuitOpenError("circuit half-open: a trial call is already running")
                self._trial_running = True
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record(trial, ok=not _outage(exc))
            raise
        self._record(trial, ok=True)
        return result

    def _record(self, trial: bool, ok: bool) -> None:
        with self._lock:
            if trial:
                self._trial_running = False
                if ok:
                    self._close()
                else:
                    self._open()
            # A call that started before the circuit opened says nothing about the broker now.
            elif self._state is BreakerState.CLOSED:
                self._failures = 0 if ok else self._failures + 1
                if self._failures >= self.failure_threshold:
                    self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._move(BreakerState.OPEN)

    def _close(self) -> None:
        self._failures = 0
        self._move(BreakerState.CLOSED)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new and self.on_state_change is not None:
            self.on_state_change(old, new)


class ResilientBroker:
    """A Broker whose submit and cancel are retried around a circuit breaker.

    Retry wraps the breaker, not the other way round: every attempt counts
    towards opening it, and once it is open the next attempt is refused
    (CircuitOpenError is not retryable), which ends the loop instead of
    backing off against a broker that is down.
    """

    def __init__(self, inner: Broker, breaker: CircuitBreaker, policy: RetryPolicy | None = None) -> None:
        self.inner = inner
        self.breaker = breaker
        self.policy = policy or RetryPolicy()

    def submit(self, order: Order) -> OrderEvent:
        # A timeout leaves it unknown whether the broker took the order. Sending it again is
        # safe only because the resend carries the same client_order_id: a broker that has the
        # order returns its state instead of opening a second one. A fresh id per attempt
        # could double the position.
        return self.policy.run(lambda: self.breaker.call(self.inner.submit, order))

    def cancel(self, client_order_id: str) -> OrderEvent:
        # Idempotent too: cancelling an order that is already cancelled returns that event.
        return self.policy.run(lambda: self.breaker.call(self.inner.cancel, client_order_id))

    def poll_events(self) -> list[OrderEvent]:
        # Reading reports places nothing; a failed poll is simply polled again by the caller's loop.
        return self.inner.poll_events()

    def poll_malformed(self) -> list[MalformedReport]:
        return self.inner.poll_malformed()

    def order_history(self, client_order_ids: list[str]) -> list[OrderEvent]:
        # A read, safe to retry: start-up reconciliation must not give up on one timeout.
        return self.policy.run(lambda: self.breaker.call(self.inner.order_history, client_order_ids))
