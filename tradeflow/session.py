"""A trading session replayed minute by minute through the live components:
price ingest -> strategies (views) -> decision gate -> execution adapter ->
paper broker -> fills through the exec ingester -> positions and P&L (views).

Each minute m, in the order a live deployment sees it:
1. the bars of minute m are ingested;
2. the paper broker trades open orders against them and the adapter records
   the reports, so fills land before anything is decided at m's close;
3. the gate decides the signals of bar m with its clock at the bar's close;
4. the adapter submits the accepted orders, which can fill from bar m+1 on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Callable, Iterable

import pandas as pd
import psycopg

from adapters.changefeed import open_feed, position_store, wake_on_insert
from adapters.execution import ACCEPTED_ORDER_KEY, ACCEPTED_ORDERS, ExecutionAdapter
from adapters.paper import PaperBroker, PaperConfig
from ingest.prices import PriceIngester
from tradeflow.config import Settings
from tradeflow.gate import DecisionGate

BAR = timedelta(minutes=1)


@dataclass
class SessionStats:
    minutes: int = 0
    bars: int = 0
    decisions: int = 0
    accepted: int = 0
    rejects: dict[str, int] = field(default_factory=dict)


class ReplaySession:
    def __init__(self, conn: psycopg.Connection, settings: Settings, *, paper: PaperConfig | None = None,
                 consumer: str = "replay-adapter") -> None:
        self.conn = conn
        self.now = datetime.min
        clock: Callable[[], datetime] = lambda: self.now  # noqa: E731  (the replay's clock, not the wall's)
        self.prices = PriceIngester(conn, settings, source="replay", clock=clock)
        self.gate = DecisionGate(conn, settings, gate_id="replay-gate", clock=clock)
        self.broker = PaperBroker(paper or PaperConfig(), clock=clock)
        wake_on_insert(settings, conn, "trade_decisions", ACCEPTED_ORDERS)
        store = position_store(settings, conn, consumer)
        feed = open_feed(settings, ACCEPTED_ORDERS, consumer, order_by=ACCEPTED_ORDER_KEY,
                         start_position=store.load(), poll_interval=0.05)
        self.adapter = ExecutionAdapter(conn, settings, self.broker, feed, store, source="replay-adapter",
                                        clock=clock)
        self.stats = SessionStats()

    def run(self, bars: Iterable[pd.DataFrame], on_minute: Callable[[int], None] | None = None) -> SessionStats:
        for frame in bars:
            for ts, minute in frame.groupby("ts", sort=True):
                self.step(ts.to_pydatetime(), minute)
                if on_minute:
                    on_minute(len(minute))
        self.adapter.feed.close()
        return self.stats

    def step(self, ts: datetime, minute: pd.DataFrame) -> None:
        self.now = ts + BAR  # the bar is complete at its close
        self.prices.ingest_frame(minute)
        for row in minute.itertuples(index=False):
            self.broker.on_bar(row.symbol, ts, *(Decimal(str(getattr(row, c)))
                                                 for c in ("open", "high", "low", "close", "volume")))
        self.adapter.process_reports()
        for decision in self.gate.run_once():
            self.stats.decisions += 1
            if decision.accepted:
                self.stats.accepted += 1
            else:
                self.stats.rejects[str(decision.code)] = self.stats.rejects.get(str(decision.code), 0) + 1
        self.adapter.submit_accepted()
        self.adapter.process_reports()  # ACKs
        self.stats.minutes += 1
        self.stats.bars += len(minute)
