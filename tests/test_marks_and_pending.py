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
