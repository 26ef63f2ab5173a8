"""Marks are the last close at or before t (pnl_timeseries, unrealized_pnl_latest,
portfolio_state), and a working order reserves its unfilled remainder
(int_pending_orders)."""
from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal as D

import pandas as pd
import pytest

from positions_helpers import T0, add_account, rows

CAPITAL = D("100000")


def insert_fills(conn, fills, account_id="A1", strategy_id="S1"):
    """fills: (symbol, side, qty, price, fee, exec_ts)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exec_report_history (account_id, strategy_id, order_id, fill_id, symbol, side, fill_qty,"
            " fill_price, fee, venue, exec_ts, source, batch_id, received_at)"
            " VALUES (%s, %s, %s, 'F1', %s, %s, %s, %s, %s, 'TEST', %s, 'test', 'b', now())",
            [(account_id, strategy_id, f"O{i}", symbol, side, D(str(qty)), D(str(price)), D(str(fee)), ts)
             for i, (symbol, side, qty, price, fee, ts) in enumerate(fills)])


def insert_bars(conn, bars):
    """bars: (symbol, bar_ts, close)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO price_1m_history (symbol, ts, open, high, low, close, volume, source, batch_id, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, 1, 'test', 'b', now())",
            [(symbol, ts, D(str(c)), D(str(c)), D(str(c)), D(str(c))) for symbol, ts, c in bars])


def expected_equity(fills, bars, capital=CAPITAL) -> pd.DataFrame:
    """Independent of the view: at every bar close (bar_ts + 1 minute) of a
    traded symbol after its first fill, cash from the fills stamped before the
    close plus each position at the forward-filled close (cost before the
    symbol's first close)."""
    fills_df = pd.DataFrame(fills, columns=["symbol", "side", "qty", "price", "fee", "ts"])
    bars_df = pd.DataFrame(bars, columns=["symbol", "bar_ts", "close"])
    bars_df["at"] = bars_df["bar_ts"] + timedelta(minutes=1)
    first_fill = fills_df.groupby("symbol")["ts"].min()
    closes = (bars_df.pivot(index="at", columns="symbol", values="close").sort_index().ffill())
    instants = sorted({at for symbol, at in zip(bars_df["symbol"], bars_df["at"])
                       if symbol in first_fill and at > first_fill[symbol]})
    out = []
    for at in instants:
        before = fills_df[fills_df["ts"] < at]
        signed = [D(str(q)) if side == "BUY" else -D(str(q)) for side, q in zip(before["side"], before["qty"])]
        cash = capital + sum((-s * D(str(p)) - D(str(f))
                              for s, p, f in zip(signed, before["price"], before["fee"])), D(0))
        value = D(0)
        for symbol in before["symbol"].unique():
            mine = [(s, D(str(p))) for s, p, sym in zip(signed, before["price"], before["symbol"]) if sym == symbol]
            position = sum((s for s, _ in mine), D(0))
            known = closes.loc[:at, symbol].dropna() if symbol in closes else pd.Series(dtype=object)
            value += position * D(str(known.iloc[-1])) if len(known) else sum((s * p for s, p in mine), D(0))
        out.append({"bar_ts": at - timedelta(minutes=1), "cash": cash, "market_value": value,
                    "equity": cash + value})
    return pd.DataFrame(out)


def series(conn, account_id="A1") -> pd.DataFrame:
    return pd.DataFrame(rows(conn, "SELECT bar_ts, cash, market_value, equity FROM pnl_timeseries"
                                   " WHERE account_id = %s ORDER BY bar_ts", (account_id,)))


def misaligned_book(seed: int, opening_side: str = "BUY"):
    """Two symbols whose bars never share a minute (A on even minutes, B on
    odd ones, with gaps), a position held in each, trades in between."""
    rng = random.Random(seed)
    bars, last_close = [], {}
    for symbol, parity, price in (("AAA", 0, 100.0), ("BBB", 1, 50.0)):
        for minute in range(parity, 120, 2):
            price *= 1 + rng.uniform(-0.01, 0.01)
            last_close[(symbol, minute)] = price
            if rng.random() < 0.8:  # and some minutes have no bar at all
                bars.append((symbol, T0 + timedelta(minutes=minute), f"{price:.2f}"))
    fills = [("AAA", opening_side, 100, "100.10", "1.00", T0 + timedelta(minutes=3, seconds=10)),
             ("BBB", opening_side, 200, "50.05", "0.50", T0 + timedelta(minutes=4, seconds=20))]
    for k in range(8):
        symbol, minute = rng.choice([("AAA", 10 + 12 * k), ("BBB", 11 + 12 * k)])
        price = last_close[(symbol, minute)] * (1 + rng.uniform(-0.002, 0.002))
        fills.append((symbol, rng.choice(["BUY", "SELL"]), rng.randint(1, 40), f"{price:.2f}",
                      "0.10", T0 + timedelta(minutes=minute + 1, seconds=rng.choice([0, 30]))))
    return fills, bars


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_equity_marks_each_symbol_at_its_last_close(conn, seed):
    add_account(conn)
    fills, bars = misaligned_book(seed)
    insert_fills(conn, fills)
    insert_bars(conn, bars)
    got = series(conn)
    want = expected_equity(fills, bars)
    assert len(got) == len(want) > 80
    assert got["bar_ts"].tolist() == want["bar_ts"].tolist()
    for column in ("cash", "market_value", "equity"):
        assert got[column].tolist() == want[column].tolist(), column  # exact decimals
    # no cliff: bars move 1% at most, and both positions together are ~20% of the account
    steps = [abs(b / a - 1) for a, b in zip(got["equity"], got["equity"][1:])]
    assert max(steps) < D("0.01")
    # the last close is after the last fill: portfolio_state marks the same
    [state] = rows(conn, "SELECT equity FROM portfolio_state")
    assert state["equity"] == got["equity"].iloc[-1]


def test_fill_between_bars_uses_the_last_close_before_it(conn):
    add_account(conn)
    insert_bars(conn, [("AAA", T0, "100"), ("AAA", T0 + timedelta(minutes=5), "104"),
                       ("BBB", T0 + timedelta(minutes=2), "10"), ("BBB", T0 + timedelta(minutes=3), "11")])
    # AAA bought between its bars at 102: marked at 100 (the close at T0+1m) until its next close
    insert_fills(conn, [("BBB", "BUY", 10, "10", "0", T0 + timedelta(minutes=1)),
                        ("AAA", "BUY", 10, "102", "1", T0 + timedelta(minutes=2, seconds=30))])
    got = rows(conn, "SELECT bar_ts, cash, market_value, equity FROM pnl_timeseries ORDER BY bar_ts")
    assert got == [
        {"bar_ts": T0 + timedelta(minutes=2), "cash": CAPITAL - 1121, "market_value": 100 + 1000,
         "equity": CAPITAL - 21},
        {"bar_ts": T0 + timedelta(minutes=3), "cash": CAPITAL - 1121, "market_value": 110 + 1000,
         "equity": CAPITAL - 11},
        {"bar_ts": T0 + timedelta(minutes=5), "cash": CAPITAL - 1121, "market_value": 110 + 1040,
         "equity": CAPITAL + 29},
    ]


def test_position_opened_before_any_close_is_valued_at_cost(conn):
    add_account(conn)
    insert_fills(conn, [("AAA", "BUY", 10, "100", "1", T0), ("BBB", "BUY", 5, "20", "0", T0),
                        ("AAA", "BUY", 10, "110", "1", T0 + timedelta(minutes=2, seconds=30))])
    insert_bars(conn, [("BBB", T0 + timedelta(minutes=1), "21"), ("BBB", T0 + timedelta(minutes=2), "22"),
                       ("AAA", T0 + timedelta(minutes=2), "105")])
    got = rows(conn, "SELECT bar_ts, market_value, equity FROM pnl_timeseries ORDER BY bar_ts")
    assert got == [
        # AAA has no close yet: its 10 units count at the 1000 paid
        {"bar_ts": T0 + timedelta(minutes=1), "market_value": 1000 + 105, "equity": CAPITAL + 4},
        # AAA's first close: 20 units at 105 (the second buy paid 1100); BBB at 22
        {"bar_ts": T0 + timedelta(minutes=2), "market_value": 2100 + 110, "equity": CAPITAL + 8},
    ]


def test_drawdown_peak_has_no_cliff(conn):
    """The issue's case: with bars that do not line up, the peak the drawdown
    check reads is the peak of the real equity curve (two short positions:
    unmarking one at a minute where only the other printed was an upward
    cliff, a false peak, and a drawdown block)."""
    add_account(conn)
    fills, bars = misaligned_book(7, opening_side="SELL")
    insert_fills(conn, fills)
    insert_bars(conn, bars)
    [risk] = rows(conn, "SELECT equity, peak_equity FROM account_risk_inputs")
    want = expected_equity(fills, bars)
    assert risk["peak_equity"] == max(max(want["equity"]), CAPITAL, risk["equity"])
    assert (risk["peak_equity"] - risk["equity"]) / risk["peak_equity"] < D("0.05")


# --------------------------------------------------------------------------- int_pending_orders

def accept(conn, order_id, action, qty, account_id="A1", symbol="AAA"):
    conn.execute(
        "INSERT INTO trade_decisions (decision_id, signal_id, strategy_id, symbol, action, account_id, outcome, qty,"
        " ref_price, client_order_id, inputs, signal_ts, decided_at, gate_id)"
        " VALUES (%s, %s, 'S1', %s, %s, %s, 'ACCEPTED', %s, 100, %s, '{}', %s, %s, 'test')",
        (f"D-{order_id}", f"SIG-{order_id}", symbol, action, account_id, D(qty), order_id, T0, T0))


def order_event(conn, order_id, status, filled_qty="0", qty="100", side="SELL", minute=0):
    conn.execute(
        "INSERT INTO order_events (client_order_id, account_id, strategy_id, symbol, side, order_type, time_in_force,"
        " qty, status, filled_qty, event_ts, source) VALUES (%s, 'A1', 'S1', 'AAA', %s, 'MARKET', 'DAY', %s, %s, %s,"
        " %s, 'test')", (order_id, side, D(qty), status, D(filled_qty), T0 + timedelta(minutes=minute)))


def fill(conn, order_id, fill_id, qty, side="SELL", minute=1):
    conn.execute(
        "INSERT INTO exec_report_history (account_id, strategy_id, order_id, fill_id, symbol, side, fill_qty,"
        " fill_price, fee, venue, exec_ts, source, batch_id, received_at)"
        " VALUES ('A1', 'S1', %s, %s, 'AAA', %s, %s, 100, 0, 'TEST', %s, 'test', 'b', now())",
        (order_id, fill_id, side, D(qty), T0 + timedelta(minutes=minute)))


def pending(conn):
    return {r["client_order_id"]: (r["open_qty"], r["status"], r["acknowledged"])
            for r in rows(conn, "SELECT client_order_id, open_qty, status, acknowledged FROM int_pending_orders")}


def test_partial_sell_keeps_reserving_its_remainder(conn):
    add_account(conn)
    accept(conn, "SELL-1", "SELL", "100")
    order_event(conn, "SELL-1", "NEW")
    order_event(conn, "SELL-1", "ACK", minute=1)
    fill(conn, "SELL-1", "F1", "30", minute=2)
    order_event(conn, "SELL-1", "PARTIAL", filled_qty="30", minute=2)
    assert pending(conn) == {"SELL-1": (70, "PARTIAL", True)}
    fill(conn, "SELL-1", "F2", "50", minute=3)  # before its PARTIAL event: the fills count
    assert pending(conn) == {"SELL-1": (20, "PARTIAL", True)}
    fill(conn, "SELL-1", "F3", "20", minute=4)
    assert pending(conn) == {}  # nothing left to sell, even before the FILLED event


@pytest.mark.parametrize("events,fills,expected", [
    ([], [], (100, "NEW", False)),                               # decided, not yet sent
    (["NEW"], [], (100, "NEW", False)),                          # sent, never acknowledged: the TTL may release it
    (["NEW", "ACK"], [], (100, "ACK", True)),                    # working at the broker, whatever its age
    (["NEW"], ["40"], (60, "NEW", True)),                        # a fill proves the broker has it
    (["NEW", "ACK", "CANCELLED"], [], None),                     # terminal: nothing reserved
    (["NEW", "ACK", "PARTIAL", "EXPIRED"], ["40"], None),
    (["NEW", "REJECTED"], [], None),
    (["NEW", "ACK", "PARTIAL", "FILLED"], ["40", "60"], None),
])
def test_every_working_order_reserves_its_unfilled_remainder(conn, events, fills, expected):
    add_account(conn)
    accept(conn, "O-1", "BUY", "100")
    for minute, status in enumerate(events):
        order_event(conn, "O-1", status, side="BUY", minute=minute)
    for n, qty in enumerate(fills):
        fill(conn, "O-1", f"F{n}", qty, side="BUY", minute=n)
    assert pending(conn) == ({} if expected is None else {"O-1": expected})


def test_position_without_any_close_counts_at_cost_in_portfolio_state(conn):
    add_account(conn)
    insert_fills(conn, [("AAA", "BUY", 10, "100", "1", T0), ("AAA", "BUY", 10, "110", "1", T0 + timedelta(minutes=1)),
                        ("BBB", "BUY", 5, "20", "0", T0)])
    insert_bars(conn, [("BBB", T0 + timedelta(minutes=1), "22")])
    [state] = rows(conn, "SELECT cash, market_value, gross_exposure, equity, unrealized_pnl, open_symbols"
                         " FROM portfolio_state")
    assert state == {"cash": CAPITAL - 2202, "market_value": 2100 + 110, "gross_exposure": 2100 + 110,
                     "equity": CAPITAL + 8, "unrealized_pnl": 10, "open_symbols": 2}
    [last] = rows(conn, "SELECT equity FROM pnl_timeseries ORDER BY bar_ts DESC LIMIT 1")
    assert last["equity"] == state["equity"]  # the same marks, no fill after the last close


# --------------------------------------------------------------------------- peak equity and price retention

@pytest.mark.slow
@pytest.mark.parametrize("target,retention", [
    ("risingwave", "ts > now() - interval '336 hours'"),
    ("materialize", "mz_now() <= ts + interval '336 hours'"),
    ("embedded", None),
])
def test_equity_series_reads_prices_within_retention_on_streaming_engines(tmp_path, target, retention):
    """docs/positions.md: on the streaming engines pnl_timeseries (and so
    account_risk_inputs.peak_equity) has rows for the retained bars only, the
    last 336 hours; the embedded engine reads all price history."""
    from tradeflow.portability import compile_inline

    closes, _, rows_read = compile_inline(
        target, tmp_path, "{{ traded_closes('first_fills') }} @@ {{ price_rows() }}").partition(" @@ ")
    normalized = " ".join(rows_read.split())
    if retention is None:
        assert "price_1m_history" in closes and "stg_prices" not in closes
        assert "now()" not in normalized
    else:
        assert '"stg_prices"' in closes and "price_1m_history" not in closes
        assert f"where {retention}" in normalized


@pytest.mark.slow
def test_streaming_closes_equal_the_embedded_index_reads(conn, tmp_path):
    """The streaming engines' traded_closes (band joins over stg_prices, run
    here on the embedded engine) gives the rows the embedded engine's index
    reads give."""
    from tradeflow.portability import compile_inline

    add_account(conn)
    fills, bars = misaligned_book(4)
    insert_fills(conn, fills)
    insert_bars(conn, bars)
    first_fills = ("with first_fills as (select account_id, symbol, min(exec_ts) as first_fill_ts"
                   " from stg_execs group by account_id, symbol) ")
    order = " order by account_id, symbol, bar_ts"
    default, _, postgres = compile_inline(
        "embedded", tmp_path,
        "{{ default__traded_closes('first_fills') }} @@ {{ postgres__traded_closes('first_fills') }}").partition(" @@ ")
    streaming = rows(conn, first_fills + "select * from (" + default + ") as closes" + order)
    embedded = rows(conn, first_fills + "select * from (" + postgres + ") as closes" + order)
    assert streaming == embedded
    assert sum(r["is_opening"] for r in embedded) == 2 and len(embedded) > 80
