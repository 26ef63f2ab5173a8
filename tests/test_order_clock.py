"""One clock per order (issue 13, F1): an order's events only move forward in
time and carry a per-order sequence number, so `orders` (the latest event)
never goes back from FILLED to ACK and a restarted adapter never trades a
filled order again."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pandas as pd
from positions_helpers import T0, rows

from ingest.prices import PriceIngester
from tradeflow.trading import accounts
from tradeflow.trading.daemon import PaperAdapter
from tradeflow.trading.gate import DecisionGate, Signal


def bar(minute: int, price: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": "AAA", "ts": T0 + timedelta(minutes=minute), "open": price,
                          "high": price + 1, "low": price - 1, "close": price, "volume": 1_000_000.0}])


def test_an_order_submitted_after_the_next_minute_boundary_is_filled_once_across_restarts(conn, embedded_settings):
    """The audit's repro: decided at second 48 of a minute, submitted after the next
    boundary; the paper fill is stamped with that bar's open, before the ACK."""
    accounts.add(conn, "A1", capital="1000000")
    conn.execute("TRUNCATE adapter_feed_position")
    decided_at = T0 + timedelta(minutes=1, seconds=48)
    submitted_at = T0 + timedelta(minutes=2, seconds=5)
    prices = PriceIngester(conn, embedded_settings, source="test", clock=lambda: submitted_at)
    prices.ingest_frame(bar(0))
    decision = DecisionGate(conn, embedded_settings, clock=lambda: decided_at).decide(
        Signal(signal_id="s1", strategy_id="sma_crossover", symbol="AAA", timeframe="1m",
               signal_ts=T0, action="BUY", size_hint=1.0,
               confidence=1.0, ref_price=Decimal(100), atr_14=5.0))
    assert decision.accepted

    first = PaperAdapter(conn, embedded_settings, clock=lambda: submitted_at)
    first.step(timeout=2)  # ACK stamped 14:32:05
    prices.ingest_frame(bar(2))  # the bar of 14:32: the order trades at its open, 14:32:00
    first.step(timeout=0)
    first.close()
    for minute in (3, 4):  # restart, another bar, twice
        again = PaperAdapter(conn, embedded_settings, clock=lambda: submitted_at)
        prices.ingest_frame(bar(minute))
        again.step(timeout=0)
        again.close()

    assert rows(conn, "SELECT status, filled_qty FROM orders") == [{"status": "FILLED", "filled_qty": decision.qty}]
    fills = rows(conn, "SELECT fill_qty FROM exec_report_history")
    assert fills == [{"fill_qty": decision.qty}]
    history = rows(conn, "SELECT status, event_ts, seq FROM order_history ORDER BY seq NULLS FIRST")
    assert [h["status"] for h in history] == ["NEW", "ACK", "FILLED"]
    assert [h["seq"] for h in history] == [None, 1, 2]  # the gate's NEW counts as 0
    times = [h["event_ts"] for h in history]
    assert times == sorted(times) and times[-1] == submitted_at  # FILLED not before ACK
    [position] = rows(conn, "SELECT net_qty FROM open_positions_rollup")
    assert position == {"net_qty": decision.qty}
