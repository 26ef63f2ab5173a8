"""Venue tests' helpers: one accepted order, submitted by a real ExecutionAdapter (embedded engine) to a broker
on a fake venue; a live feed consumed on a thread; waiting for a condition with a deadline."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import pandas as pd

from positions_helpers import T0

from adapters.changefeed import PostgresPollingFeed, position_store
from adapters.execution import ACCEPTED_ORDER_KEY, ACCEPTED_ORDERS, ExecutionAdapter
from tradeflow import engine
from tradeflow.clock import utc_now
from tradeflow.trading import accounts, policy
from tradeflow.trading.gate import Decision, DecisionGate, Signal


def buy_signal(symbol: str, n: int = 0) -> Signal:
    return Signal(signal_id=f"s:{symbol}:{n}", strategy_id="sma_crossover", symbol=symbol, timeframe="1m",
                  signal_ts=T0 + timedelta(minutes=n), action="BUY", size_hint=1.0, confidence=1.0,
                  ref_price=Decimal("100"), atr_14=5.0)


def adapter_with_one_order(conn, settings, broker, symbol: str, consumer: str
                           ) -> tuple[ExecutionAdapter, PostgresPollingFeed, Decision]:
    """Account A1, one accepted BUY of symbol, submitted through the adapter (the venue stamps its
    reports with the wall clock: so does the adapter). Close the feed after the test."""
    accounts.add(conn, "A1", capital="1000000", max_leverage="1")
    policy.update(conn, "A1", max_open_symbols=10)
    decision = DecisionGate(conn, settings, clock=lambda: T0 + timedelta(minutes=1)).decide(buy_signal(symbol))
    conn.execute("TRUNCATE adapter_feed_position")
    store = position_store(settings, conn, consumer)
    feed = PostgresPollingFeed(lambda: engine.connect(settings), settings.schema, ACCEPTED_ORDERS,
                               ACCEPTED_ORDER_KEY, consumer=consumer, start_position=None, poll_interval=0.05)
    adapter = ExecutionAdapter(conn, settings, broker, feed, store, clock=utc_now)
    assert adapter.submit_accepted(timeout=2) == 1
    return adapter, feed, decision


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@contextmanager
def consuming(feed) -> Iterator[list[pd.DataFrame]]:
    """The frames of feed.batches(), read on a thread until the block ends (then the feed is stopped)."""
    frames: list[pd.DataFrame] = []
    consumer = threading.Thread(target=lambda: frames.extend(feed.batches()))
    consumer.start()
    try:
        yield frames
    finally:
        feed.stop.set()
        consumer.join(15)
