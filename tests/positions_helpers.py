"""Shared helpers for the position-accounting tests: write fills and read views."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from tradeflow.trading import accounts

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc)


def add_account(conn, account_id: str = "A1", capital: str = "100000", max_leverage: str = "2") -> None:
    accounts.add(conn, account_id, capital=capital, max_leverage=max_leverage)


def add_fills(conn, fills, *, account_id: str = "A1", strategy_id: str = "S1", symbol: str = "XYZ") -> None:
    """fills: (side, qty, price[, fee]) tuples, one minute apart, in FIFO order."""
    rows = []
    for i, fill in enumerate(fills):
        side, qty, price, fee = (*fill, "0")[:4]
        rows.append((account_id, strategy_id, f"O{i}", "F1", symbol, side, Decimal(str(qty)), Decimal(str(price)),
                     Decimal(str(fee)), "TEST", T0 + timedelta(minutes=i), "test", "b", T0))
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exec_report_history (account_id, strategy_id, order_id, fill_id, symbol, side, fill_qty,"
            " fill_price, fee, venue, exec_ts, source, batch_id, received_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)", rows)


def add_price(conn, symbol: str, close: str, minute: int = 100) -> None:
    conn.execute(
        "INSERT INTO price_1m_history (symbol, ts, open, high, low, close, volume, source, batch_id, received_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, 1, 'test', 'b', now())",
        (symbol, T0 + timedelta(minutes=minute), Decimal(close), Decimal(close), Decimal(close), Decimal(close)))


def rows(conn, query: str, params=()) -> list[dict]:
    cur = conn.execute(query, params)
    names = [c.name for c in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]
