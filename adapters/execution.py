"""The execution adapter: follows accepted orders through the change feed,
submits each to the broker, records the order's lifecycle in order_events and
sends fills back through the exec ingester, so positions and P&L update from
the same path as any other fill.

No lost and no duplicated submission across restarts:
- each step is one unit: submit -> the broker's answers (ACK/REJECTED) ->
  the feed position; reports -> their order events and fill rows (-> the
  bar feed's position, in the paper daemon). On the embedded engine a unit
  is one transaction. RisingWave has no read-write transactions and
  Materialize writes one table per transaction, so there the unit's writes
  go in an order that a restart redoes idempotently: fill rows, then order
  events, then the feed position; a crash between them re-delivers the
  feed's rows and reconcile() fetches the broker's order history;
- client order ids are deterministic (adapters.orders.client_order_id), and a
  broker answers a resubmitted id with the existing order (exactly once at
  the broker);
- an order event is written only if that (order, status, filled qty) is not
  recorded yet, its fill (if any) only with it, and fills are idempotent by
  (order_id, fill_id);
- a venue report that cannot be read (Broker.poll_malformed) is dead-lettered
  (kind venue_report, source the venue, reason VENUE_REPORT_MALFORMED) with
  the reports it came with, once: its dlq_id is a hash of its content, and a
  letter already listed is not written again when a restart reads it anew.

One clock per order: each recorded event gets the next per-order `seq` (the
gate's NEW has none and counts as 0; `orders` is the highest seq) and an
event_ts that never goes back: max(the order's previous event_ts, the
broker's time). A paper fill stamped with a bar's open that passed before
the ACK is recorded at the ACK's time, not before it; its fill row carries
the same time.

TRADEFLOW_CRASH_AT=<point>[:<n>] makes the process die (os._exit) the n-th
time (default 1st) it reaches that point of WRITE_POINTS: the fault suite's
kill -9 between two statements.
"""
from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Callable

import psycopg

from adapters.broker import Broker, MalformedReport
from adapters.changefeed import ChangeFeed, FeedPositionStore
from adapters.orders import ORDER_EVENT_COLUMNS, Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from adapters.resilience import BreakerState, ResilientBroker
from ingest.dlq import Rejection, storable, write_new_rejections
from ingest.execs import ExecIngester, Fill
from tradeflow import engine
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.ops.metrics import PROCESS_METRICS, feed_age
from tradeflow.reasons import ReasonCode
from tradeflow.writer import insert_rows

log = logging.getLogger("tradeflow.adapter")
ACCEPTED_ORDERS = "accepted_trade_signal_history"
ACCEPTED_ORDER_KEY = ("ts", "decision_id")  # the feed's order on the embedded engine
ORDER_COMMANDS = "order_commands"
ORDER_COMMAND_KEY = ("requested_at", "client_order_id", "command")
BREAKER_STATES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
# the adapter's order events carry their per-order sequence number; the gate's NEW has none (0)
RECORDED_EVENT_COLUMNS = (*ORDER_EVENT_COLUMNS, "seq")
OPEN_STATUSES = ("NEW", "ACK", "PARTIAL")
VENUE_REPORT_KIND = "venue_report"  # dead_letter.kind of a venue report that could not be read
# every order action is logged: submits and fills where they happen, these as they are recorded
ENDED_WITHOUT_FILL = (OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED)

# Where a unit of the adapter's work can be cut by a crash, in the order they are reached.
WRITE_POINTS = (
    "submitted",         # the broker has the orders, nothing is written
    "answers_written",   # ACK/REJECTED written, the orders feed position not yet
    "cancel_sent",       # the broker cancelled, nothing is written
    "fills_written",     # fill rows written, their order events not yet
    "events_written",    # order events written, the feed position not yet
    "position_saved",    # the feed position saved (in the transaction), not yet committed
)
CRASH_AT_ENV = "TRADEFLOW_CRASH_AT"
CRASH_EXIT_CODE = 86
_crash_hits: dict[str, int] = {}


def crash_point(point: str) -> None:
    """Die here, as kill -9 would, if TRADEFLOW_CRASH_AT names this point (fault tests only)."""
    wanted = os.environ.get(CRASH_AT_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _crash_hits[point] = _crash_hits.get(point, 0) + 1
    if _crash_hits[point] >= int(nth or 1):
        os._exit(CRASH_EXIT_CODE)


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
        self.max_future_skew = settings.max_future_skew
        # events of orders with a fill stamped too far ahead of our clock (see _record)
        self._waiting: list[OrderEvent] = []
        # only PostgreSQL has multi-table write transactions (see the module docstring)
        self.transactional = engine.transactional(settings)
        self.submitted = 0
        self.broker_label = broker_label(broker)
        instrument_broker(broker, self.broker_label)
        self._orders_seen = feed_age(ACCEPTED_ORDERS, clock)
        self._commands_seen = feed_age(ORDER_COMMANDS, clock)

    def unit(self) -> AbstractContextManager[object]:
        """One step's writes: a transaction where the engine has them, else the order they are written in."""
        return self.conn.transaction() if self.transactional else nullcontext()

    def submit_accepted(self, max_rows: int = 500, timeout: float = 0.0) -> int:
        """Submit the newly accepted orders and record the broker's answers with
        the feed position; returns how many changes the feed delivered."""
        changes = self.feed.fetch(max_rows, timeout)
        answers: list[OrderEvent] = []
        known: list[str] = []
        for change in changes:
            if change.op in {"insert", "update_insert"}:
                order = _order(change.row)
                with self._timed("submit"):
                    event = self.broker.submit(order)
                if event.status in {OrderStatus.ACK, OrderStatus.REJECTED}:
                    answers.append(event)
                else:  # the broker had it already (submitted before a crash): take its whole history
                    known.append(order.client_order_id)
                log.info("order submitted: %s", event.status, extra={
                    "order_id": order.client_order_id, "decision_id": change.row.get("decision_id"),
                    "signal_id": change.row.get("signal_id"), "account_id": order.account_id,
                    "strategy_id": order.strategy_id, "symbol": order.symbol})
                PROCESS_METRICS["adapter_orders_sent_total"].labels(self.broker_label).inc()
                self.submitted += 1
        if not changes:
            return 0
        crash_point("submitted")
        if known:
            with self._timed("order_history"):
                answers += self.broker.order_history(known)
        with self.unit():
            self._record(answers)
            crash_point("answers_written")
            # the feed's own position: on Materialize progress moves it past the last change
            self.positions.save(self.feed.position)
            crash_point("position_saved")
        self._orders_seen(max(change.row["ts"] for change in changes))
        return len(changes)

    def apply_commands(self, commands: ChangeFeed, positions: FeedPositionStore) -> int:
        """Carry out operator commands (CANCEL); the broker's answers are recorded with the feed position."""
        changes = commands.fetch(500, 0.0)
        answers = []
        for change in changes:
            if change.op in {"insert", "update_insert"} and change.row["command"] == "CANCEL":
                with self._timed("cancel"):
                    answers.append(self.broker.cancel(change.row["client_order_id"]))
                log.info("cancel requested: broker answered %s", answers[-1].status,
                         extra={"order_id": change.row["client_order_id"]})
        if not changes:
            return 0
        crash_point("cancel_sent")
        with self.unit():
            self._record(answers)
            positions.save(commands.position)
        self._commands_seen(max(change.row["requested_at"] for change in changes))
        return len(changes)

    def process_reports(self, positions: FeedPositionStore | None = None, position: str | None = None) -> int:
        """Record the broker's order events with their fills (through the exec
        ingester) and, given one, a feed position those reports cover: one unit."""
        with self._timed("poll_events"):
            events = self.broker.poll_events()
        malformed = self.broker.poll_malformed()
        if not events and not malformed and not self._waiting and positions is None:
            return 0
        with self.unit():
            self._record(events)
            self._dead_letter(malformed)
            if positions is not None:
                positions.save(position)
                crash_point("position_saved")
        return len(events)

    def reconcile(self) -> int:
        """At start-up: ask the broker for the whole history of every order we
        hold open (NEW, ACK or PARTIAL) and record what we are missing, such as
        the reports a previous run polled but died before writing. Returns how
        many events were new."""
        open_ids = [row[0] for row in self.conn.execute(
            "SELECT client_order_id FROM orders WHERE status = ANY(%s) ORDER BY client_order_id",
            (list(OPEN_STATUSES),))]
        if not open_ids:
            return 0
        with self._timed("order_history"):
            events = self.broker.order_history(open_ids)
        with self.unit():
            added = self._record(events)
        if added:
            log.warning("reconciled %d order event(s) missing after a restart", added)
        return added

    def _record(self, events: list[OrderEvent]) -> int:
        """Write the events not recorded yet, each on its order's clock; returns how many were new.

        Two clocks: a fill the venue stamped more than max_future_skew ahead of ours would be
        dead-lettered by the exec ingester while its order's FILLED event went in, and the
        position would miss it. Such an order's events wait, in order, until our clock is
        within the skew of the stamp (a restart before then finds the order open and asks
        the broker for its history again)."""
        events, self._waiting = self._waiting + events, []
        horizon = self.clock() + self.max_future_skew
        ahead = {e.client_order_id for e in events if e.last_fill_qty > 0 and e.event_ts > horizon}
        if ahead:
            self._waiting = [e for e in events if e.client_order_id in ahead]
            events = [e for e in events if e.client_order_id not in ahead]
            log.warning("fills stamped more than %s s ahead of this clock: %d order(s) wait until it catches up",
                        int(self.max_future_skew.total_seconds()), len(ahead),
                        extra={"order_ids": sorted(ahead), "clock": horizon - self.max_future_skew})
        if not events:
            return 0
        orders = self._orders({e.client_order_id for e in events})
        recorded = self._recorded({e.client_order_id for e in events})
        rows, fills = [], []
        for event in events:
            order = orders[event.client_order_id]
            book = recorded.setdefault(event.client_order_id, _Recorded())
            key = (str(event.status), event.filled_qty)
            if key in book.keys:
                continue
            book.keys.add(key)
            book.seq += 1
            book.event_ts = event.event_ts if book.event_ts is None else max(book.event_ts, event.event_ts)
            on_order_clock = replace(event, event_ts=book.event_ts)
            rows.append((*order_event_row(order, on_order_clock, self.source), book.seq))
            if event.status in ENDED_WITHOUT_FILL:
                log.info("order %s%s", event.status, f": {event.reason}" if event.reason else "", extra={
                    "order_id": order.client_order_id, "account_id": order.account_id,
                    "strategy_id": order.strategy_id, "symbol": order.symbol})
            if event.last_fill_qty > 0:
                fills.append(fill_from_event(order, on_order_clock))
                log.info("fill %s @ %s", event.last_fill_qty, event.last_fill_price, extra={
                    "order_id": order.client_order_id, "fill_id": fills[-1].fill_id,
                    "account_id": order.account_id, "strategy_id": order.strategy_id, "symbol": order.symbol})
        # Fills before their events: without a transaction, a crash between the two leaves the
        # order open, and reconcile() redoes the event (the fill is then a known copy), whereas
        # an event without its fill would close the order with the fill lost.
        if fills:
            self.ingester.ingest_fills(fills)
            PROCESS_METRICS["adapter_fills_ingested_total"].labels(self.broker_label).inc(len(fills))
            crash_point("fills_written")
        if rows:
            insert_rows(self.conn, "order_events", RECORDED_EVENT_COLUMNS, rows, batch_rows=500)
            crash_point("events_written")
        return len(rows)

    def _dead_letter(self, reports: list[MalformedReport]) -> None:
        """Each venue's unreadable reports to the dead-letter table, the ones not listed there yet."""
        for venue in sorted({report.venue for report in reports}):
            rejections = [Rejection(payload=storable(r.payload), field=r.field,
                                    code=ReasonCode.VENUE_REPORT_MALFORMED, reason=r.reason)
                          for r in reports if r.venue == venue]
            written = write_new_rejections(self.conn, VENUE_REPORT_KIND, rejections, source=venue,
                                           batch_id=self.ingester.batch_id, received_at=self.clock(),
                                           batch_rows=500)
            PROCESS_METRICS["adapter_venue_reports_dead_lettered_total"].labels(venue).inc(written)
            if written:
                log.warning("%d malformed %s report(s) dead-lettered: see `tradeflow dlq list --kind %s`",
                            written, venue, VENUE_REPORT_KIND)

    def _timed(self, call: str) -> AbstractContextManager[object]:
        return PROCESS_METRICS["adapter_broker_latency_seconds"].labels(self.broker_label, call).time()

    def _orders(self, ids: set[str]) -> dict[str, Order]:
        cur = self.conn.execute(
            "SELECT client_order_id, account_id, strategy_id, symbol, action AS side, qty, ts, order_type,"
            " time_in_force, limit_price, stop_price FROM accepted_trade_signal_history"
            " WHERE client_order_id = ANY(%s)", (sorted(ids),))
        names = [c.name for c in cur.description]
        return {row[0]: _order(dict(zip(names, row))) for row in cur.fetchall()}

    def _recorded(self, ids: set[str]) -> dict[str, "_Recorded"]:
        books: dict[str, _Recorded] = {}
        for coid, status, filled_qty, seq, event_ts in self.conn.execute(
                "SELECT client_order_id, status, filled_qty, coalesce(seq, 0), event_ts FROM order_events"
                " WHERE client_order_id = ANY(%s)", (sorted(ids),)):
            book = books.setdefault(coid, _Recorded())
            book.keys.add((status, filled_qty))
            book.seq = max(book.seq, seq)
            book.event_ts = event_ts if book.event_ts is None else max(book.event_ts, event_ts)
        return books


@dataclass(slots=True)
class _Recorded:
    """What order_events holds of one order: its events' keys, last seq and latest event time."""
    keys: set[tuple[str, Decimal]] = field(default_factory=set)
    seq: int = 0
    event_ts: datetime | None = None


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


def order_event_row(order: Order, event: OrderEvent, source: str) -> tuple:
    """An order_events row (ORDER_EVENT_COLUMNS) for a broker's report on an order."""
    return (order.client_order_id, order.account_id, order.strategy_id, order.symbol, str(order.side),
            str(order.order_type), str(order.time_in_force), order.qty, order.limit_price, order.stop_price,
            str(event.status), event.filled_qty, event.broker_order_id, event.reason, event.event_ts, source)


def fill_from_event(order: Order, event: OrderEvent) -> Fill:
    """The execution report a fill event stands for."""
    return Fill(account_id=order.account_id, strategy_id=order.strategy_id, order_id=order.client_order_id,
                fill_id=event.fill_id or f"{order.client_order_id}-{event.filled_qty}", symbol=order.symbol,
                side=str(order.side), fill_qty=event.last_fill_qty, fill_price=event.last_fill_price,
                fee=event.fee, venue="PAPER" if (event.broker_order_id or "").startswith("paper") else "BROKER",
                exec_ts=event.event_ts)
