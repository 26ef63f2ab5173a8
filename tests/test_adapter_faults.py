"""The adapter killed (os._exit, as kill -9) at each of its write points and at
random ones, restarted each time with its paper book rebuilt from the
database: no order or fill lost or duplicated, positions equal to fills, and
every order's clock moving forward. bench/bench_faults.py runs the same at
scale (>= 100 kills per point)."""
from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

import pytest
from fault_harness import Episode
from positions_helpers import T0, rows

from adapters import execution
from adapters.changefeed import PostgresPollingFeed, position_store
from adapters.execution import (
    ACCEPTED_ORDER_KEY,
    ACCEPTED_ORDERS,
    ORDER_COMMAND_KEY,
    ORDER_COMMANDS,
    WRITE_POINTS,
    ExecutionAdapter,
)
from adapters.paper import PaperBroker, PaperConfig
from tradeflow import engine
from tradeflow.trading import accounts, orders, policy
from tradeflow.trading.gate import DecisionGate, Signal


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_killed_at_a_write_point_loses_and_duplicates_nothing(conn, embedded_settings, point):
    episode = Episode(embedded_settings, conn, random.Random(point))
    episode.decide(2)
    episode.run_adapter()
    killed = sum(episode.kill_at(point) for _ in range(2))
    tally = episode.finish()
    assert killed == 2 and tally.kills == {point: 2}
    assert tally.orders >= 2
    assert (tally.lost_orders, tally.duplicated_orders, tally.lost_fills, tally.duplicated_fills) == (0, 0, 0, 0)
    assert (tally.unfinished_orders, tally.clock_violations, tally.position_mismatches) == (0, 0, 0)


def test_killed_at_random_points_loses_and_duplicates_nothing(conn, embedded_settings):
    episode = Episode(embedded_settings, conn, random.Random(13))
    kills = 0
    for _ in range(20):
        kills += episode.random_kill()
        if kills == 4:
            break
    tally = episode.finish()
    assert sum(tally.kills.values()) == kills == 4
    assert (tally.lost_orders, tally.duplicated_orders, tally.lost_fills, tally.duplicated_fills) == (0, 0, 0, 0)
    assert (tally.unfinished_orders, tally.clock_violations, tally.position_mismatches) == (0, 0, 0)


class Crash(Exception):
    """Stands for the process dying at a write point: with autocommit, what was written stays."""


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_without_transactions_a_broker_that_outlives_the_adapter_lets_a_restart_redo_the_step(
        conn, embedded_settings, monkeypatch, point):
    """RisingWave and Materialize have no multi-table write transactions: each write
    commits alone, in the order fills, events, position. Killed between any two,
    a restarted adapter redoes the step from the feeds and the broker's order history."""
    accounts.add(conn, "A1", capital="1000000", max_leverage="1")
    policy.update(conn, "A1", max_open_symbols=10)
    conn.execute("TRUNCATE adapter_feed_position")
    clock = {"now": T0 + timedelta(minutes=1)}
    gate = DecisionGate(conn, embedded_settings, clock=lambda: clock["now"])
    broker = PaperBroker(PaperConfig(), clock=lambda: clock["now"])  # the venue: outlives every adapter
    kills = []

    def crash_point(name: str) -> None:
        if name == point and len(kills) < 2:
            kills.append(name)
            raise Crash()

    monkeypatch.setattr(execution, "crash_point", crash_point)

    def feed(relation: str, key: tuple[str, ...], store):
        return PostgresPollingFeed(lambda: engine.connect(embedded_settings), embedded_settings.schema, relation,
                                   key, consumer=store.consumer, start_position=store.load(), poll_interval=0.05)

    def start() -> tuple[ExecutionAdapter, object, object]:
        orders_store, commands_store = (position_store(embedded_settings, conn, f"redo-{n}") for n in ("o", "c"))
        adapter = ExecutionAdapter(conn, embedded_settings, broker, feed(ACCEPTED_ORDERS, ACCEPTED_ORDER_KEY,
                                                                         orders_store), orders_store,
                                   clock=lambda: clock["now"])
        adapter.transactional = False  # as on the streaming engines
        return adapter, feed(ORDER_COMMANDS, ORDER_COMMAND_KEY, commands_store), commands_store

    decisions = [gate.decide(Signal(signal_id=f"s{n}", strategy_id="sma_crossover", symbol=symbol, timeframe="1m",
                                    signal_ts=T0, action="BUY", size_hint=1.0, confidence=1.0,
                                    ref_price=Decimal(100), atr_14=5.0)) for n, symbol in enumerate(["AAA", "BBB"])]
    assert all(d.accepted for d in decisions)
    adapter, commands, commands_store = start()
    cancelled = False
    for minute in range(1, 12):
        clock["now"] = T0 + timedelta(minutes=minute, seconds=5)
        try:
            if minute > 1:
                adapter.reconcile()
            adapter.submit_accepted(timeout=0.2)
            if minute == 3 and not cancelled:
                orders.request_cancel(conn, decisions[1].client_order_id, reason="fault test")
                cancelled = True
            adapter.apply_commands(commands, commands_store)
            for symbol in ("AAA", "BBB"):  # 10% of 2000 a bar: orders fill over several bars
                p = Decimal(100)
                broker.on_bar(symbol, T0 + timedelta(minutes=minute), p, p + 1, p - 1, p, Decimal(2000))
            adapter.process_reports()
        except Crash:
            adapter.feed.close()
            commands.close()
            adapter, commands, commands_store = start()  # a new process, the broker still up
    adapter.reconcile()
    adapter.feed.close()
    commands.close()

    assert kills[:1] == [point]  # position_saved is reached once: the saved position is not re-delivered
    acks = rows(conn, "SELECT client_order_id, count(*) AS n FROM order_events WHERE status = 'ACK'"
                      " GROUP BY client_order_id")
    assert sorted(a["n"] for a in acks) == [1, 1]
    latest = {r["client_order_id"]: r for r in rows(conn, "SELECT client_order_id, status, filled_qty FROM orders")}
    assert {coid: r["status"] for coid, r in latest.items()} == {
        decisions[0].client_order_id: "FILLED", decisions[1].client_order_id: "CANCELLED"}
    fills = {r["order_id"]: r["q"] for r in rows(conn, "SELECT order_id, sum(fill_qty) AS q FROM exec_report_history"
                                                       " GROUP BY order_id")}
    assert fills == {coid: r["filled_qty"] for coid, r in latest.items() if r["filled_qty"] > 0}
    assert rows(conn, "SELECT count(*) AS n FROM (SELECT 1 FROM order_events GROUP BY client_order_id, seq"
                      " HAVING count(*) > 1) d") == [{"n": 0}]
