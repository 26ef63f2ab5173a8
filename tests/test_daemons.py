"""The adapter process with the paper broker: orders accepted by the gate are
submitted, trade on the bars ingested after them, and survive a restart of
the adapter between submission and fill."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pandas as pd
from positions_helpers import T0, rows
from typer.testing import CliRunner

from adapters.paper import PaperConfig
from ingest.prices import PriceIngester
from tradeflow.cli import app
from tradeflow.trading import accounts
from tradeflow.trading.daemon import PaperAdapter
from tradeflow.trading.gate import DecisionGate, Signal

FRICTIONLESS = PaperConfig()  # no slippage or fees: fills at the bar's price


def bars(minute: int, symbol: str = "AAA", price: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": symbol, "ts": T0 + timedelta(minutes=minute), "open": price,
                          "high": price + 1, "low": price - 1, "close": price, "volume": 1_000_000.0}])


def test_orders_fill_on_bars_ingested_later_even_across_an_adapter_restart(conn, embedded_settings):
    accounts.add(conn, "A1", capital="1000000")
    conn.execute("TRUNCATE adapter_feed_position")
    clock = lambda: T0 + timedelta(minutes=1)  # noqa: E731
    prices = PriceIngester(conn, embedded_settings, source="test", clock=clock)
    prices.ingest_frame(bars(0))
    gate = DecisionGate(conn, embedded_settings, clock=clock)
    decision = gate.decide(Signal(signal_id="s1", strategy_id="sma_crossover", symbol="AAA", timeframe="1m",
                                  signal_ts=T0, action="BUY", size_hint=1.0, confidence=1.0,
                                  ref_price=Decimal(100), atr_14=5.0))
    first = PaperAdapter(conn, embedded_settings, FRICTIONLESS, clock=clock)
    first.step(timeout=2)  # submits; the bar of minute 0 is before the order and does not trade it
    first.close()
    assert [r["status"] for r in rows(conn, "SELECT status FROM orders")] == ["ACK"]

    # a restarted process: takes the open order back
    second = PaperAdapter(conn, embedded_settings, FRICTIONLESS, clock=clock)
    prices.ingest_frame(bars(1, price=101.0))
    second.step(timeout=0.5)
    second.close()
    assert [r["status"] for r in rows(conn, "SELECT status FROM orders")] == ["FILLED"]
    [fill] = rows(conn, "SELECT order_id, fill_qty, fill_price FROM exec_report_history")
    assert fill == {"order_id": decision.client_order_id, "fill_qty": decision.qty, "fill_price": Decimal("101.00")}
    acks = rows(conn, "SELECT count(*) AS n FROM order_events WHERE status = 'ACK'")
    assert acks == [{"n": 1}]


def test_gate_and_adapter_commands_run_once(embedded_settings):
    runner = CliRunner()
    gate = runner.invoke(app, ["gate", "run", "--once"], catch_exceptions=False)
    assert gate.exit_code == 0 and "decided 0 signal(s)" in gate.output
    adapter = runner.invoke(app, ["adapter", "run", "--once"], catch_exceptions=False)
    assert adapter.exit_code == 0
    refused = runner.invoke(app, ["adapter", "run", "--broker", "ib", "--once"])
    assert refused.exit_code == 2 and "broker" in refused.output


def test_operator_cancel_reaches_the_broker_and_releases_the_reservation(conn, embedded_settings):
    accounts.add(conn, "A1", capital="1000000")
    conn.execute("TRUNCATE adapter_feed_position")
    clock = lambda: T0 + timedelta(minutes=1)  # noqa: E731
    decision = DecisionGate(conn, embedded_settings, clock=clock).decide(
        Signal(signal_id="s1", strategy_id="sma_crossover", symbol="AAA", timeframe="1m", signal_ts=T0,
               action="BUY", size_hint=1.0, confidence=1.0, ref_price=Decimal(100), atr_14=5.0))
    adapter = PaperAdapter(conn, embedded_settings, FRICTIONLESS, clock=clock)
    adapter.step(timeout=2)
    runner = CliRunner()
    asked = runner.invoke(app, ["orders", "cancel", decision.client_order_id, "--reason", "fat finger"],
                          catch_exceptions=False)
    assert asked.exit_code == 0
    adapter.step(timeout=0.5)
    adapter.close()
    assert [r["status"] for r in rows(conn, "SELECT status FROM orders")] == ["CANCELLED"]
    assert rows(conn, "SELECT count(*) AS n FROM int_pending_orders") == [{"n": 0}]
    [command] = rows(conn, "SELECT command, reason, requested_by FROM order_commands")
    assert command["command"] == "CANCEL" and command["reason"] == "fat finger" and command["requested_by"]
    again = runner.invoke(app, ["orders", "cancel", decision.client_order_id])
    assert again.exit_code == 2 and "already CANCELLED" in again.output
