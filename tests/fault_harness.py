"""Kill the paper adapter at its write points and count what was lost or duplicated.

The adapter runs in a forked child process (the daemon's PaperAdapter, its
paper book rebuilt from the database at every start, as after a real crash)
with TRADEFLOW_CRASH_AT set: it dies with os._exit between two statements,
like kill -9. This process plays the rest of the world: it decides orders
through the gate, ingests bars, asks for cancels, and restarts the adapter
until every order is finished. Shared by tests/test_adapter_faults.py and
bench/bench_faults.py.
"""
from __future__ import annotations

import multiprocessing
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import psycopg

from adapters.execution import CRASH_AT_ENV, CRASH_EXIT_CODE, WRITE_POINTS
from adapters.paper import PaperConfig
from ingest.prices import PriceIngester
from tradeflow import engine
from tradeflow.config import Settings
from tradeflow.trading import accounts, orders, policy
from tradeflow.trading.daemon import PaperAdapter
from tradeflow.trading.gate import DecisionGate, Signal

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc)
ACCOUNT = "FAULTS"
CONSUMER = "faults"
# a bar lets 10% of its volume trade: orders of ~1000 shares fill over several bars (PARTIAL events)
VOLUME = 3000.0
PAPER = PaperConfig(fee_per_share=Decimal("0.01"))
RAW_TABLES = ("price_1m_history", "exec_report_history", "accounts", "account_policy", "trade_decisions",
              "order_events", "order_commands", "risk_events", "adapter_feed_position", "audit_log",
              "dead_letter", "manual_order_requests")


def _adapter_process(settings: Settings, crash_at: str | None, minute: int, steps: int) -> None:
    """The child: an adapter process that takes `steps` steps unless it is killed first."""
    if crash_at:
        os.environ[CRASH_AT_ENV] = crash_at
    else:
        os.environ.pop(CRASH_AT_ENV, None)
    now = T0 + timedelta(minutes=minute, seconds=5)
    with engine.connect(settings) as conn:
        adapter = PaperAdapter(conn, settings, PAPER, consumer=CONSUMER, clock=lambda: now)
        try:
            for _ in range(steps):
                adapter.step(timeout=0)
        finally:
            adapter.close()


@dataclass
class Tally:
    """What a fault run did and found; the four counts must be 0."""
    kills: Counter = field(default_factory=Counter)   # point -> kills that happened there
    runs: int = 0
    orders: int = 0
    lost_orders: int = 0
    duplicated_orders: int = 0
    lost_fills: int = 0
    duplicated_fills: int = 0
    unfinished_orders: int = 0
    clock_violations: int = 0
    position_mismatches: int = 0

    def add(self, other: "Tally") -> None:
        for name, value in vars(other).items():
            if isinstance(value, Counter):
                self.kills.update(value)
            else:
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, object]:
        return {**{k: v for k, v in vars(self).items() if k != "kills"}, "kills": dict(sorted(self.kills.items())),
                "kills_total": sum(self.kills.values())}


class Episode:
    """One book of orders from empty to finished, the adapter killed along the way."""

    def __init__(self, settings: Settings, conn: psycopg.Connection, rng: random.Random, symbols: int = 3) -> None:
        self.settings, self.conn, self.rng = settings, conn, rng
        self.symbols = [f"F{i}" for i in range(symbols)]
        self.minute = 0
        self.tally = Tally()
        conn.execute("TRUNCATE " + ", ".join(RAW_TABLES))
        accounts.add(conn, ACCOUNT, capital="10000000", max_leverage="10")
        # ~600 shares an order: two bars or more to fill, so orders go through PARTIAL
        policy.update(conn, ACCOUNT, max_open_symbols=100, allow_scale_in=True, max_position_qty="1000000000",
                      risk_per_trade_pct=Decimal("0.0006"), at=T0 - timedelta(days=1))
        self.gate = DecisionGate(conn, settings, gate_id="faults-gate", clock=self._now)
        self.prices = PriceIngester(conn, settings, source="faults", clock=self._now)
        self._signals = 0
        self._bars()  # the first bars: the adapter's bar feed starts after them

    def _now(self) -> datetime:
        return T0 + timedelta(minutes=self.minute, seconds=1)

    def _bars(self) -> None:
        price = 100 + self.rng.randint(-3, 3)
        self.prices.ingest_frame(pd.DataFrame([{
            "symbol": s, "ts": T0 + timedelta(minutes=self.minute), "open": float(price), "high": price + 1.0,
            "low": price - 1.0, "close": float(price), "volume": VOLUME} for s in self.symbols]))

    def decide(self, count: int) -> None:
        # Decisions of one minute share decided_at; the orders feed reads (ts, decision_id) in key
        # order, so ids must grow as they are written (the live gate's decided_at alone does).
        for _ in range(count):
            self._signals += 1
            symbol = self.rng.choice(self.symbols)
            self.gate.decide(Signal(
                signal_id=f"fault:{self._signals:06d}", strategy_id="sma_crossover", symbol=symbol, timeframe="1m",
                signal_ts=T0 + timedelta(minutes=self.minute - 1), action="BUY", size_hint=1.0, confidence=1.0,
                ref_price=Decimal(100), atr_14=5.0))

    def cancel_one(self) -> bool:
        open_ids = [r[0] for r in self.conn.execute(
            "SELECT client_order_id FROM orders WHERE status IN ('ACK', 'PARTIAL') ORDER BY client_order_id")]
        if not open_ids:
            return False
        orders.request_cancel(self.conn, self.rng.choice(open_ids), reason="fault test")
        return True

    def next_minute(self) -> None:
        self.minute += 1
        self._bars()

    def run_adapter(self, crash_at: str | None = None, steps: int = 2) -> bool:
        """Run the adapter process; True if it was killed at crash_at."""
        child = multiprocessing.get_context("fork").Process(
            target=_adapter_process, args=(self.settings, crash_at, self.minute, steps))
        child.start()
        child.join(timeout=120)
        if child.is_alive():
            child.kill()
            raise RuntimeError("the adapter process hung")
        self.tally.runs += 1
        if child.exitcode == CRASH_EXIT_CODE:
            self.tally.kills[crash_at.partition(":")[0]] += 1
            return True
        if child.exitcode != 0:
            raise RuntimeError(f"the adapter process failed (exit code {child.exitcode})")
        return False

    def kill_at(self, point: str, attempts: int = 4) -> bool:
        """Arrange what the point needs, then run the adapter until it dies there (True) or gives up."""
        for _ in range(attempts):
            if point == "submitted" or point == "answers_written":
                self.decide(1)
            elif point == "cancel_sent" and not self.cancel_one():
                self.decide(1)
                self.run_adapter()
                continue
            else:
                self.decide(1)
                self.next_minute()
            if self.run_adapter(f"{point}:{self.rng.randint(1, 2)}"):
                return True
        return False

    def random_kill(self) -> bool:
        """Random orders, bars and cancels; then the adapter runs with a random point and hit to die at."""
        self.decide(self.rng.randint(1, 2))
        if self.rng.random() < 0.8:
            self.next_minute()
        if self.rng.random() < 0.3:
            self.cancel_one()
        point = self.rng.choice(WRITE_POINTS)
        return self.run_adapter(f"{point}:{self.rng.choice((1, 1, 2))}", steps=self.rng.randint(1, 3))

    def finish(self) -> Tally:
        """Trade until no order is open (no kills), then count."""
        for _ in range(60):
            self.next_minute()
            self.run_adapter(steps=2)
            if not self.conn.execute("SELECT 1 FROM orders WHERE status IN ('NEW', 'ACK', 'PARTIAL')"
                                     " LIMIT 1").fetchone():
                break
        self._count()
        return self.tally

    def _count(self) -> None:
        t, q = self.tally, lambda sql: self.conn.execute(sql).fetchone()[0]
        accepted = {r[0]: r[1] for r in self.conn.execute(
            "SELECT client_order_id, qty FROM accepted_trade_signal_history")}
        t.orders = len(accepted)
        latest = {r[0]: (r[1], r[2]) for r in self.conn.execute("SELECT client_order_id, status, filled_qty FROM orders")}
        fills = {r[0]: r[1] for r in self.conn.execute(
            "SELECT order_id, sum(fill_qty) FROM exec_report_history GROUP BY order_id")}
        # an order lost: never answered by the broker (still NEW after the adapter drained everything)
        t.lost_orders = sum(1 for coid in accepted if latest.get(coid, ("NEW",))[0] == "NEW")
        # duplicated at the broker: acknowledged twice, or an event recorded twice
        t.duplicated_orders = q(
            "SELECT count(*) FROM (SELECT client_order_id FROM order_events WHERE status = 'ACK'"
            " GROUP BY client_order_id HAVING count(*) > 1) d") + q(
            "SELECT count(*) FROM (SELECT 1 FROM order_events GROUP BY client_order_id, status, filled_qty"
            " HAVING count(*) > 1) d")
        for coid, qty in accepted.items():
            status, filled = latest.get(coid, ("NEW", Decimal(0)))
            got = fills.get(coid, Decimal(0))
            t.lost_fills += got < filled
            t.duplicated_fills += got > filled or got > qty
            t.unfinished_orders += status not in {"FILLED", "CANCELLED"}
        t.duplicated_fills += q("SELECT count(*) FROM (SELECT 1 FROM exec_report_history GROUP BY order_id, fill_id"
                                " HAVING count(*) > 1) d")
        t.clock_violations = q(
            "SELECT count(*) FROM (SELECT event_ts < lag(event_ts) OVER (PARTITION BY client_order_id"
            " ORDER BY coalesce(seq, 0) ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS back FROM order_events) e"
            " WHERE back")
        t.position_mismatches = q(
            "SELECT count(*) FROM (SELECT symbol, sum(fill_qty) AS q FROM exec_report_history GROUP BY symbol) f"
            " FULL JOIN (SELECT symbol, net_qty FROM open_positions_rollup) p USING (symbol)"
            " WHERE coalesce(f.q, 0) <> coalesce(p.net_qty, 0)")
