"""A trading session replayed minute by minute through the live components:
price ingest -> strategies (views) -> decision gate -> execution adapter ->
paper broker -> fills through the exec ingester -> positions and P&L (views).

Each minute m, in the order a live deployment sees it:
1. operator policy changes due by m's close take effect;
2. the bars of minute m are ingested;
3. the paper broker trades open orders against them and the adapter records
   the reports, so fills land before anything is decided at m's close;
4. the gate decides the signals of bar m with its clock at the bar's close;
5. the adapter submits the accepted orders, which can fill from bar m+1 on.

A backtest (tradeflow.research.backtest) runs the same steps in memory, through
the same Gatekeeper and paper broker, and writes what they produced in bulk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Iterable

import pandas as pd
import psycopg

from adapters.changefeed import open_feed, position_store, wake_on_insert
from adapters.execution import ACCEPTED_ORDER_KEY, ACCEPTED_ORDERS, ExecutionAdapter
from adapters.paper import PaperBroker, PaperConfig
from ingest.prices import PriceIngester
from tradeflow.config import Settings
from tradeflow.trading import policy
from tradeflow.trading.book_sync import instrument_steps
from tradeflow.trading.gate import Decision, DecisionGate

BAR = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """An operator's policy change at a point of the replay (e.g. a kill switch)."""
    at: datetime
    account_id: str
    changes: dict[str, Any]
    updated_by: str = "operator"


@dataclass
class SessionStats:
    minutes: int = 0
    bars: int = 0
    decisions: int = 0
    accepted: int = 0
    rejects: dict[str, int] = field(default_factory=dict)


class ReplaySession:
    def __init__(self, conn: psycopg.Connection, settings: Settings, *, paper: PaperConfig | None = None,
                 consumer: str = "replay-adapter", policy_changes: Iterable[PolicyChange] = (),
                 max_signal_age: timedelta = timedelta(minutes=2), shadow: bool = False) -> None:
        self.conn = conn
        self.now = datetime.min
        clock: Callable[[], datetime] = lambda: self.now  # noqa: E731  (the replay's clock, not the wall's)
        self.prices = PriceIngester(conn, settings, source="replay", clock=clock)
        self.gate = DecisionGate(conn, settings, gate_id="replay-gate", clock=clock, max_signal_age=max_signal_age,
                                 shadow=shadow)
        self.broker = PaperBroker(paper or PaperConfig(), clock=clock)
        self.broker.set_steps(instrument_steps(conn))
        wake_on_insert(settings, conn, "trade_decisions", ACCEPTED_ORDERS)
        store = position_store(settings, conn, consumer)
        feed = open_feed(settings, ACCEPTED_ORDERS, consumer, order_by=ACCEPTED_ORDER_KEY,
                         start_position=store.load(), poll_interval=0.05)
        self.adapter = ExecutionAdapter(conn, settings, self.broker, feed, store, source="replay-adapter",
                                        clock=clock)
        self.policy_changes = sorted(policy_changes, key=lambda c: c.at)
        self.stats = SessionStats()

    def run(self, bars: Iterable[pd.DataFrame], on_minute: Callable[[int], None] | None = None) -> SessionStats:
        for frame in bars:
            for ts, minute in frame.groupby("ts", sort=True):
                self.step(ts.to_pydatetime(), minute)
                if on_minute:
                    on_minute(len(minute))
        self.close()
        return self.stats

    def step(self, ts: datetime, minute: pd.DataFrame) -> None:
        self.begin_minute(ts)
        self.prices.ingest_frame(minute)
        self.trade(ts, minute)
        self.record(self.gate.run_once())
        self.end_minute(len(minute))

    # -- the steps ------------------------------------------------------------------
    def begin_minute(self, ts: datetime) -> None:
        self.now = ts + BAR  # the bar is complete at its close
        while self.policy_changes and self.policy_changes[0].at <= self.now:
            change = self.policy_changes.pop(0)
            policy.update(self.conn, change.account_id, updated_by=change.updated_by, at=change.at,
                          **change.changes)

    def trade(self, ts: datetime, minute: pd.DataFrame) -> None:
        """The paper broker trades the live orders against the minute's bars; reports are recorded."""
        if not self.broker.has_live_orders:
            return
        for row in minute.itertuples(index=False):
            self.broker.on_bar(row.symbol, ts, *(Decimal(str(getattr(row, c)))
                                                 for c in ("open", "high", "low", "close", "volume")))
        self.adapter.process_reports()

    def record(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            self.stats.decisions += 1
            if decision.accepted:
                self.stats.accepted += 1
            else:
                self.stats.rejects[str(decision.code)] = self.stats.rejects.get(str(decision.code), 0) + 1
        if any(d.accepted for d in decisions):
            self.adapter.submit_accepted()
            self.adapter.process_reports()  # ACKs

    def end_minute(self, bars: int) -> None:
        self.stats.minutes += 1
        self.stats.bars += bars

    def close(self) -> None:
        self.adapter.feed.close()
        self.gate.close()
