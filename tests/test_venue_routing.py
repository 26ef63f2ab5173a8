"""Routing by account with a real broker: orders of shadow accounts (paper:*)
and of accounts marked paper (TRADEFLOW_PAPER_ACCOUNTS) go to the paper
broker, never to the venue; a real account's order never fills on paper."""
from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest
from fakes.alpaca import KEY, SECRET, FakeAlpaca
from positions_helpers import T0, rows
from typer.testing import CliRunner

from adapters.alpaca import AlpacaBroker
from ingest.prices import PriceIngester
from tradeflow.cli import app
from tradeflow.clock import utc_now
from tradeflow.ops.venue_keys import Secret
from tradeflow.trading import accounts
from tradeflow.trading.daemon import PaperAdapter
from tradeflow.trading.gate import DecisionGate, Signal


@pytest.fixture
def venue():
    fake = FakeAlpaca()
    yield fake
    fake.stop()


def bars(minute: int, price: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": "AAPL", "ts": T0 + timedelta(minutes=minute), "open": price,
                          "high": price + 1, "low": price - 1, "close": price, "volume": 1_000_000.0}])


def test_paper_orders_never_reach_the_venue_and_real_orders_never_fill_on_paper(conn, embedded_settings, venue):
    settings = dataclasses.replace(embedded_settings, paper_accounts=frozenset({"P1"}))
    conn.execute("TRUNCATE adapter_feed_position")
    clock = lambda: T0 + timedelta(minutes=1)  # noqa: E731
    prices = PriceIngester(conn, settings, source="test", clock=clock)
    prices.ingest_frame(bars(0))

    def decide(n: int, **gate_options) -> None:
        DecisionGate(conn, settings, clock=clock, **gate_options).decide(Signal(
            signal_id=f"s{n}", strategy_id="sma_crossover", symbol="AAPL", timeframe="1m", signal_ts=T0,
            action="BUY", size_hint=1.0, confidence=1.0, ref_price=Decimal(100), atr_14=5.0))

    accounts.add(conn, "REAL1", capital="1000000")
    decide(0)  # the only account: the real one
    accounts.set_status(conn, "REAL1", "BLOCKED")
    accounts.add(conn, "P1", capital="1000000")
    decide(1, shadow=True)  # the paper-marked account, and the strategy's shadow account
    by_account = {r["account_id"]: r["client_order_id"] for r in rows(
        conn, "SELECT account_id, client_order_id FROM accepted_trade_signal_history")}
    assert set(by_account) == {"REAL1", "P1", "paper:sma_crossover"}

    broker = AlpacaBroker(Secret("k", KEY), Secret("s", SECRET), url_override=venue.http,
                          stream_url_override=f"{venue.ws}/stream")
    try:
        # the venue stamps its reports with the wall clock: so does the adapter
        adapter = PaperAdapter(conn, settings, clock=utc_now, venue=broker)
        adapter.step(timeout=2)
        prices.ingest_frame(bars(1, price=101.0))
        adapter.step(timeout=0.5)
        sent = [body["client_order_id"] for method, _, body in venue.requests if method == "POST"]
        assert sent == [by_account["REAL1"]]  # no paper order reached the venue
        status = {r["client_order_id"]: r["status"] for r in rows(conn, "SELECT client_order_id, status FROM orders")}
        assert status[by_account["P1"]] == "FILLED" and status[by_account["paper:sma_crossover"]] == "FILLED"
        assert status[by_account["REAL1"]] == "ACK"  # the paper book traded the bar; the real order waits
        venue.fill(by_account["REAL1"], str(venue.order(by_account["REAL1"])["qty"]), "100.5")
        deadline = time.monotonic() + 10
        while rows(conn, "SELECT status FROM orders WHERE client_order_id = %s",
                   (by_account["REAL1"],))[0]["status"] != "FILLED":
            assert time.monotonic() < deadline
            adapter.step(timeout=0.05)
        venues = {r["order_id"]: r["venue"] for r in rows(conn, "SELECT order_id, venue FROM exec_report_history")}
        assert venues == {by_account["REAL1"]: "BROKER", by_account["P1"]: "PAPER",
                          by_account["paper:sma_crossover"]: "PAPER"}
        adapter.close()
    finally:
        broker.close()


def test_adapter_run_with_a_real_broker_and_no_keys_is_one_line_naming_the_variable(embedded_settings, monkeypatch):
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "TRADEFLOW_VENUE_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["adapter", "run", "--broker", "alpaca-paper", "--once"])
    assert result.exit_code == 2
    assert result.output.strip() == ("missing credential: set APCA_API_KEY_ID"
                                     " (or in a file named by TRADEFLOW_VENUE_CREDENTIALS_FILE)")
