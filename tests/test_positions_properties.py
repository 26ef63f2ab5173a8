"""Property tests: random fill sequences against a straightforward FIFO
written here in Python, whatever order the fills are inserted in; the
invariant audit views stay empty."""
from __future__ import annotations

from collections import deque
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from positions_helpers import T0, add_account, rows
from tradeflow import engine
from tradeflow.dbt import run_dbt

INVARIANTS = ("assert_position_quantity_conserved", "assert_fill_quantity_conserved", "assert_open_lots_valid",
              "assert_realized_pnl_recomputes", "assert_cash_reconciles")

quantities = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("50"), places=2)
prices = st.decimals(min_value=Decimal("1"), max_value=Decimal("200"), places=2)
fees = st.decimals(min_value=Decimal("0"), max_value=Decimal("2"), places=2)
fill_lists = st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), quantities, prices, fees,
                                st.sampled_from(["AAA", "BBB"]), st.integers(0, 3)),
                      min_size=1, max_size=25)


def reference_fifo(fills):
    """fills in FIFO order: (key, fill_id, side, qty, price). Returns matches and open lots."""
    books: dict[str, deque] = {}
    matches, realized = [], {}
    for key, fill_id, side, qty, price in fills:
        lots = books.setdefault(key, deque())
        remaining = qty
        while remaining and lots and lots[0][0] != side:
            lot_side, lot_id, lot_qty, lot_price = lots[0]
            take = min(remaining, lot_qty)
            buy, sell = (lot_id, fill_id) if lot_side == "BUY" else (fill_id, lot_id)
            buy_price, sell_price = (lot_price, price) if lot_side == "BUY" else (price, lot_price)
            matches.append((buy, sell, take))
            realized[key] = realized.get(key, 0) + (sell_price - buy_price) * take
            remaining -= take
            if take == lot_qty:
                lots.popleft()
            else:
                lots[0] = (lot_side, lot_id, lot_qty - take, lot_price)
        if remaining:
            lots.append((side, fill_id, remaining, price))
    open_lots = {(lot_id, qty) for lots in books.values() for _, lot_id, qty, _ in lots}
    return sorted(matches), open_lots, realized


@pytest.fixture(scope="module")
def audit(engine_settings):
    # creates the invariant audit views (store_failures as views): live from here on
    run_dbt(engine_settings, ["test", "--select", "test_type:singular"])
    return f"{engine_settings.schema}_audit"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fills=fill_lists, order=st.randoms(use_true_random=False))
def test_fifo_matches_reference_and_invariants_hold(engine_settings, audit, fills, order):
    ordered = []
    for i, (side, qty, price, fee, symbol, minute) in enumerate(fills):
        # equal timestamps on purpose: ties are broken by (order_id, fill_id)
        ordered.append(("A1", "S1", f"O{i:03d}", "F1", symbol, side, qty, price, fee, T0 + timedelta(minutes=minute)))
    ordered.sort(key=lambda f: (f[9], f[2], f[3]))
    inserted = list(ordered)
    order.shuffle(inserted)  # arrival order must not matter
    with engine.connect(engine_settings) as conn:
        conn.execute("TRUNCATE exec_report_history, accounts, price_1m_history")
        add_account(conn)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO exec_report_history (account_id, strategy_id, order_id, fill_id, symbol, side, fill_qty,"
                " fill_price, fee, venue, exec_ts, source, batch_id, received_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'T', %s, 'p', 'b', now())", inserted)
        want_matches, want_lots, want_realized = reference_fifo(
            [(f[4], f"{f[2]}:{f[3]}", f[5], f[6], f[7]) for f in ordered])
        got = rows(conn, "SELECT buy_order_id || ':' || buy_fill_id AS b, sell_order_id || ':' || sell_fill_id AS s,"
                         " matched_qty FROM trade_match_history")
        assert sorted((m["b"], m["s"], m["matched_qty"]) for m in got) == want_matches
        assert {(lot["lot_id"], lot["qty_rem"]) for lot in rows(conn, "SELECT * FROM open_positions_lots")} == want_lots
        got_realized = {r["symbol"]: r["realized_pnl_gross"] for r in rows(conn, "SELECT * FROM realized_pnl_latest")}
        assert {k: v for k, v in got_realized.items() if v} == {k: v for k, v in want_realized.items() if v}
        for view in INVARIANTS:
            violations = rows(conn, f"SELECT * FROM {audit}.{view}")
            assert violations == [], (view, violations)
