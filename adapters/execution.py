"""The execution adapter: follows accepted orders through the change feed,
submits each to the broker, records the order's lifecycle in order_events and
sends fills back through the exec ingester, so positions and P&L update from
the same path as any other fill.

No lost and no duplicated submission across restarts:
- the feed position is saved only after the orders it covers were submitted,
  so a crash re-delivers them (at least once);
- client order ids are deterministic (adapters.orders.client_order_id), and a
  broker answers a resubmitted id with the existing order (exactly once at
  the broker);
- an order event is written only if that (order, status, filled qty) is not
  recorded yet, and fills are idempotent by (order_id, fill_id).
"""
from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from typing import Callable

import psycopg

from adapters.broker import Broker
from adapters.changefeed import ChangeFeed, FeedPositionStore
from adapters.orders import ORDER_EVENT_COLUMNS, Order, OrderEvent, OrderType, Side, TimeInForce
from adapters.resilience import BreakerState, ResilientBroker
from ingest.execs import ExecIngester, Fill
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.ops.metrics import PROCESS_METRICS, feed_age
from tradeflow.writer import insert_rows

log = logging.getLogger("tradeflow.adapter")
ACCEPTED_ORDERS = "accepted_trade_signal_history"
ACCEPTED_ORDER_KEY = ("ts", "decision_id")  # the feed's order on the embedded engine
ORDER_COMMANDS = "order_commands"
ORDER_COMMAND_KEY = ("requested_at", "client_order_id", "command")
BREAKER_STATES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


class ExecutionAdapter:
    def __init__(self, conn: psycopg.Connection, settings: Settings, broker: Broker, feed: ChangeFeed,
                 positions: FeedPositionStore, *, source: str = "adapter",
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.conn = conn
        self.broker = broker
        self.feed = feed
        self.positions = positions
        self.source = source
        self.clock = clock
        self.ingester = ExecIngester(conn, settings, source=source, clock=clock)
        self.submitted = 0
        self.broker_label = broker_label(broker)
        instrument_broker(broker, self.broker_label)
        self._orders_seen = feed_age(ACCEPTED_ORDERS, clock)
        self._commands_seen = feed_age(ORDER_COMMANDS, clock)

    def submit_accepted(self, max_rows: int = 500, timeout: float = 0.0) -> int:
        """Submit the newly accepted orders; returns how many the feed delivered."""
        changes = self.feed.fetch(max_rows, timeout)
        for change in changes:
            if change.op in {"insert", "update_insert"}:
                order = _order(change.row)
                with self._timed("submit"):
                    event = self.broker.submit(order)
                log.info("order submitted: %s", event.status, extra={
                    "order_id": order.client_order_id, "decision_id": change.row.get("decision_id"),
                    "signal_id": change.row.get("signal_id"), "account_id": order.account_id,
                    "strategy_id": order.strategy_id, "symbol": order.symbol})
                PROCESS_METRICS["adapter_orders_sent_total"].labels(self.broker_label).inc()
                self.submitted += 1
        if changes:
            self._orders_seen(max(change.row["ts"] for change in changes))
            # the feed's own position: on Materialize progress moves it past the last change
            self.positions.save(self.feed.position)
        return len(changes)

    def apply_commands(self, commands: ChangeFeed, positions: FeedPositionStore) -> int:
        """Carry out operator commands (CANCEL); the broker reports the outcome."""
        changes = commands.fetch(500, 0.0)
        for change in changes:
            if change.op in {"insert", "update_insert"} and change.row["command"] == "CANCEL":
                with self._timed("cancel"):
                    self.broker.cancel(change.row["client_order_id"])
        if changes:
            self._commands_seen(max(change.row["requested_at"] for change in changes))
            positions.save(commands.position)
        return len(changes)

    def process_reports(self) -> int:
        """Record the broker's order events; fills go through the exec ingester."""
        with self._timed("poll_events"):
            events = self.broker.poll_events()
        return self._record(events)

    def reconcile(self) -> int:
        """At start-up: ask the broker for the whole history of every order we
        hold open (ACK or PARTIAL) and record what we are missing, such as the
        reports a previous run polled but died before writing. Returns how many
        events were new."""
        open_ids = [row[0] for row in self.conn.execute(
            "SELECT client_order_id FROM orders WHERE status IN ('ACK', 'PARTIAL') ORDER BY client_order_id")]
        if not open_ids:
            return 0
        with self._timed("order_history"):
            events = self.broker.order_history(open_ids)
        before = len(self._recorded(set(open_ids)))
        self._record(events)
        added = len(self._recorded(set(open_ids))) - before
        if added:
            log.warning("reconciled %d order event(s) missing after a restart", added)
        return added

    def _record(self, events: list[OrderEvent]) -> int:
        if not events:
            return 0
        orders = self._orders({e.client_order_id for e in events})
        recorded = self._recorded({e.client_order_id for e in events})
        rows, fills = [], []
        for event in events:
            order = orders[event.client_order_id]
            key = (event.client_order_id, str(event.status), event.filled_qty)
            if key not in recorded:
                recorded.add(key)
                rows.append((order.client_order_id, order.account_id, order.strategy_id, order.symbol,
                             str(order.side), str(order.order_type), str(order.time_in_force), order.qty,
                             order.limit_price, order.stop_price, str(event.status), event.filled_qty,
                             event.broker_order_id, event.reason, event.event_ts, self.source))
            if event.last_fill_qty > 0:
                fills.append(_fill(order, event))
                log.info("fill %s @ %s", event.last_fill_qty, event.last_fill_price, extra={
                    "order_id": order.client_order_id, "fill_id": fills[-1].fill_id,
                    "account_id": order.account_id, "strategy_id": order.strategy_id, "symbol": order.symbol})
        if rows:
            insert_rows(self.conn, "order_events", ORDER_EVENT_COLUMNS, rows, batch_rows=500)
        if fills:
            self.ingester.ingest_fills(fills)
            PROCESS_METRICS["adapter_fills_ingested_total"].labels(self.broker_label).inc(len(fills))
        return len(events)

    def _timed(self, call: str) -> AbstractContextManager[object]:
        return PROCESS_METRICS["adapter_broker_latency_seconds"].labels(self.broker_label, call).time()

    def _orders(self, ids: set[str]) -> dict[str, Order]:
        cur = self.conn.execute(
            "SELECT client_order_id, account_id, strategy_id, symbol, action AS side, qty, ts, order_type,"
            " time_in_force, limit_price, stop_price FROM accepted_trade_signal_history"
            " WHERE client_order_id = ANY(%s)", (sorted(ids),))
        names = [c.name for c in cur.description]
        return {row[0]: _order(dict(zip(names, row))) for row in cur.fetchall()}

    def _recorded(self, ids: set[str]) -> set[tuple[str, str, Decimal]]:
        return set(self.conn.execute(
            "SELECT client_order_id, status, filled_qty FROM order_events WHERE client_order_id = ANY(%s)",
            (sorted(ids),)).fetchall())


def broker_label(broker: Broker) -> str:
    """The broker label of the adapter metrics: PaperBroker is 'paper', behind a ResilientBroker too."""
    inner = broker.inner if isinstance(broker, ResilientBroker) else broker
    return type(inner).__name__.removesuffix("Broker").lower() or "broker"


def instrument_broker(broker: Broker, label: str) -> None:
    """Count a ResilientBroker's retries and follow its circuit breaker; a plain broker has neither."""
    if not isinstance(broker, ResilientBroker):
        return
    retries = PROCESS_METRICS["adapter_broker_retries_total"].labels(label)
    state = PROCESS_METRICS["adapter_circuit_breaker_state"].labels(label)
    wait = broker.policy.sleep

    def counted(seconds: float) -> None:
        # retry() waits exactly once before each new attempt: each wait is a retry
        retries.inc()
        wait(seconds)

    broker.policy = replace(broker.policy, sleep=counted)
    chained = broker.breaker.on_state_change

    def on_state_change(old: BreakerState, new: BreakerState) -> None:
        state.set(BREAKER_STATES[new])
        if chained is not None:
            chained(old, new)

    broker.breaker.on_state_change = on_state_change
    state.set(BREAKER_STATES[broker.breaker.state])


def _order(row: dict) -> Order:
    """The order an accepted decision stands for, on the terms the gate wrote."""
    return Order(client_order_id=row["client_order_id"], account_id=row["account_id"],
                 strategy_id=row["strategy_id"], symbol=row["symbol"], side=Side(row.get("side") or row["action"]),
                 qty=Decimal(row["qty"]), order_type=OrderType(row.get("order_type") or OrderType.MARKET),
                 time_in_force=TimeInForce(row.get("time_in_force") or TimeInForce.DAY),
                 limit_price=row.get("limit_price"), stop_price=row.get("stop_price"),
                 ref_price=row.get("ref_price"), created_at=row["ts"])


def _fill(order: Order, event: OrderEvent) -> Fill:
    return Fill(account_id=order.account_id, strategy_id=order.strategy_id, order_id=order.client_order_id,
                fill_id=event.fill_id or f"{order.client_order_id}-{event.filled_qty}", symbol=order.symbol,
                side=str(order.side), fill_qty=event.last_fill_qty, fill_price=event.last_fill_price,
                fee=event.fee, venue="PAPER" if (event.broker_order_id or "").startswith("paper") else "BROKER",
                exec_ts=event.event_ts)
