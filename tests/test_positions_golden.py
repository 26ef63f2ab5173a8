"""Position accounting, golden cases worked out by hand."""
from __future__ import annotations

from decimal import Decimal as D

import pytest

from positions_helpers import add_account, add_fills, add_price, rows


@pytest.fixture
def book(conn):
    add_account(conn)
    return conn


def matches(conn):
    return [(m["closed_side"], m["matched_qty"], m["buy_price"], m["sell_price"], m["realized_pnl_gross"])
            for m in rows(conn, "SELECT * FROM trade_match_history ORDER BY match_ts, buy_order_id, sell_order_id")]


def realized(conn, column="realized_pnl"):
    [row] = rows(conn, "SELECT * FROM realized_pnl_latest")
    return row[column]


def test_long_open_add_partial_close_close(book):
    add_fills(book, [("BUY", 10, 100, 1), ("BUY", 10, 110, 1), ("SELL", 5, 120, "0.5"), ("SELL", 15, 90, "1.5")])
    assert matches(book) == [
        ("LONG", 5, 100, 120, 100),
        ("LONG", 5, 100, 90, -50),
        ("LONG", 10, 110, 90, -200),
    ]
    assert realized(book, "realized_pnl_gross") == -150
    assert realized(book, "fees") == 4  # every unit carries 0.1 from each side
    assert realized(book) == -154
    assert rows(book, "SELECT * FROM open_positions_lots") == []
    assert rows(book, "SELECT * FROM open_positions_rollup") == []
    [close] = rows(book, "SELECT event, closed_side, closed_qty FROM position_close_history")
    assert close == {"event": "FLAT", "closed_side": "LONG", "closed_qty": 15}  # what the last fill closed


def test_partial_close_leaves_the_newest_lot_open(book):
    add_fills(book, [("BUY", 10, 100), ("BUY", 10, 110), ("SELL", 15, 120)])
    [lot] = rows(book, "SELECT lot_id, side, qty_open, qty_rem, avg_price FROM open_positions_lots")
    assert lot == {"lot_id": "O1:F1", "side": "LONG", "qty_open": 10, "qty_rem": 5, "avg_price": 110}
    [position] = rows(book, "SELECT side, net_qty, avg_price, open_lots FROM open_positions_rollup")
    assert position == {"side": "LONG", "net_qty": 5, "avg_price": 110, "open_lots": 1}


def test_short_open_and_cover(book):
    add_fills(book, [("SELL", 10, 50), ("BUY", 4, 45), ("BUY", 6, 40)])
    assert matches(book) == [("SHORT", 4, 45, 50, 20), ("SHORT", 6, 40, 50, 60)]
    assert realized(book) == 80
    assert rows(book, "SELECT * FROM open_positions_rollup") == []


def test_long_to_short_in_one_fill_with_fee_split(book):
    add_fills(book, [("BUY", 10, 100, 1), ("SELL", 15, 110, "1.5")])
    [match] = rows(book, "SELECT matched_qty, realized_pnl_gross, fee_share, realized_pnl FROM trade_match_history")
    # the sell's fee is 0.1 a unit: 1.0 goes with the 10 units it closes, 0.5 stays with the short lot
    assert match == {"matched_qty": 10, "realized_pnl_gross": 100, "fee_share": D("2.0"), "realized_pnl": 98}
    [lot] = rows(book, "SELECT side, qty_open, qty_rem, avg_price FROM open_positions_lots")
    assert lot == {"side": "SHORT", "qty_open": 5, "qty_rem": 5, "avg_price": 110}
    [position] = rows(book, "SELECT side, net_qty, avg_price FROM open_positions_rollup")
    assert position == {"side": "SHORT", "net_qty": -5, "avg_price": 110}
    [flip] = rows(book, "SELECT event, closed_side, position_after FROM position_close_history")
    assert flip == {"event": "FLIP", "closed_side": "LONG", "position_after": -5}


def test_short_to_long_in_one_fill(book):
    add_fills(book, [("SELL", 10, 100), ("BUY", 25, 90)])
    assert matches(book) == [("SHORT", 10, 90, 100, 100)]
    [position] = rows(book, "SELECT side, net_qty, avg_price FROM open_positions_rollup")
    assert position == {"side": "LONG", "net_qty": 15, "avg_price": 90}


def test_many_partial_fills(book):
    add_fills(book, [("BUY", 1, 10), ("BUY", 2, 11), ("BUY", 3, 12), ("SELL", 4, 13), ("SELL", 2, 14)])
    assert matches(book) == [
        ("LONG", 1, 10, 13, 3), ("LONG", 2, 11, 13, 4), ("LONG", 1, 12, 13, 1), ("LONG", 2, 12, 14, 4),
    ]
    assert realized(book) == 12


def test_unrealized_uses_the_latest_market_price(book):
    add_fills(book, [("BUY", 10, 100), ("BUY", 10, 120), ("SELL", 10, 130)])
    add_price(book, "XYZ", "125", minute=50)
    add_price(book, "XYZ", "90", minute=40)  # older bar: not the mark
    [row] = rows(book, "SELECT net_qty, avg_price, current_price, unrealized_pnl, mark_ts FROM unrealized_pnl_latest")
    assert (row["net_qty"], row["avg_price"], row["current_price"], row["unrealized_pnl"]) == (10, 120, 125, 50)


def test_average_cost_parts_realize_against_the_running_average(book):
    add_fills(book, [("BUY", 10, 100), ("BUY", 10, 120), ("SELL", 10, 130), ("SELL", 25, 100), ("BUY", 5, 90)])
    parts = rows(book, "SELECT kind, qty, avg_price_before, avg_price_after, realized_pnl_gross"
                       " FROM int_average_cost_parts ORDER BY fill_seq, part_no")
    expected = [
        ("OPEN", 10, None, 100, None),
        ("OPEN", 10, 100, 110, None),
        ("CLOSE", 10, 110, 110, 200),       # (130 - 110) * 10
        ("CLOSE", 10, 110, None, -100),     # the flip: closes the last 10 at avg 110 ...
        ("OPEN", 15, None, 100, None),      # ... and opens a short of 15 at the fill price
        ("CLOSE", 5, 100, 100, 50),         # cover 5 at 90: (100 - 90) * 5
    ]
    assert len(parts) == len(expected)
    for part, (kind, qty, before, after, pnl) in zip(parts, expected):
        assert (part["kind"], part["qty"]) == (kind, qty)
        for got, want in ((part["avg_price_before"], before), (part["avg_price_after"], after),
                          (part["realized_pnl_gross"], pnl)):
            assert got == (None if want is None else pytest.approx(want, rel=1e-12))


def test_portfolio_cash_equity_and_exposure(book):
    add_fills(book, [("BUY", 10, 100, 1), ("SELL", 4, 110, 1)])
    add_price(book, "XYZ", "105")
    [state] = rows(book, "SELECT * FROM portfolio_state")
    assert state["cash"] == D("100000") - 1000 + 440 - 2
    assert state["market_value"] == 6 * 105
    assert state["equity"] == state["cash"] + 630
    assert (state["gross_exposure"], state["net_exposure"], state["margin_used"]) == (630, 630, D("315"))
    assert state["realized_pnl"] == 40 - D("0.4") - D("0.25") * 4  # 4 units x (0.1 buy + 0.25 sell fee)
    assert state["unrealized_pnl"] == 6 * 5


def test_pnl_timeseries_marks_equity_at_each_bar(book):
    add_fills(book, [("BUY", 10, 100)])  # at T0
    for minute, close in ((0, "100"), (1, "101"), (2, "99")):
        add_price(book, "XYZ", close, minute=minute)
    series = rows(book, "SELECT bar_ts, cash, market_value, equity FROM pnl_timeseries ORDER BY bar_ts")
    assert [r["equity"] for r in series] == [100000, 100010, 99990]
    assert all(r["cash"] == 99000 for r in series)


@pytest.fixture(scope="module")
def average_cost_book(engine_settings):
    """The same models deployed with pnl_method=average_cost into a schema of their own."""
    from dataclasses import replace

    from tradeflow import engine
    from tradeflow.dbt import run_dbt

    settings = replace(engine_settings, schema="tradeflow_average_cost")
    run_dbt(settings, ["run"], vars={"pnl_method": "average_cost"})
    with engine.connect(settings) as conn:
        yield conn


def test_average_cost_method_is_selectable(average_cost_book):
    conn = average_cost_book
    conn.execute("TRUNCATE exec_report_history, accounts, price_1m_history")
    add_account(conn)
    add_fills(conn, [("BUY", 10, 100), ("BUY", 10, 120), ("SELL", 10, 130)])
    add_price(conn, "XYZ", "125")
    [real] = rows(conn, "SELECT method, realized_pnl FROM realized_pnl_latest")
    assert real["method"] == "average_cost" and real["realized_pnl"] == pytest.approx(200)  # FIFO says 300
    [unreal] = rows(conn, "SELECT avg_price, unrealized_pnl FROM unrealized_pnl_latest")
    assert unreal["avg_price"] == pytest.approx(110) and unreal["unrealized_pnl"] == pytest.approx(150)  # FIFO: 50


PNL_MARTS = ("realized_pnl_latest", "unrealized_pnl_latest", "portfolio_state", "pnl_timeseries",
             "open_positions_rollup", "open_positions_lots", "trade_match_history", "account_risk_inputs")


def test_marts_have_one_type_per_column_and_a_fixed_scale_whatever_the_method(average_cost_book, engine_settings):
    conn = average_cost_book
    types = conn.execute("SELECT table_schema = %s, table_name, column_name, data_type FROM information_schema.columns"
                         " WHERE table_schema IN (%s, %s) AND table_name = ANY(%s)",
                         (engine_settings.schema, engine_settings.schema, "tradeflow_average_cost",
                          list(PNL_MARTS))).fetchall()
    fifo = {(table, column): kind for live, table, column, kind in types if live}
    average_cost = {(table, column): kind for live, table, column, kind in types if not live}
    assert fifo and fifo == average_cost
    assert "double precision" not in fifo.values()
    conn.execute("TRUNCATE exec_report_history, accounts, price_1m_history")
    add_account(conn)
    add_fills(conn, [("BUY", 3, 100), ("BUY", 7, 120), ("SELL", 4, 130)])
    add_price(conn, "XYZ", "125")
    [real] = rows(conn, "SELECT realized_pnl, fees FROM realized_pnl_latest")
    [unreal] = rows(conn, "SELECT net_qty, avg_price, current_price, unrealized_pnl FROM unrealized_pnl_latest")
    [state] = rows(conn, "SELECT cash, equity, margin_used FROM portfolio_state")
    assert {value.as_tuple().exponent for value in (*real.values(), unreal["unrealized_pnl"], *state.values())} == {-6}
    assert {value.as_tuple().exponent for value in (unreal["net_qty"], unreal["avg_price"], unreal["current_price"])} \
        == {-8}
    assert real["realized_pnl"] == D("64.000000") - real["fees"]  # avg 114 x 4 sold at 130, less fees
