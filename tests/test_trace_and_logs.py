"""Following one order from signal to P&L: the trace over the views and the
ids carried by the structured logs."""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from decimal import Decimal

import pandas as pd
from positions_helpers import T0

from ingest.prices import PriceIngester
from tradeflow.ops import logs
from tradeflow.ops.trace import trace
from tradeflow.trading import accounts
from tradeflow.trading.daemon import PaperAdapter
from tradeflow.trading.gate import DecisionGate, Signal


def test_trace_follows_an_order_from_signal_to_position(conn, embedded_settings):
    from ingest.synthetic import generate_bars

    accounts.add(conn, "A1", capital="1000000")
    conn.execute("TRUNCATE adapter_feed_position")
    bars = pd.concat(list(generate_bars(symbols=1, days=1, seed=5)), ignore_index=True)
    first_hour, rest = bars[bars.ts < bars.ts.min() + pd.Timedelta(hours=1)], bars[bars.ts >= bars.ts.min() + pd.Timedelta(hours=1)]
    now = {"t": first_hour.ts.max().to_pydatetime() + timedelta(minutes=1)}
    clock = lambda: now["t"]  # noqa: E731
    prices = PriceIngester(conn, embedded_settings, source="test", clock=clock)
    prices.ingest_frame(first_hour)
    gate = DecisionGate(conn, embedded_settings, clock=clock, max_signal_age=timedelta(days=1))
    accepted = [d for d in gate.run_once() if d.accepted and d.signal.action == "BUY"]
    assert accepted, "the first hour should give at least one accepted BUY"
    adapter = PaperAdapter(conn, embedded_settings, clock=clock)
    adapter.step(timeout=2)
    now["t"] = rest.ts.max().to_pydatetime() + timedelta(minutes=1)
    prices.ingest_frame(rest.iloc[:10])
    adapter.step(timeout=0.5)
    adapter.close()

    order = accepted[0]
    steps = dict(trace(conn, order.client_order_id).steps)
    assert steps["signal"][0]["action"] == "BUY"
    assert steps["decision"][0]["outcome"] == "ACCEPTED"
    assert [e["status"] for e in steps["order events"]][:2] == ["NEW", "ACK"]
    assert steps["fills"] and steps["fills"][0]["side"] == "BUY"
    assert steps["realized P&L"][0]["account_id"] == "A1"
    by_signal = dict(trace(conn, order.signal.signal_id).steps)  # the signal id finds the same order
    assert by_signal["decision"] == steps["decision"]


def test_json_logs_carry_the_ids_of_a_decision(conn, embedded_settings, capsys):
    logs.configure(fmt="json", level="INFO")
    try:
        accounts.add(conn, "A1", capital="100000")
        gate = DecisionGate(conn, embedded_settings, clock=lambda: T0 + timedelta(minutes=1))
        decision = gate.decide(Signal(signal_id="s-log", strategy_id="sma_crossover", symbol="AAA", timeframe="1m",
                                      signal_ts=T0, action="BUY", size_hint=1.0, confidence=1.0,
                                      ref_price=Decimal(100), atr_14=1.0))
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        logging.getLogger().handlers.clear()
    [entry] = [e for e in lines if e["logger"] == "tradeflow.gate"]
    assert entry["signal_id"] == "s-log" and entry["order_id"] == decision.client_order_id
    assert entry["account_id"] == "A1" and entry["message"] == "signal accepted BUY"


def test_trace_command_prints_every_step(embedded_settings):
    from typer.testing import CliRunner

    from tradeflow.cli import app

    result = CliRunner().invoke(app, ["trace", "tf-unknown"], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0
    for step in ("signal (0)", "decision (0)", "order events (0)", "fills (0)", "matches (0)", "position (0)"):
        assert step in result.output
