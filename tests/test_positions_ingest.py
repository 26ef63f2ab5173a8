"""The book through the exec ingester: duplicates, conflicts, out-of-order
arrival, an engine restart between fills, and the CLI views."""
from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from positions_helpers import T0, add_price, rows
from typer.testing import CliRunner

from ingest.execs import ExecIngester, Fill
from tradeflow import engine
from tradeflow.cli import app
from tradeflow.trading import accounts

STATE_QUERIES = {
    "rollup": "SELECT account_id, strategy_id, symbol, side, net_qty, avg_price FROM open_positions_rollup ORDER BY 1, 2, 3",
    "lots": "SELECT lot_id, qty_rem FROM open_positions_lots ORDER BY lot_id",
    "realized": "SELECT symbol, realized_pnl FROM realized_pnl_latest ORDER BY symbol",
    "matches": "SELECT match_id, matched_qty FROM trade_match_history ORDER BY match_id",
    "portfolio": "SELECT account_id, cash, equity FROM portfolio_state ORDER BY account_id",
}


def fill(i: int, side: str, qty: str, price: str, symbol: str = "XYZ", fee: str = "0.5") -> Fill:
    return Fill(account_id="A1", strategy_id="S1", order_id=f"O{i}", fill_id="1", symbol=symbol, side=side,
                fill_qty=Decimal(qty), fill_price=Decimal(price), fee=Decimal(fee), venue="TEST",
                exec_ts=T0 + timedelta(minutes=i))


FILLS = [fill(0, "BUY", "10", "100"), fill(1, "BUY", "5", "101.5"), fill(2, "SELL", "12", "103"),
         fill(3, "SELL", "8", "99", symbol="ABC"), fill(4, "BUY", "3", "97", symbol="ABC"),
         fill(5, "SELL", "9", "104")]


def state(conn) -> dict[str, list]:
    return {name: rows(conn, query) for name, query in STATE_QUERIES.items()}


@pytest.fixture
def book(conn, embedded_settings):
    accounts.add(conn, "A1", capital="100000")
    add_price(conn, "XYZ", "102")
    add_price(conn, "ABC", "98")
    return ExecIngester(conn, embedded_settings, source="test")


def test_in_order_reference_state(conn, book):
    report = book.ingest_fills(FILLS)
    assert (report.inserted, report.rejected) == (len(FILLS), 0)
    [short] = rows(conn, "SELECT symbol, side, net_qty FROM open_positions_rollup WHERE symbol = 'XYZ'")
    assert short == {"symbol": "XYZ", "side": "SHORT", "net_qty": -6}


def test_out_of_order_arrival_gives_the_same_book(conn, book):
    book.ingest_fills(FILLS)
    expected = state(conn)
    conn.execute("TRUNCATE exec_report_history")
    for f in reversed(FILLS):  # one batch per fill, newest first
        book.ingest_fills([f])
    assert state(conn) == expected


def test_resent_fills_change_nothing(conn, book):
    book.ingest_fills(FILLS)
    expected = state(conn)
    report = book.ingest_fills(FILLS + FILLS[:2])
    assert (report.inserted, report.duplicates, report.rejected) == (0, len(FILLS) + 2, 0)
    assert state(conn) == expected


def test_conflicting_fill_is_refused_and_raises_a_risk_event(conn, book):
    book.ingest_fills(FILLS)
    expected = state(conn)
    altered = fill(2, "SELL", "13", "103")  # same (order_id, fill_id), different quantity
    report = book.ingest_fills([altered])
    assert report.reasons == {"CONFLICTING_DUPLICATE": 1}
    assert state(conn) == expected
    [event] = rows(conn, "SELECT account_id, symbol, rule, severity FROM risk_events")
    assert event == {"account_id": "A1", "symbol": "XYZ", "rule": "CONFLICTING_FILL", "severity": "HIGH"}


def test_engine_restart_between_fills(conn, book, embedded_settings):
    book.ingest_fills(FILLS)
    expected = state(conn)
    conn.execute("TRUNCATE exec_report_history")
    book.ingest_fills(FILLS[:3])
    conn.close()
    assert engine.embedded(embedded_settings).stop() is True
    with engine.connect(embedded_settings) as fresh:  # starts the engine again
        ExecIngester(fresh, embedded_settings, source="test").ingest_fills(FILLS[3:])
        assert state(fresh) == expected


def test_cli_shows_positions_and_pnl_after_a_file_of_execs(book, tmp_path):
    path = tmp_path / "execs.jsonl"
    path.write_text("\n".join(json.dumps({
        "account_id": f.account_id, "strategy_id": f.strategy_id, "order_id": f.order_id, "fill_id": f.fill_id,
        "symbol": f.symbol, "side": f.side, "fill_qty": str(f.fill_qty), "fill_price": str(f.fill_price),
        "fee": str(f.fee), "venue": f.venue, "exec_ts": f.exec_ts.isoformat()}) for f in FILLS))
    runner = CliRunner()
    ingested = runner.invoke(app, ["ingest", "execs", str(path)], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert ingested.exit_code == 0 and '"inserted": 6' in ingested.output
    shown = runner.invoke(app, ["positions"], env={"COLUMNS": "200"}, catch_exceptions=False).output
    assert "XYZ" in shown and "SHORT" in shown and "ABC" in shown
    pnl = runner.invoke(app, ["pnl", "--account", "A1"], env={"COLUMNS": "200"}, catch_exceptions=False).output
    assert "realized P&L by account and strategy" in pnl and "portfolio" in pnl and "A1" in pnl
