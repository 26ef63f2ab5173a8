"""Long-running processes of the trading loop: the decision gate and the
execution adapter with the paper broker. Each runs until stopped (SIGINT or
SIGTERM finish the current step first) or, with once=True, for one step.
With metrics_port each serves /metrics (PROCESS_REGISTRY) and /health/live,
/health/ready (ready once its bootstrap steps passed and while it is
connected) while it runs.

Both survive the database going away (a restart, a failover): on a
connection error they drop every connection, report not ready, reconnect
with backoff (1 s doubling to 30 s, less up to half of it at random) and
start over from what is stored: the gate from the undecided signals, the
adapter from its saved feed positions, with the paper book rebuilt from the
recorded events. Reconnecting never starts the embedded server (whoever
stopped it starts it again); the first connection does, as any command.

The gate holds the gate lease (tradeflow.trading.lease) on its connection
while it runs: a second gate refuses to start, or waits with wait_for_lease."""
from __future__ import annotations

import contextlib
import gc
import logging
import random
import signal
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable

import psycopg

from adapters.broker import Broker
from adapters.changefeed import open_feed, position_store, wake_on_insert
from adapters.execution import (
    ACCEPTED_ORDER_KEY,
    ACCEPTED_ORDERS,
    ORDER_COMMAND_KEY,
    ORDER_COMMANDS,
    ExecutionAdapter,
    _order,
    broker_label,
    instrument_broker,
)
from adapters.orders import OrderEvent, OrderStatus
from adapters.paper import DEFAULT_FILL_MODEL, PaperBroker, PaperConfig
from adapters.routing import RoutingBroker
from tradeflow import engine
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.ops.health import Bootstrap, HealthServer
from tradeflow.ops.metrics import PROCESS_METRICS, PROCESS_REGISTRY, feed_age
from tradeflow.trading import lease
from tradeflow.trading.book_sync import instrument_steps
from tradeflow.trading.gate import TIMEFRAMES, DecisionGate

log = logging.getLogger("tradeflow.daemon")
BARS = "price_1m_history"
BAR_KEY = ("received_at", "symbol", "ts")
HEARTBEAT_SECONDS = 60.0
RECONNECT_DELAY = 1.0
MAX_RECONNECT_DELAY = 30.0


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


class Readiness:
    """/health/ready's checks: bootstrap steps (passed for good) and states that come
    and go (set while they hold): "database" (connected), and any given."""

    def __init__(self, *steps: str, states: tuple[str, ...] = ()) -> None:
        self.bootstrap = Bootstrap(*steps)
        self.states = {name: threading.Event() for name in ("database", *states)}

    @property
    def checks(self) -> dict[str, Callable[[], bool]]:
        return {**self.bootstrap.checks, **{name: state.is_set for name, state in self.states.items()}}


def _health_server(port: int | None, addr: str, readiness: Readiness) -> contextlib.AbstractContextManager:
    """The daemon's health server, started before the bootstrap so probes get an answer meanwhile."""
    if port is None:
        return contextlib.nullcontext()
    return HealthServer(PROCESS_REGISTRY, port, addr=addr, checks=readiness.checks)


def _models_deployed(conn: psycopg.Connection, settings: Settings, relation: str, bootstrap: Bootstrap) -> None:
    # Not deployed: the first read fails as it always has; until then the process is not ready.
    if engine.relation_exists(conn, settings.schema, relation):
        bootstrap.passed("models")


def _serve(settings: Settings, readiness: Readiness, stop: threading.Event,
           session: Callable[[psycopg.Connection], None]) -> None:
    """Run session(conn) on a fresh connection until it returns; when the database
    goes away meanwhile, reconnect with backoff and run it again from the start."""
    delay, reconnecting = RECONNECT_DELAY, False
    while True:
        try:
            with engine.connect(settings, start=not reconnecting) as conn:  # a reconnect waits for the server
                readiness.bootstrap.passed("engine")
                readiness.states["database"].set()
                if reconnecting:
                    log.warning("reconnected to the database")
                session(conn)
                return
        except psycopg.OperationalError as exc:
            readiness.states["database"].clear()
            wait = delay * (1 - 0.5 * random.random())
            log.warning("database connection lost (%s); reconnecting in %.1f s", str(exc).strip(), wait)
            if stop.wait(wait):
                return
            delay, reconnecting = min(MAX_RECONNECT_DELAY, delay * 2), True


class Heartbeat:
    """A daemon's INFO line every `every` seconds of wall time (and at the end), so a
    quiet daemon still shows it is alive and what it has done since it started."""

    def __init__(self, what: str, every: float = HEARTBEAT_SECONDS) -> None:
        self.what = what
        self.every = every
        self._next = time.monotonic() + every

    def due(self) -> bool:
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.every
        return True

    def beat(self, fmt: str, *args: object) -> None:
        log.info(f"{self.what} alive: {fmt}", *args)


class GateCounts:
    """What a gate decided since it started, for its heartbeat and its metrics."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.clock = clock
        self.accepted = 0
        self.rejected = 0
        self._last_pass = time.monotonic()
        PROCESS_METRICS["gate_pass_age_seconds"].set_function(lambda: time.monotonic() - self._last_pass)

    @property
    def decided(self) -> int:
        return self.accepted + self.rejected

    def passed(self, decisions: list) -> None:
        self._last_pass = time.monotonic()
        now = self.clock()
        for decision in decisions:
            signal = decision.signal
            code = "OK" if decision.accepted else str(decision.code)
            PROCESS_METRICS["gate_decisions_total"].labels("ACCEPTED" if decision.accepted else "REJECTED", code).inc()
            PROCESS_METRICS["gate_decision_latency_seconds"].observe(
                max(0.0, (now - signal.signal_ts - TIMEFRAMES.get(signal.timeframe, timedelta(0))).total_seconds()))
            if decision.accepted:
                self.accepted += 1
            else:
                self.rejected += 1


def freeze_heap() -> None:
    """Once the book is built: what the process holds from then on (the book, every fill
    since the start, the modules) goes to the collector's permanent generation, so a full
    collection no longer walks it in the middle of a pass (bench/bench_decide.py: worst
    decision 50 -> 3 ms of CPU). Reference counting still frees those objects; only a
    cycle among them would outlive its use (the book has none)."""
    gc.collect()
    gc.freeze()


def run_gate(settings: Settings, *, once: bool = False, interval: float = 1.0,
             max_signal_age: timedelta = timedelta(minutes=2), stop: threading.Event | None = None,
             metrics_port: int | None = None, metrics_addr: str = "127.0.0.1", shadow: bool = False,
             wait_for_lease: bool = False) -> int:
    """Decide new signals every `interval` seconds; returns how many were decided.
    Raises lease.LeaseHeld if another gate runs (unless wait_for_lease)."""
    stop = stop or threading.Event()
    counts = GateCounts()
    readiness = Readiness("engine", "models", states=("lease",))

    def session(conn: psycopg.Connection) -> None:
        _models_deployed(conn, settings, "account_risk_inputs", readiness.bootstrap)
        with lease.hold(conn, settings, "gate", wait=wait_for_lease, stop=stop) as held:
            if not held:
                return
            readiness.states["lease"].set()
            gate = DecisionGate(conn, settings, gate_id="gate", max_signal_age=max_signal_age, shadow=shadow)
            try:
                log.info("gate started: target %s, schema %s, max_signal_age %.0f s, shadow %s", settings.target,
                         settings.schema, max_signal_age.total_seconds(), "on" if shadow else "off")
                if stale := gate.count_stale():
                    PROCESS_METRICS["gate_stale_signals_total"].inc(stale)
                    log.warning("%d undecided signal(s) skipped as stale: their bar closed more than max_signal_age"
                                " (%.0f s) ago; the gate acts only on fresh bars (--max-signal-age to widen)",
                                stale, max_signal_age.total_seconds())
                heartbeat = Heartbeat("gate")
                counts.passed(gate.run_once())  # the first pass rebuilds the book from the views
                freeze_heap()
                while True:
                    if heartbeat.due() or once:
                        heartbeat.beat("%d decided (%d accepted, %d rejected) since start", counts.decided,
                                       counts.accepted, counts.rejected)
                    if once or stop.wait(interval):
                        return
                    counts.passed(gate.run_once())
            finally:
                gate.close()  # its feeds and reader connections
                readiness.states["lease"].clear()  # lost with the connection, or given back

    with _health_server(metrics_port, metrics_addr, readiness):
        _serve(settings, readiness, stop, session)
    return counts.decided


class PaperAdapter:
    """The execution adapter wired to a paper broker that trades on the bars
    as they are ingested (a second feed, on price_1m_history). With a venue
    (a real broker), orders are routed by account (adapters.routing): paper
    accounts to the paper book, every other to the venue."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, config: PaperConfig | None = None,
                 consumer: str = "adapter", clock: Callable[[], datetime] = utc_now,
                 venue: Broker | None = None) -> None:
        self.conn = conn
        self.broker = PaperBroker(config or DEFAULT_FILL_MODEL, clock=clock)
        self.routing = None if venue is None else RoutingBroker(
            venue, self.broker, settings.paper_accounts, self._account_of)
        venue_inner = getattr(venue, "inner", venue)
        if hasattr(venue_inner, "symbol_of") and venue_inner.symbol_of is None:
            venue_inner.symbol_of = self._symbol_of  # a venue that needs an order's symbol to find it (Binance)
        self.broker.set_steps(instrument_steps(conn))  # lot and tick sizes as of start-up
        wake_on_insert(settings, conn, "trade_decisions", ACCEPTED_ORDERS)
        wake_on_insert(settings, conn, BARS, BARS)
        wake_on_insert(settings, conn, ORDER_COMMANDS, ORDER_COMMANDS)
        orders_store = position_store(settings, conn, f"{consumer}-orders")
        self.bars_store = position_store(settings, conn, f"{consumer}-bars")
        self.adapter = ExecutionAdapter(
            conn, settings, self.routing or self.broker,
            open_feed(settings, ACCEPTED_ORDERS, f"{consumer}-orders", order_by=ACCEPTED_ORDER_KEY,
                      start_position=orders_store.load(), poll_interval=0.2),
            orders_store, source=consumer, clock=clock)
        # bars from before the first start trade nothing: there were no orders yet
        bars_position = self.bars_store.load()
        self.bars = open_feed(settings, BARS, f"{consumer}-bars", order_by=BAR_KEY,
                              start_position=bars_position, poll_interval=0.2, from_now=True)
        if bars_position is None and self.bars.position is not None:
            # "now" is the first start's: a restart before any bar came must not skip the bars since
            self.bars_store.save(self.bars.position)
        self._bars_seen = feed_age(BARS, clock)
        self.commands_store = position_store(settings, conn, f"{consumer}-commands")
        self.commands = open_feed(settings, ORDER_COMMANDS, f"{consumer}-commands", order_by=ORDER_COMMAND_KEY,
                                  start_position=self.commands_store.load(), poll_interval=0.2)
        self._restore_open_orders()
        # a venue that outlived us may hold reports we polled but never wrote (a no-op on the
        # paper book, rebuilt above from what was written; the step every broker adapter takes)
        self.adapter.reconcile()

    def step(self, timeout: float = 0.5) -> None:
        self.adapter.submit_accepted(timeout=timeout)
        self.adapter.apply_commands(self.commands, self.commands_store)
        bars = self.bars.fetch(5000, 0.0)
        for change in bars:
            row = change.row
            self.broker.on_bar(row["symbol"], row["ts"], row["open"], row["high"], row["low"], row["close"],
                               row["volume"])
        if not bars:
            self.adapter.process_reports()
            return
        # The book lives in this process: what the bars did to it is written with the bars'
        # position, so a restart rebuilds the book as it was before them and trades them again.
        self.adapter.process_reports(self.bars_store, self.bars.position)
        self._bars_seen(max(change.row["received_at"] for change in bars))

    def close(self) -> None:
        self.adapter.feed.close()
        self.bars.close()
        self.commands.close()

    def _restore_open_orders(self) -> None:
        """Orders acknowledged before a restart and not finished go back into the paper book."""
        cur = self.conn.execute(
            "SELECT a.client_order_id, a.account_id, a.strategy_id, a.symbol, a.action AS side, a.qty, a.ts,"
            " a.order_type, a.time_in_force, a.limit_price, a.stop_price,"
            " o.status, o.filled_qty, o.broker_order_id, o.event_ts,"
            " coalesce(f.notional, 0) AS notional, coalesce(f.fees, 0) AS fees, coalesce(f.fills, 0) AS fills"
            " FROM accepted_trade_signal_history a JOIN orders o ON o.client_order_id = a.client_order_id"
            " LEFT JOIN (SELECT order_id, sum(fill_qty * fill_price) AS notional, sum(fee) AS fees,"
            " count(*) AS fills FROM stg_execs GROUP BY order_id) f ON f.order_id = a.client_order_id"
            " WHERE o.status IN ('ACK', 'PARTIAL')"
            " ORDER BY a.ts, a.decision_id")  # the feed's order: who is served first in a bar
        names = [c.name for c in cur.description]
        for values in cur.fetchall():
            row = dict(zip(names, values))
            if self.routing is not None and not self.routing.is_paper(row["account_id"]):
                continue  # the venue keeps its own book
            last = OrderEvent(client_order_id=row["client_order_id"], status=OrderStatus(row["status"]),
                              event_ts=row["event_ts"], filled_qty=row["filled_qty"] or Decimal(0),
                              broker_order_id=row["broker_order_id"])
            self.broker.restore(_order(row), last, notional=row["notional"], fees=row["fees"], fills=row["fills"])

    def _symbol_of(self, client_order_id: str) -> str | None:
        row = self.conn.execute("SELECT symbol FROM accepted_trade_signal_history WHERE client_order_id = %s",
                                (client_order_id,)).fetchone()
        return None if row is None else row[0]

    def _account_of(self, client_order_id: str) -> str | None:
        row = self.conn.execute("SELECT account_id FROM accepted_trade_signal_history WHERE client_order_id = %s",
                                (client_order_id,)).fetchone()
        return None if row is None else row[0]


def run_adapter(settings: Settings, *, once: bool = False, interval: float = 0.5,
                stop: threading.Event | None = None, config: PaperConfig | None = None,
                metrics_port: int | None = None, metrics_addr: str = "127.0.0.1",
                venue: Broker | None = None) -> None:
    """venue: a real broker for the orders of real accounts (kept across database reconnects)."""
    stop = stop or threading.Event()
    if venue is not None:  # its retries and breaker under its own label (the adapter's is 'routing'), once
        instrument_broker(venue, broker_label(venue))
    readiness = Readiness("engine", "models", "feed_position")

    def session(conn: psycopg.Connection) -> None:
        _models_deployed(conn, settings, ACCEPTED_ORDERS, readiness.bootstrap)
        adapter = PaperAdapter(conn, settings, config, venue=venue)  # loads the feed positions, restores open orders
        readiness.bootstrap.passed("feed_position")
        log.info("adapter started: target %s, schema %s, broker paper, consumer adapter, feed positions: orders %s,"
                 " bars %s, commands %s; %d open order(s) restored", settings.target, settings.schema,
                 *(p or "none yet" for p in (adapter.adapter.feed.position, adapter.bars.position,
                                             adapter.commands.position)),
                 adapter.broker.open_orders)
        heartbeat = Heartbeat("adapter")
        try:
            while not stop.is_set():
                adapter.step(timeout=0 if once else interval)
                if heartbeat.due() or once:
                    heartbeat.beat("%d order(s) submitted since start, %d open, bars feed at %s",
                                   adapter.adapter.submitted, adapter.broker.open_orders, adapter.bars.position)
                if once:
                    return
        finally:
            adapter.close()

    with _health_server(metrics_port, metrics_addr, readiness):
        _serve(settings, readiness, stop, session)
