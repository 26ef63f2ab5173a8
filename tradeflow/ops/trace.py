"""One order's path through the views: signal -> decision -> order events ->
fills -> FIFO matches -> the position and realized P&L of its key."""
from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Trace:
    order_id: str
    steps: list[tuple[str, list[dict]]]  # (step name, rows)


STEPS = (
    ("signal", "SELECT s.signal_ts, s.strategy_id, s.symbol, s.timeframe, s.action, s.confidence, s.reason"
               " FROM strategy_signal_history s JOIN trade_decisions d ON d.signal_id = s.signal_id"
               " WHERE d.client_order_id = %(o)s"),
    ("decision", "SELECT decided_at, account_id, outcome, reject_code, qty, ref_price, decision_id"
                 " FROM trade_decisions WHERE client_order_id = %(o)s"),
    ("order events", "SELECT event_ts, status, filled_qty, broker_order_id, reason, source"
                     " FROM order_history WHERE client_order_id = %(o)s ORDER BY event_ts, filled_qty"),
    ("fills", "SELECT exec_ts, fill_id, side, fill_qty, fill_price, fee, venue FROM stg_execs"
              " WHERE order_id = %(o)s ORDER BY exec_ts, fill_id"),
    ("matches", "SELECT match_ts, match_id, matched_qty, buy_price, sell_price, realized_pnl FROM trade_match_history"
                " WHERE buy_order_id = %(o)s OR sell_order_id = %(o)s ORDER BY match_ts, match_id"),
    ("position", "SELECT r.account_id, r.strategy_id, r.symbol, r.side, r.net_qty, r.avg_price, r.last_updated"
                 " FROM open_positions_rollup r JOIN trade_decisions d ON d.account_id = r.account_id"
                 " AND d.strategy_id = r.strategy_id AND d.symbol = r.symbol WHERE d.client_order_id = %(o)s"),
    ("realized P&L", "SELECT p.account_id, p.strategy_id, p.symbol, p.method, p.realized_pnl, p.fees"
                     " FROM realized_pnl_latest p JOIN trade_decisions d ON d.account_id = p.account_id"
                     " AND d.strategy_id = p.strategy_id AND d.symbol = p.symbol WHERE d.client_order_id = %(o)s"),
)


def trace(conn: psycopg.Connection, order_or_signal_id: str) -> Trace:
    """Accepts a client order id or the signal (decision) id it came from."""
    row = conn.execute("SELECT client_order_id FROM trade_decisions WHERE signal_id = %s AND client_order_id IS NOT NULL",
                       (order_or_signal_id,)).fetchone()
    order_id = row[0] if row else order_or_signal_id
    steps = []
    for name, query in STEPS:
        cur = conn.execute(query, {"o": order_id})
        names = [c.name for c in cur.description]
        steps.append((name, [dict(zip(names, r)) for r in cur.fetchall()]))
    return Trace(order_id, steps)
