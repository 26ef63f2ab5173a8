"""The execution adapter on the embedded engine with the paper broker:
accepted orders reach the broker once, fills come back through the exec
ingester, and a crash at any point loses or duplicates nothing."""
from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from positions_helpers import T0, rows

from adapters.changefeed import PostgresPollingFeed, position_store
from adapters.execution import ACCEPTED_ORDER_KEY, ACCEPTED_ORDERS, ExecutionAdapter
from adapters.orders import OrderType, TimeInForce
from adapters.paper import PaperBroker, PaperConfig
from tradeflow import engine
from tradeflow.trading import accounts, policy
from tradeflow.trading.gate import DecisionGate, Signal


class Crash(Exception):
    """Stands for the process dying at that point."""


def signal(n: int, symbol: str) -> Signal:
    return Signal(signal_id=f"s:{symbol}:{n}", strategy_id="sma_crossover", symbol=symbol, timeframe="1m",
                  signal_ts=T0 + timedelta(minutes=n), action="BUY", size_hint=1.0, confidence=1.0,
                  ref_price=Decimal("100"), atr_14=5.0)


def bar(broker: PaperBroker, symbol: str, minute: int, price: str = "100") -> None:
    p = Decimal(price)
    broker.on_bar(symbol, T0 + timedelta(minutes=minute), p, p + 1, p - 1, p, Decimal(1_000_000))


@pytest.fixture
def setup(conn, embedded_settings):
    accounts.add(conn, "A1", capital="1000000", max_leverage="1")
    policy.update(conn, "A1", max_open_symbols=10)
    clock = {"now": T0 + timedelta(minutes=1)}
    gate = DecisionGate(conn, embedded_settings, clock=lambda: clock["now"])
    broker = PaperBroker(PaperConfig(fee_per_share=Decimal("0.01")), clock=lambda: clock["now"])

    def adapter(consumer: str = "adapter-test") -> ExecutionAdapter:
        store = position_store(embedded_settings, conn, consumer)
        feed = PostgresPollingFeed(lambda: engine.connect(embedded_settings), embedded_settings.schema,
                                   ACCEPTED_ORDERS, ACCEPTED_ORDER_KEY, consumer=consumer,
                                   start_position=store.load(), poll_interval=0.05)
        return ExecutionAdapter(conn, embedded_settings, broker, feed, store, clock=lambda: clock["now"])

    conn.execute("TRUNCATE adapter_feed_position")
    return gate, broker, adapter, clock


def test_accepted_order_is_filled_at_the_next_bar_and_updates_the_position(conn, setup):
    gate, broker, make_adapter, clock = setup
    decision = gate.decide(signal(0, "AAA"))
    adapter = make_adapter()
    assert adapter.submit_accepted(timeout=2) == 1
    bar(broker, "AAA", 1, "101")
    adapter.process_reports()
    statuses = [r["status"] for r in rows(conn, "SELECT status FROM order_history ORDER BY event_ts, filled_qty")]
    assert statuses == ["NEW", "ACK", "FILLED"]
    [position] = rows(conn, "SELECT account_id, net_qty, avg_price FROM open_positions_rollup")
    assert position == {"account_id": "A1", "net_qty": decision.qty, "avg_price": Decimal("101")}
    [fill] = rows(conn, "SELECT order_id, fee, venue FROM exec_report_history")
    assert fill == {"order_id": decision.client_order_id, "fee": decision.qty * Decimal("0.01"), "venue": "PAPER"}


def test_crash_before_saving_the_feed_position_resubmits_without_duplicating(conn, setup):
    gate, broker, make_adapter, clock = setup
    for n, symbol in enumerate(["AAA", "BBB"]):
        gate.decide(signal(n, symbol))
    first = make_adapter()
    first.positions.save = lambda position: (_ for _ in ()).throw(Crash())  # dies right after submitting
    with pytest.raises(Crash):
        first.submit_accepted(timeout=2)
    second = make_adapter()
    assert second.submit_accepted(timeout=2) == 2  # re-delivered ...
    second.process_reports()
    acks = rows(conn, "SELECT client_order_id FROM order_events WHERE status = 'ACK'")
    assert len(acks) == 2  # ... but each order exists once at the broker and once in the log


@pytest.mark.parametrize("seed", range(5))
def test_killed_at_random_points_loses_and_duplicates_nothing(conn, setup, seed):
    gate, broker, make_adapter, clock = setup
    rng = random.Random(seed)
    symbols = [f"S{i}" for i in range(6)]
    for n, symbol in enumerate(symbols):
        gate.decide(signal(n, symbol))
    adapter, minute, crashes = make_adapter(), 1, 0
    for _ in range(40):
        try:
            if rng.random() < 0.3:
                crash_after = rng.choice(["fetch", "save", "reports"])
                if crash_after == "save":
                    adapter.positions.save = lambda position: (_ for _ in ()).throw(Crash())
                adapter.submit_accepted(max_rows=rng.randint(1, 3), timeout=0.2)
                if crash_after in {"fetch", "save"}:
                    raise Crash()
                adapter.process_reports()
                raise Crash()
            adapter.submit_accepted(max_rows=rng.randint(1, 3), timeout=0.2)
            for symbol in symbols:
                bar(broker, symbol, minute)
            minute += 1
            adapter.process_reports()
        except Crash:
            crashes += 1
            adapter = make_adapter()  # a new process resumes from the stored position
    adapter.submit_accepted(timeout=0.5)
    for symbol in symbols:
        bar(broker, symbol, minute)
    adapter.process_reports()
    assert crashes > 0
    acks = rows(conn, "SELECT client_order_id, count(*) AS n FROM order_events WHERE status = 'ACK'"
                      " GROUP BY client_order_id")
    assert len(acks) == len(symbols) and all(a["n"] == 1 for a in acks)
    filled = rows(conn, "SELECT count(*) AS n FROM orders WHERE status = 'FILLED'")[0]["n"]
    assert filled == len(symbols)
    fills = rows(conn, "SELECT order_id, sum(fill_qty) AS q FROM exec_report_history GROUP BY order_id")
    decided = {r["client_order_id"]: r["qty"] for r in rows(conn, "SELECT client_order_id, qty FROM accepted_trade_signal_history")}
    assert {f["order_id"]: f["q"] for f in fills} == decided


def test_limit_orders_from_strategy_terms_fill_only_when_the_bar_reaches_the_limit(conn, setup, embedded_settings,
                                                                                   monkeypatch):
    from tradeflow.trading import gate as gate_module
    from tradeflow.trading.gate import Sizing

    gate, broker, make_adapter, clock = setup
    terms = Sizing(order_type=OrderType.LIMIT, limit_offset_bps=Decimal(100), time_in_force=TimeInForce.GTC)
    monkeypatch.setattr(gate_module, "sizing_from_params", lambda params: terms)  # as the strategy's params would
    decision = gate.decide(signal(0, "AAA"))
    assert decision.accepted and decision.terms == terms
    [order] = rows(conn, "SELECT order_type, time_in_force, limit_price FROM accepted_trade_signal_history")
    assert order == {"order_type": "LIMIT", "time_in_force": "GTC", "limit_price": Decimal("99.00")}
    adapter = make_adapter()
    adapter.submit_accepted(timeout=2)
    bar(broker, "AAA", 1, "101")   # low 100: above the 99 limit
    adapter.process_reports()
    assert [r["status"] for r in rows(conn, "SELECT status FROM orders")] == ["ACK"]
    bar(broker, "AAA", 2, "99.5")  # low 98.5: reaches it
    adapter.process_reports()
    [fill] = rows(conn, "SELECT fill_price FROM exec_report_history")
    assert fill == {"fill_price": Decimal("99.00")}


def test_reports_polled_but_not_written_before_a_crash_are_reconciled_at_start_up(conn, setup):
    gate, broker, make_adapter, clock = setup
    decisions = [gate.decide(signal(n, symbol)) for n, symbol in enumerate(["AAA", "BBB"])]
    first = make_adapter()
    first.submit_accepted(timeout=2)
    first.process_reports()  # ACKs written
    bar(broker, "AAA", 1, "101")
    bar(broker, "BBB", 1, "102")
    lost = broker.poll_events()  # the broker's fills reached the adapter, which died before writing them
    assert [e.status for e in lost] == ["FILLED", "FILLED"]
    assert rows(conn, "SELECT count(*) AS n FROM exec_report_history") == [{"n": 0}]
    second = make_adapter()  # the broker (a venue) outlived the adapter
    assert second.reconcile() == 2
    assert second.reconcile() == 0  # nothing left to reconcile, nothing written twice
    fills = rows(conn, "SELECT order_id, fill_qty, fill_price FROM exec_report_history ORDER BY fill_price")
    assert fills == [{"order_id": d.client_order_id, "fill_qty": d.qty, "fill_price": Decimal(price)}
                     for d, price in zip(decisions, ("101", "102"))]
    assert {r["status"] for r in rows(conn, "SELECT status FROM orders")} == {"FILLED"}


def test_a_fill_stamped_ahead_of_the_adapters_clock_waits_for_it_and_is_never_lost(conn, setup):
    """Two clocks: the venue stamps the fill 19 minutes after the adapter's now, beyond
    max_future_skew (5 min). Recording the FILLED event without its fill (dead-lettered
    as future-stamped) would close the order and lose the position."""
    gate, broker, make_adapter, clock = setup
    decision = gate.decide(signal(0, "AAA"))
    adapter = make_adapter()
    assert adapter.submit_accepted(timeout=2) == 1
    bar(broker, "AAA", 20, "101")
    adapter.process_reports()

    def statuses() -> list[str]:
        return [r["status"] for r in rows(conn, "SELECT status FROM order_history ORDER BY event_ts, filled_qty")]

    assert statuses() == ["NEW", "ACK"]
    assert rows(conn, "SELECT * FROM exec_report_history") == []
    assert rows(conn, "SELECT * FROM dead_letter") == []
    clock["now"] = T0 + timedelta(minutes=17)  # within the skew of the fill's stamp (minute 20)
    adapter.process_reports()
    assert statuses() == ["NEW", "ACK", "FILLED"]
    [fill] = rows(conn, "SELECT order_id, exec_ts FROM exec_report_history")
    assert fill == {"order_id": decision.client_order_id, "exec_ts": T0 + timedelta(minutes=20)}
    [position] = rows(conn, "SELECT net_qty FROM open_positions_rollup")
    assert position == {"net_qty": decision.qty}
    assert rows(conn, "SELECT * FROM dead_letter") == []
