"""Backtests: a bounded replay of historical bars through the live components.

What does not depend on decisions is computed set-based, once: the run's bars
go into the backtest schema in bulk (COPY, or INSERT ... SELECT from the main
schema's bars) and every signal comes from one read of
`strategy_signal_history`. The sequential part (decision times, the gate's
Gatekeeper over an account book, the paper broker) runs in memory, minute by
minute, in the order the live loop (tradeflow.trading.session) runs its
steps, with no SQL per step. Its decisions, order events, fills and risk
events are written in bulk when it ends; positions, matches, P&L and equity
then come from the same dbt views, once, and the book's final state is
checked against them for every account (positions, cash, realized P&L): a
difference fails the run.

The set-based steps use every core: the bars go in and the signals come out
in symbol groups, one connection each, and the result tables are filled side
by side (engine.in_parallel).

A signal is decided when the live gate would first see it: at the close of
its bar once the bar is final (a higher-timeframe bar is final when all its
minutes are in, or at the next bar of the symbol), and only if that is within
max_signal_age of the bar's close.

Runs use one schema, `<schema>_backtest`, emptied at the start of each run;
results are copied into `backtest_*` tables of the main schema under the
run's run_id, where they stay next to other runs. Backtests run on the
embedded engine.
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import operator
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import yaml

from adapters.execution import RECORDED_EVENT_COLUMNS, fill_from_event, order_event_row
from adapters.orders import Order, OrderEvent, Side
from adapters.paper import DEFAULT_FILL_MODEL, PaperBroker, PaperConfig
from ingest.execs import EXEC_FIELDS
from tradeflow import engine
from tradeflow.config import Settings
from tradeflow.dbt import deploy
from tradeflow.research import performance
from tradeflow.research.report import ReportData, write_report
from tradeflow.trading import accounts, policy
from tradeflow.trading.book import AccountBook, BookFill, Ledgers
from tradeflow.trading.book_sync import instrument_steps, load_market, reconcile, returns_needed
from tradeflow.trading.gate import (DECISION_COLUMNS, PAPER_CAPITAL, PAPER_LEVERAGE, RISK_EVENT_COLUMNS, TIMEFRAMES,
                                    Decision, Gatekeeper, Signal, Sizing, decision_rows, load_terms)
from tradeflow.trading.session import BAR, PolicyChange
from tradeflow.writer import COPY_CHUNK_ROWS, BackgroundCopy, copy_frames

Outputs = Literal["matches-only", "full"]
GATE_ID = "backtest-gate"
BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "source", "batch_id", "received_at")
WRITTEN_COLUMNS = {"order_events": RECORDED_EVENT_COLUMNS, "trade_decisions": DECISION_COLUMNS,
                   "risk_events": RISK_EVENT_COLUMNS,
                   "exec_report_history": (*EXEC_FIELDS, "source", "batch_id", "received_at")}
# result table -> (relation of the backtest schema, outputs that keep it), stored side by side in
# this order: the equity curve (pnl_timeseries, a row per traded symbol and bar), by far the
# longest, first, so the others fill the other connections meanwhile
RESULTS = {
    "backtest_equity": ("pnl_timeseries", {"full"}),
    "backtest_matches": ("trade_match_history", {"matches-only", "full"}),
    "backtest_trades": ("trades", {"matches-only", "full"}),
    "backtest_decisions": ("trade_decisions", {"full"}),
    "backtest_order_events": ("order_events", {"full"}),
    "backtest_fills": ("exec_report_history", {"full"}),
    "backtest_unrealized": ("unrealized_pnl_latest", {"full"}),
    "backtest_risk_events": ("risk_events", {"full"}),
}


TRADE_REPORT_COLUMNS = ("entry_ts", "exit_ts", "holding_time", "account_id", "strategy_id", "symbol", "side", "qty",
                        "entry_price", "exit_price", "realized_pnl_gross", "fees", "realized_pnl", "return_pct",
                        "mae_pct", "mfe_pct")
STRATEGY_REPORT_COLUMNS = ("trades", "win_rate", "profit_factor", "avg_win", "avg_loss", "realized_pnl",
                           "exposure_time", "fees_paid")


class BacktestError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account_id: str
    capital: Decimal = Decimal(100_000)
    max_leverage: Decimal = Decimal(2)
    policy: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class BacktestSpec:
    start: datetime
    end: datetime
    accounts: tuple[AccountSpec, ...]
    symbols: tuple[str, ...] | None = None       # None: every symbol of the bars
    strategies: tuple[str, ...] | None = None    # None: every enabled strategy
    policy_changes: tuple[PolicyChange, ...] = ()
    paper: PaperConfig = DEFAULT_FILL_MODEL
    outputs: Outputs = "full"
    max_signal_age: timedelta = timedelta(minutes=2)
    shadow: bool = False  # also trade every signal in its strategy's paper account (the scoreboard's input)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise BacktestError("start/end: must have a time zone")
        if self.end <= self.start:
            raise BacktestError(f"end: {self.end} is not after start {self.start}")
        if not self.accounts:
            raise BacktestError("accounts: a backtest needs at least one account")
        if self.outputs not in ("matches-only", "full"):
            raise BacktestError(f"outputs: {self.outputs!r} is not matches-only or full")

    def fingerprint(self, bars: pd.DataFrame) -> str:
        """Same spec and same bars, same fingerprint: the default run_id's stem."""
        digest = hashlib.sha256(json.dumps(asdict(self), default=str, sort_keys=True).encode())
        digest.update(pd.util.hash_pandas_object(bars.reset_index(drop=True), index=False).values.tobytes())
        return digest.hexdigest()[:12]


@dataclass
class BacktestResult:
    run_id: str
    bars: int
    signals: int
    decisions: int
    accepted: int
    rejects: dict[str, int]
    seconds: dict[str, float]
    metrics_by_account: pd.DataFrame
    metrics_by_strategy: pd.DataFrame
    broker_rejects: dict[str, int] = field(default_factory=dict)  # the broker's REJECTED orders by reason code

    @property
    def bars_per_second(self) -> float:
        return self.bars / max(sum(self.seconds.values()), 1e-9)


@dataclass(frozen=True)
class Analysis:
    equity: pd.DataFrame          # the run's combined equity (ts, equity)
    by_account: pd.DataFrame      # performance.metrics_by rows, plus the whole-run row
    by_strategy: pd.DataFrame
    trades: pd.DataFrame          # round trips (the trades view)
    rejects: pd.DataFrame         # by (stage, reject_code, strategy_id, account_id): the gate's and the broker's
    opened_at: pd.Timestamp       # the first bar: each account's opening equity sample

    @property
    def broker_rejects(self) -> dict[str, int]:
        broker = self.rejects[self.rejects.stage == "broker"]
        return {str(k): int(v) for k, v in broker.groupby("reject_code")["count"].sum().items()}


def _json_number(value: object) -> object:
    """JSON has no NaN or infinity: NaN becomes null, infinities their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value.isoformat() if isinstance(value, (datetime, pd.Timestamp)) else value


def describe_fill_model(paper: PaperConfig) -> str:
    """The fill model in words, for people (the report, the console)."""
    where = {"open": "the next bar's open", "close": "the next bar's close",
             "signal_close": "the signal bar's close (bar execution)"}[paper.fill_at]
    fees = [f"${paper.fee_per_share}/share" if paper.fee_per_share else "",
            f"{paper.fee_bps} bps of notional" if paper.fee_bps else ""]
    fee = " + ".join(f for f in fees if f) or "none"
    if paper.min_fee:
        fee += f", at least ${paper.min_fee} per order"
    session = {None: "midnight UTC", "calendar": "the close of their symbol's market session"}.get(
        paper.session_end) or f"{paper.session_end:%H:%M} UTC"
    return (f"market orders fill at {where}, {paper.slippage_bps} bps slippage; fees {fee} (rounded {paper.fee_rounding}"
            f" to {paper.fee_step}); at most {paper.max_participation:%} of a bar's volume; tick {paper.tick_size},"
            f" lot {paper.lot_size}; DAY orders end at {session}")


def backtest_settings(settings: Settings) -> Settings:
    return replace(settings, schema=f"{settings.schema}_backtest")


def decision_times(bars: pd.DataFrame, signals: pd.DataFrame, max_signal_age: timedelta) -> pd.Series:
    """When the live gate first sees each signal (NaT: never, it would be stale).

    A bar of k minutes is final once its k minutes are in (at its close) or
    once the symbol has a later bar (at that bar's close)."""
    if signals.empty:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    # nanoseconds whatever unit the frames hold
    bar_ts = bars.ts.dt.tz_convert(None).to_numpy().astype("M8[ns]").view("i8")
    signal_ts = signals.signal_ts.dt.tz_convert(None).to_numpy().astype("M8[ns]").view("i8")
    final_at = np.full(len(signals), np.iinfo(np.int64).min)  # NaT
    by_symbol = bars.groupby("symbol", sort=False).indices
    # per (symbol, timeframe), every signal at once: two binary searches in the symbol's minutes
    for (symbol, timeframe), rows in signals.groupby(["symbol", "timeframe"], sort=False).indices.items():
        if symbol not in by_symbol:
            continue
        times = np.sort(bar_ts[by_symbol[symbol]])
        length = pd.Timedelta(TIMEFRAMES[timeframe]).value
        starts = signal_ts[rows]
        lo, hi = times.searchsorted(starts), times.searchsorted(starts + length)
        complete = hi - lo == length // pd.Timedelta(BAR).value
        later = ~complete & (hi < len(times))
        final_at[rows[complete]] = starts[complete] + length
        final_at[rows[later]] = times[hi[later]] + pd.Timedelta(BAR).value
    out = pd.Series(pd.to_datetime(final_at.view("M8[ns]")).tz_localize("UTC"), index=signals.index)
    lengths = signals.timeframe.map({timeframe: pd.Timedelta(length) for timeframe, length in TIMEFRAMES.items()})
    stale = out - (signals.signal_ts + lengths)
    return out.where(stale <= pd.Timedelta(max_signal_age))


class BacktestMismatchError(BacktestError):
    """The account book's final state differs from the views: the run is not to be trusted."""


@dataclass
class ReplayStats:
    decisions: int = 0
    accepted: int = 0
    rejects: dict[str, int] = field(default_factory=dict)

    def count(self, decision: Decision) -> None:
        self.decisions += 1
        if decision.accepted:
            self.accepted += 1
        else:
            self.rejects[str(decision.code)] = self.rejects.get(str(decision.code), 0) + 1


@dataclass(frozen=True)
class RunShape:
    """What a run's finishing (store, metrics) needs of its bars and signals: a sweep's
    finishing process gets this, not the bars (a year of 100 symbols is about 1 GB)."""
    first_bar: pd.Timestamp  # each account's opening equity sample
    bars: int
    symbols: tuple[str, ...]
    signals: int

    @classmethod
    def of(cls, bars: pd.DataFrame, signals: pd.DataFrame) -> RunShape:
        return cls(bars.ts.iloc[0], len(bars), tuple(sorted(bars.symbol.unique())), len(signals))


@dataclass(frozen=True)
class ReplayOutcome:
    """What a replay leaves for the finishing steps: the book's final ledgers (checked against
    the views), its counts, the paper accounts it opened and the accounts it blocked.
    Picklable and small, unlike the replay (its gate and broker read the replay's clock
    through a closure; its book holds every fill)."""
    ledgers: Ledgers
    stats: ReplayStats
    opened_paper: tuple[str, ...]
    blocked: tuple[str, ...]


class SequentialReplay:
    """The sequential part of a backtest, in memory: per minute, in the live loop's
    order (tradeflow.trading.session), policy changes due, the paper broker trading
    live orders against the minute's bars (fills and order states into the book),
    the marks of held symbols, the signals due decided by the Gatekeeper, then the
    accepted orders submitted. Rows for the raw tables are collected, not written."""

    def __init__(self, spec: BacktestSpec, terms: dict[str, Sizing], multipliers: dict[str, Decimal],
                 source: str, sink: Callable[[dict[str, list[tuple]]], None], sink_rows: int = 100_000,
                 risk_refresh: timedelta = timedelta(minutes=5), risk_window_days: int = 60) -> None:
        self.spec = spec
        self.now = datetime.min
        clock: Callable[[], datetime] = lambda: self.now  # noqa: E731  (the replay's clock)
        self.book = AccountBook()
        self.keeper = Gatekeeper(self.book, clock=clock, max_signal_age=spec.max_signal_age, shadow=spec.shadow)
        self.keeper.terms, self.keeper.multipliers = terms, multipliers
        self.broker = PaperBroker(spec.paper, clock=clock, retain_finished=False)
        self.source = source
        self.orders: dict[str, Order] = {}
        self._order_clock: dict[str, tuple[int, datetime]] = {}  # order -> (last seq, last event time)
        # rows for the raw tables, handed to `sink` every sink_rows rows and at the end: bulk writes, bounded memory
        self.sink, self.sink_rows = sink, sink_rows
        self.rows: dict[str, list[tuple]] = {"order_events": [], "trade_decisions": [], "risk_events": [],
                                             "exec_report_history": []}
        self.blocked: list[str] = []
        self.opened_paper: list[str] = []
        self.stats = ReplayStats()
        # the daily returns the VaR and correlation checks read, refreshed every risk_refresh of the
        # replay's time as the live gate does (from the run's bars known by then: no look-ahead)
        self.risk_refresh, self.risk_window_days = risk_refresh, risk_window_days
        self._next_risk_refresh: datetime | None = None
        self._policy: dict[str, dict[str, object]] = {}
        for account in spec.accounts:
            self.book.open_account(account.account_id, account.capital, max_leverage=account.max_leverage)
            self._set_policy(account.account_id, account.policy)

    def _set_policy(self, account_id: str, changes: dict[str, object]) -> None:
        merged = {**self._policy.get(account_id, {}), **changes}
        self._policy[account_id] = merged
        self.book.set_policy(account_id, merged)

    def run(self, bars: pd.DataFrame, signals: pd.DataFrame, on_progress: Callable[[int], None] | None) -> None:
        with _cyclic_gc_paused(), _quick_lock_handoff():
            self._run(bars, signals, on_progress)

    def outcome(self) -> ReplayOutcome:
        return ReplayOutcome(self.book.ledgers(), self.stats, tuple(dict.fromkeys(self.opened_paper)),
                             tuple(dict.fromkeys(self.blocked)))

    def _run(self, bars: pd.DataFrame, signals: pd.DataFrame, on_progress: Callable[[int], None] | None) -> None:
        due = self._signals_by_time(signals)
        changes = sorted(self.spec.policy_changes, key=lambda c: c.at)
        codes, uniques = pd.factorize(bars.symbol, sort=False)
        symbols = uniques.tolist()  # indexed per bar: a list, not an Arrow-backed array
        ts = bars.ts.dt.tz_convert(None).to_numpy()  # UTC datetime64: an object array of Timestamps is slow
        starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
        ends = np.r_[starts[1:], len(bars)]
        opens, highs, lows, closes, volumes = (bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume"))
        last_row = np.full(len(symbols), -1)
        row_numbers = np.arange(len(bars))
        code_of = {symbol: code for code, symbol in enumerate(symbols)}
        minute_ts = bars.ts.iloc[starts].array.to_pydatetime()
        closes_by_day: DailyCloses | None = None  # built when a risk check first needs returns
        exact = ExactPrices()
        # whether some account needs returns or post-trade checks: policy-derived, so looked at again
        # only after a policy change or a new (paper) account, not every minute
        flags_of: tuple[int, int] | None = None
        for lo, hi, bar_ts in zip(starts, ends, minute_ts):
            self.now = bar_ts + BAR  # the minute's bars are complete at their close
            while changes and changes[0].at <= self.now:
                change = changes.pop(0)
                self._set_policy(change.account_id, change.changes)
            if flags_of != (len(self.book.accounts), len(changes)):
                flags_of = (len(self.book.accounts), len(changes))
                needs_returns, monitoring = returns_needed(self.book), self.keeper.monitoring
            at_close: list[OrderEvent] = []
            if self.broker.has_live_orders:
                # a bar trades only its symbol's orders; the minute's first bar also expires any order
                # past its session end: the other bars are no-ops for the broker
                trading = self.broker.live_symbols
                for row in range(lo, hi):
                    if row == lo or symbols[codes[row]] in trading:
                        self.broker.on_bar(symbols[codes[row]], bar_ts, *(exact(a[row]) for a in
                                                                          (opens, highs, lows, closes, volumes)))
                events = self.broker.poll_events()
                # a fill stamped at the close is not in that close's equity (pnl_timeseries): after the marks
                at_close = [e for e in events if e.event_ts >= self.now]
                self._record([e for e in events if e.event_ts < self.now])
            last_row[codes[lo:hi]] = row_numbers[lo:hi]
            held = [(symbol, bar_ts, exact(closes[row])) for symbol in self.book.held_symbols()
                    if lo <= (row := last_row[code_of[symbol]]) < hi]
            if held:
                self.book.on_bars(held)
            if needs_returns and (self._next_risk_refresh is None or self.now >= self._next_risk_refresh):
                self._next_risk_refresh = self.now + self.risk_refresh
                closes_by_day = closes_by_day or DailyCloses(bars)
                self.book.risk.set_returns(closes_by_day.returns(self.now, self.risk_window_days), self.now)
            if monitoring:
                self.rows["risk_events"] += self.keeper.monitor(GATE_ID)
            if at_close:
                self._record(at_close)
            pending = due.pop(self.now, None)
            if pending:
                self._decide(pending, lambda symbol: self._mark_for(symbol, last_row, code_of, ts, closes, exact))
            if sum(map(len, self.rows.values())) >= self.sink_rows:
                self._flush()
            if on_progress:
                on_progress(hi - lo)
        self._flush()

    def _flush(self) -> None:
        self.sink(self.rows)
        self.rows = {table: [] for table in self.rows}

    def _mark_for(self, symbol: str, last_row: np.ndarray, code_of: dict, ts: np.ndarray, closes: np.ndarray,
                  exact: ExactPrices) -> None:
        """A symbol about to be held gets its last close as a mark (no equity sample)."""
        row = last_row[code_of[symbol]] if symbol in code_of else -1
        if row >= 0:
            at = ts[row].astype("datetime64[us]").item().replace(tzinfo=timezone.utc)
            self.book.set_mark(symbol, at, exact(closes[row]))

    @staticmethod
    def _signals_by_time(signals: pd.DataFrame) -> dict[datetime, list[Signal]]:
        # whole columns converted at once, not row by row; in Signal's field order, so built positionally
        columns = {c: signals[c].tolist() for c in Signal.__slots__}
        columns["signal_ts"] = list(signals.signal_ts.array.to_pydatetime())
        columns["atr_14"] = [None if pd.isna(x) else float(x) for x in columns["atr_14"]]
        columns["ref_price"] = [None if x is None or pd.isna(x) else Decimal(str(x)) for x in columns["ref_price"]]
        due: dict[datetime, list[Signal]] = {}
        for decide_at, values in zip(signals.decide_at.array.to_pydatetime(), zip(*columns.values())):
            due.setdefault(decide_at, []).append(Signal(*values))
        return due

    def _decide(self, signals: list[Signal], mark: Callable[[str], None]) -> None:
        """The gate decides every signal due, then the accepted orders go out (as the live
        session: the adapter submits after the gate's pass)."""
        accepted: list[Decision] = []
        for signal in signals:
            effects = self.keeper.decide(signal)
            self.stats.count(effects.decisions[0])
            self.blocked += effects.blocked
            self.opened_paper += effects.opened_paper
            for table, rows in decision_rows(effects, self.now, GATE_ID).items():
                # the gate's NEW events carry no seq (it counts as 0), as live
                self.rows[table] += [(*row, None) for row in rows] if table == "order_events" else rows
            accepted += [d for d in effects.decisions if d.accepted]
        for decision in accepted:
            mark(decision.signal.symbol)
            order = _order_for(decision, self.now)
            self.orders[order.client_order_id] = order
            self._order_clock[order.client_order_id] = (0, self.now)  # the NEW event's
            self.broker.submit(order)
        if accepted:
            self._record(self.broker.poll_events())

    def _record(self, events: list[OrderEvent]) -> None:
        """The broker's events as the live adapter records them: each on its order's clock
        (never before the order's previous event) with the next per-order seq."""
        for event in events:
            order = self.orders[event.client_order_id]
            seq, last_ts = self._order_clock[event.client_order_id]
            if event.event_ts < last_ts:
                event = replace(event, event_ts=last_ts)
            self._order_clock[event.client_order_id] = (seq + 1, event.event_ts)
            self.rows["order_events"].append((*order_event_row(order, event, self.source), seq + 1))
            if event.last_fill_qty > 0:
                fill = fill_from_event(order, event)
                self.rows["exec_report_history"].append((*_exec_values(fill), self.source, self.source, self.now))
                self.book.on_fill(BookFill(fill.account_id, fill.strategy_id, fill.symbol, fill.order_id,
                                           fill.fill_id, fill.side, fill.fill_qty, fill.fill_price, fill.fee,
                                           fill.exec_ts))
            self.book.on_order_status(event.client_order_id, event.status)
            if event.status.terminal:  # its last event: memory bounded by the working orders
                del self.orders[event.client_order_id], self._order_clock[event.client_order_id]


# the round trips' columns (the trades view) as Arrow reads them: times as epoch microseconds, the
# holding time in seconds, amounts as float8 (what metrics and the report compute and print with)
TRADE_COLUMN_TYPES = {**{c: pa.string() for c in ("trade_id", "account_id", "strategy_id", "symbol", "side")},
                      "entry_ts": pa.int64(), "exit_ts": pa.int64(), "holding_time": pa.float64(),
                      **{c: pa.float64() for c in ("qty", "entry_price", "exit_price", "realized_pnl_gross", "fees",
                                                   "realized_pnl", "return_pct", "mae_pct", "mfe_pct")}}


def _read_trades(conn: psycopg.Connection, table: str, run_id: str) -> pd.DataFrame:
    """A run's stored round trips by COPY and Arrow (a year of 100 symbols has 300k; a tuple of
    Decimals per row took a second per 70k), in exit order."""
    columns = ", ".join(f"(extract(epoch FROM {c}) * 1000000)::bigint AS {c}" if c.endswith("_ts")
                        else f"extract(epoch FROM {c})::float8 AS {c}" if c == "holding_time"
                        else f"{c}::float8 AS {c}" if TRADE_COLUMN_TYPES[c] == pa.float64() else c
                        for c in TRADE_COLUMN_TYPES)
    trades = engine.copy_frame_out(conn, f"SELECT {columns} FROM {table} WHERE run_id = %s ORDER BY exit_ts, trade_id",
                                   TRADE_COLUMN_TYPES, (run_id,))
    for column in ("entry_ts", "exit_ts"):
        trades[column] = pd.to_datetime(trades[column], unit="us", utc=True)
    trades["holding_time"] = pd.to_timedelta(trades["holding_time"], unit="s")
    return trades


class DailyCloses:
    """The run's daily closes per symbol, for the risk checks' returns as of a replay time:
    daily_returns' definition (the last 1m close of each UTC day; today's is the last bar
    known so far), computed from the bars in memory instead of a query per refresh."""

    def __init__(self, bars: pd.DataFrame) -> None:
        self._series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # symbol -> (ts, day, close)
        ts = bars.ts.dt.tz_convert(None).to_numpy()  # UTC datetime64, not an object array of Timestamps
        days = ts.astype("datetime64[D]").astype(ts.dtype)
        for symbol, rows in bars.groupby("symbol", sort=False).indices.items():
            self._series[symbol] = (ts[rows], days[rows], bars.close.to_numpy()[rows])

    def returns(self, now: datetime, window: int) -> list[tuple[str, object, float]]:
        """(symbol, day, daily_return) of the newest `window` days of each symbol, from the bars opened before now."""
        known_before = np.datetime64(pd.Timestamp(now).tz_convert("UTC").tz_localize(None), "ns")
        rows: list[tuple[str, object, float]] = []
        for symbol, (ts, days, closes) in self._series.items():
            known = int(np.searchsorted(ts, known_before, side="left"))
            if not known:
                continue
            last_of_day = np.flatnonzero(np.r_[days[1:known] != days[:known - 1], True])[-(window + 1):]
            day_closes = closes[last_of_day]  # float8, as the view casts them
            day_stamps = [pd.Timestamp(d, tz="UTC").to_pydatetime() for d in days[last_of_day]]
            rows += [(symbol, day_stamps[i], day_closes[i] / day_closes[i - 1] - 1.0)
                     for i in range(1, len(day_closes))]
        return rows


SIGNAL_COLUMN_TYPES = {**{c: pa.string() for c in ("signal_id", "strategy_id", "symbol", "timeframe", "action",
                                                    "ref_price")},
                       "signal_ts": pa.int64(), **{c: pa.float64() for c in ("size_hint", "confidence", "atr_14")}}


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """The replay allocates millions of short-lived objects (rows, events, decisions) and no
    reference cycles (a collection right after a replay finds nothing unreachable): the
    collector's passes cost ~10% of its CPU for nothing (30 symbols x 60 days, 42,938
    decisions: 4.8 -> 4.3 s). Resumed, as it was, at the end."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def _quick_lock_handoff(interval: float = 0.001) -> Iterator[None]:
    """The replay (pure Python) shares the interpreter with the background writer's thread,
    which waits on the engine: each of its statements, once answered, waits for the
    interpreter lock until the replay's switch interval ends (5 ms by default). Measured when
    a sweep still stored its previous point on a thread too (about 40 statements a point): at
    1 ms the 3 x 3 sweep of bench/bench_sweep.py took 7.5-8.1 s against 8.8-8.9 s."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _decimal(value: float) -> Decimal:
    # the text a float is written to the database as: the same number in memory and in the views
    return Decimal(repr(float(value)))


class ExactPrices:
    """_decimal with a memory: prices repeat (a tick grid), and the replay converts a
    held symbol's close every minute. Cleared when full, so memory stays bounded."""

    def __init__(self, limit: int = 1_000_000) -> None:
        self._known: dict[float, Decimal] = {}
        self._limit = limit

    def __call__(self, value: float) -> Decimal:
        exact = self._known.get(value)
        if exact is None:
            if len(self._known) >= self._limit:
                self._known.clear()
            exact = self._known[value] = _decimal(value)
        return exact


_exec_values = operator.attrgetter(*EXEC_FIELDS)  # an exec_report_history row's values, in one C call


def _order_for(decision: Decision, decided_at: datetime) -> Order:
    """The order an accepted decision stands for, on the terms the gate wrote (the NEW event)."""
    signal, terms = decision.signal, decision.terms
    limit_price, stop_price = terms.prices(signal.action, signal.ref_price)
    return Order(client_order_id=decision.client_order_id, account_id=decision.account_id,
                 strategy_id=signal.strategy_id, symbol=signal.symbol, side=Side(signal.action), qty=decision.qty,
                 order_type=terms.order_type, time_in_force=terms.time_in_force, limit_price=limit_price,
                 stop_price=stop_price, ref_price=signal.ref_price, created_at=decided_at)


def symbol_groups(bars: pd.DataFrame, parts: int | None = None) -> list[list[str]]:
    """The run's symbols in up to `parts` groups (default: the CPU count) of about as
    many bars each, largest first onto the lightest group."""
    groups: list[list[str]] = [[] for _ in range(max(1, parts or os.cpu_count() or 1))]
    loads = [0] * len(groups)
    for symbol, count in bars.symbol.value_counts().items():
        lightest = loads.index(min(loads))
        groups[lightest].append(symbol)
        loads[lightest] += count
    return [sorted(group) for group in groups if group]


class Backtest:
    """model_vars: dbt vars the backtest schema is deployed with (e.g. other
    strategy params, pnl_method); the schema is redeployed whenever they or
    the models change."""

    def __init__(self, settings: Settings, *, model_vars: dict[str, object] | None = None) -> None:
        self.settings = settings
        self.bt_settings = backtest_settings(settings)
        self.model_vars = {"temporal_filter": False, "bar_indexes": False, "refreshed_models": ["stg_execs"],
                           **(model_vars or {})}

    def run(self, spec: BacktestSpec, bars: pd.DataFrame | None = None, *, run_id: str | None = None,
            on_progress: Callable[[int], None] | None = None, report: Path | None = None,
            tz: str = performance.DEFAULT_TZ, config: dict[str, object] | None = None) -> BacktestResult:
        """bars: the run's 1-minute bars (COPYed in); None takes the main schema's
        bars of spec.symbols over the period, moved inside the engine. config: the
        resolved run configuration (tradeflow.research.run_config), stored with the
        run and shown in its report."""
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        for change in spec.policy_changes:
            policy.validate(change.changes)
        self.check_main_schema(bars is None)
        self._prepare_schema()
        with engine.connect(self.bt_settings) as conn:
            self.ensure_result_tables(conn)
            self._empty_raw_tables(conn)
            bars = self._load_bars(conn, spec, bars)
            run_id = run_id or f"bt-{spec.fingerprint(bars)}"
            self._open_accounts(conn, spec)
            self._copy_instruments(conn)
            seconds["ingest"] = time.perf_counter() - started
            lap = time.perf_counter()
            signals = self._signals(conn, spec, bars)
            seconds["signals"] = time.perf_counter() - lap
            return self._decide_and_store(conn, spec, bars, signals, run_id, seconds, on_progress=on_progress,
                                          report=report, tz=tz, config=config)

    def check_main_schema(self, needs_bars: bool) -> None:
        """Before any work: results go to the main schema (created if missing); a run on
        ingested bars needs the main schema's models (stops with a clear error if absent)."""
        with engine.connect(self.settings) as conn:
            if needs_bars and not engine.relation_exists(conn, self.settings.schema, "stg_prices"):
                raise BacktestError(f"bars: schema {self.settings.schema!r} has no models deployed (no stg_prices):"
                                    " run `tradeflow deploy` and ingest bars, or pass bars (--synthetic)")
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.settings.schema}"')

    def _decide_and_store(self, conn: psycopg.Connection, spec: BacktestSpec, bars: pd.DataFrame,
                          signals: pd.DataFrame, run_id: str, seconds: dict[str, float], *,
                          on_progress: Callable[[int], None] | None, report: Path | None, tz: str,
                          config: dict[str, object] | None) -> BacktestResult:
        """The decision-dependent part of a run over bars and signals already in place:
        replay, write and check, store, metrics."""
        lap = time.perf_counter()
        # the replay's rows are written while it goes on
        with BackgroundCopy(lambda: engine.connect(self.bt_settings), WRITTEN_COLUMNS) as sink:
            replay = self._replay(conn, spec, bars, signals, run_id, sink.put, on_progress)
        seconds["replay"] = time.perf_counter() - lap
        return self._finish(conn, spec, RunShape.of(bars, signals), run_id, replay.outcome(), seconds, tz=tz,
                            config=config, report=report, bars=bars)

    def _replay(self, conn: psycopg.Connection, spec: BacktestSpec, bars: pd.DataFrame, signals: pd.DataFrame,
                run_id: str, sink: Callable[[dict[str, list[tuple]]], None],
                on_progress: Callable[[int], None] | None,
                terms: tuple[dict[str, Sizing], dict[str, Decimal]] | None = None) -> SequentialReplay:
        """The sequential part, its rows handed to `sink` (conn: read only, the market; terms: the
        gate's, default as loaded)."""
        replay = SequentialReplay(spec, *(terms or load_terms(conn)), source=f"backtest:{run_id}", sink=sink,
                                  risk_refresh=self.settings.risk_refresh,
                                  risk_window_days=self._model_var("risk_window_days"))
        load_market(conn, replay.book)  # instruments (copied from the main schema) and margin rates
        replay.broker.set_steps(instrument_steps(conn))
        replay.run(bars, signals, on_progress)
        return replay

    def _finish(self, conn: psycopg.Connection, spec: BacktestSpec, shape: RunShape, run_id: str,
                replay: ReplayOutcome, seconds: dict[str, float], *, tz: str, config: dict[str, object] | None,
                report: Path | None = None, bars: pd.DataFrame | None = None) -> BacktestResult:
        """After a replay whose rows are written: write, check against the views and store, metrics
        (bars: the run's, for the report's charts)."""
        lap = time.perf_counter()
        self._write(conn, spec, replay)
        seconds["write"] = time.perf_counter() - lap
        lap = time.perf_counter()
        self._check_and_store(conn, spec, run_id, replay.ledgers)
        seconds["store"] = time.perf_counter() - lap
        lap = time.perf_counter()
        analysis = self._analyse(conn, spec, run_id, tz, opened_at=shape.first_bar)
        seconds["metrics"] = time.perf_counter() - lap
        lap = time.perf_counter()
        self._store_run(conn, spec, run_id, shape, replay.stats, seconds, analysis, config)
        if report is not None:
            write_report(self._report_data(spec, run_id, bars, analysis, tz, config), report)
        seconds["store"] += time.perf_counter() - lap
        stats = replay.stats
        return BacktestResult(run_id, shape.bars, shape.signals, stats.decisions, stats.accepted,
                              dict(stats.rejects), {k: round(v, 3) for k, v in seconds.items()}, analysis.by_account,
                              analysis.by_strategy, analysis.broker_rejects)

    def _model_var(self, name: str) -> object:
        """A dbt var as the backtest schema is deployed with it: model_vars, else dbt_project.yml's."""
        if name in self.model_vars:
            return self.model_vars[name]
        return yaml.safe_load((self.settings.project_dir / "dbt_project.yml").read_text())["vars"][name]

    # -- set-based part -----------------------------------------------------------
    def _load_bars(self, conn: psycopg.Connection, spec: BacktestSpec, bars: pd.DataFrame | None) -> pd.DataFrame:
        """The run's bars in the backtest schema, and in memory sorted by (ts, symbol)."""
        # loaded without indexes (dbt var bar_indexes false), then the one a read needs is built
        # from the loaded rows: a sorted build, where an index kept during the load costs most of it
        conn.execute("DROP INDEX IF EXISTS price_1m_history_symbol_ts")
        if bars is not None:
            bars = self._select_bars(spec, bars)
            codes = pd.factorize(bars.symbol)[0]

            # every bar is in the past of the run
            def load(c: psycopg.Connection, group: list[str]) -> int:
                # a chunk of the group's rows at a time, not a copy of every bar next to `bars`;
                # symbol after symbol, so that a symbol's bars lie together on disk: the reads by
                # symbol (signals, marks, round trips' MAE/MFE) touch its pages, not every page
                rows = np.flatnonzero(bars.symbol.isin(group).to_numpy())
                rows = rows[np.argsort(codes[rows], kind="stable")]
                chunks = (bars.iloc[rows[i:i + COPY_CHUNK_ROWS]].assign(
                    source="backtest", batch_id="backtest", received_at=spec.end)
                    for i in range(0, len(rows), COPY_CHUNK_ROWS))
                return copy_frames(c, "price_1m_history", BAR_COLUMNS, chunks)
            engine.in_parallel(self.bt_settings, [lambda c, group=group: load(c, group) for group in symbol_groups(bars)])
        else:
            main = self.settings.schema
            if spec.symbols is not None:
                known = {row[0] for row in conn.execute(
                    f'SELECT DISTINCT symbol FROM "{main}".price_1m_history WHERE symbol = ANY(%s)',
                    (list(spec.symbols),))}
                if set(spec.symbols) - known:
                    raise BacktestError(f"symbols: no bars for {sorted(set(spec.symbols) - known)}")
            # the main schema's deduplicated bars, moved inside the engine: validated once, at ingest
            conn.execute(
                f"INSERT INTO price_1m_history ({', '.join(BAR_COLUMNS)})"
                f" SELECT symbol, bar_ts, open, high, low, close, volume, 'backtest', 'backtest', %s"
                f' FROM "{main}".stg_prices WHERE bar_ts >= %s AND bar_ts < %s'
                f" AND (%s::text[] IS NULL OR symbol = ANY(%s)) ORDER BY symbol, bar_ts",  # a symbol's bars together
                (spec.end, spec.start, spec.end, list(spec.symbols) if spec.symbols else None,
                 list(spec.symbols) if spec.symbols else None))
            bars = engine.copy_frame_out(
                conn, "SELECT symbol, (extract(epoch FROM ts) * 1000000)::bigint AS ts, open::float8 AS open,"
                " high::float8 AS high, low::float8 AS low, close::float8 AS close, volume::float8 AS volume"
                " FROM price_1m_history ORDER BY ts, symbol",
                {"symbol": pa.string(), "ts": pa.int64(), **{c: pa.float64() for c in BAR_COLUMNS[2:7]}})
            if bars.empty:
                raise BacktestError(f"bars: none between {spec.start} and {spec.end}")
            bars["ts"] = pd.to_datetime(bars.ts, unit="us", utc=True)
        # trades' MAE/MFE read each round trip's bars by (symbol, ts)
        conn.execute("CREATE INDEX price_1m_history_symbol_ts ON price_1m_history (symbol, ts)")
        conn.execute("ANALYZE price_1m_history")
        return bars

    @staticmethod
    def _select_bars(spec: BacktestSpec, bars: pd.DataFrame) -> pd.DataFrame:
        """The run's bars sorted by (ts, symbol); the caller's frame itself (no copy) when
        it is already in range, sorted and indexed 0..n-1, as a year of 100 symbols is
        about 1 GB in memory."""
        missing = {"symbol", "ts", "open", "high", "low", "close", "volume"} - set(bars.columns)
        if missing:
            raise BacktestError(f"bars: missing columns {sorted(missing)}")
        if str(bars.ts.dtype) != "datetime64[ns, UTC]":
            bars = bars.assign(ts=pd.to_datetime(bars.ts, utc=True))
        keep = (bars.ts >= spec.start) & (bars.ts < spec.end)
        if spec.symbols is not None:
            unknown = set(spec.symbols) - set(bars.symbol)
            if unknown:
                raise BacktestError(f"symbols: no bars for {sorted(unknown)}")
            keep &= bars.symbol.isin(spec.symbols)
        if not keep.all():
            bars = bars[keep]
        if bars.empty:
            raise BacktestError(f"bars: none between {spec.start} and {spec.end}")
        ts = bars.ts.dt.tz_convert(None).to_numpy().view("i8")
        codes, _ = pd.factorize(bars.symbol, sort=True)
        later = (ts[1:] > ts[:-1]) | ((ts[1:] == ts[:-1]) & (codes[1:] > codes[:-1]))
        if not later.all():
            bars = bars.take(np.lexsort((codes, ts)))
        if not bars.index.equals(pd.RangeIndex(len(bars))):
            bars = bars.reset_index(drop=True)
        return bars

    def _prepare_schema(self) -> None:
        """Deploy the models into the backtest schema unless these very models and vars are there."""
        digest = hashlib.sha256(json.dumps(self.model_vars, sort_keys=True, default=str).encode())
        project = self.settings.project_dir
        for path in sorted([project / "dbt_project.yml", *(p for folder in ("models", "macros", "udfs")
                                                           for p in (project / folder).rglob("*") if p.is_file())]):
            digest.update(path.relative_to(project).as_posix().encode() + path.read_bytes())
        fingerprint = digest.hexdigest()
        marker = f'"{self.bt_settings.schema}".backtest_deployment'
        with engine.connect(self.settings) as conn:
            if engine.relation_exists(conn, self.bt_settings.schema, "backtest_deployment"):
                if conn.execute(f"SELECT fingerprint FROM {marker}").fetchone() == (fingerprint,):
                    return
            # deployed from empty: the schema holds nothing a run keeps (its raw tables are emptied
            # by each run), and a model that changes kind (stg_execs, a view before
            # refreshed_models) would be dropped with the views that dbt then expects to replace
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.bt_settings.schema}" CASCADE')
        deploy(self.bt_settings, vars=self.model_vars)
        with engine.connect(self.settings) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {marker} (fingerprint text)")
            conn.execute(f"TRUNCATE {marker}")
            conn.execute(f"INSERT INTO {marker} VALUES (%s)", (fingerprint,))

    def _empty_raw_tables(self, conn: psycopg.Connection, keep: tuple[str, ...] = ()) -> None:
        """Every table of the backtest schema is a raw table (models are views), but the deployment
        marker and `keep` (a sweep keeps its bars for every run)."""
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'"
            " AND table_name <> 'backtest_deployment' AND NOT table_name = ANY(%s) ORDER BY table_name",
            (self.bt_settings.schema, list(keep)))]
        conn.execute("TRUNCATE " + ", ".join(f'"{self.bt_settings.schema}".{t}' for t in tables))

    def _copy_instruments(self, conn: psycopg.Connection) -> None:
        if engine.relation_exists(conn, self.settings.schema, "instruments"):  # none in a never-deployed schema
            conn.execute(f'INSERT INTO instruments SELECT * FROM "{self.settings.schema}".instruments')

    @staticmethod
    def _open_accounts(conn: psycopg.Connection, spec: BacktestSpec) -> None:
        opened = spec.start - timedelta(minutes=1)
        for account in spec.accounts:
            accounts.add(conn, account.account_id, capital=account.capital, max_leverage=account.max_leverage)
            policy.update(conn, account.account_id, updated_by="backtest", at=opened, **account.policy)

    def _signals(self, conn: psycopg.Connection, spec: BacktestSpec, bars: pd.DataFrame) -> pd.DataFrame:
        known = {row[0] for row in conn.execute("SELECT strategy_id FROM strategy_config WHERE enabled")}
        wanted = set(spec.strategies) if spec.strategies is not None else known
        if wanted - known:
            raise BacktestError(f"strategies: {sorted(wanted - known)} not registered or not enabled"
                                f" (enabled: {sorted(known)})")

        def read(c: psycopg.Connection, symbols: list[str]) -> pd.DataFrame:
            # by COPY and Arrow, not a tuple per signal (a year of 100 symbols has 600k); the
            # prices as text, read back as the exact decimals
            with engine.read_scope(c, self.bt_settings, as_of=spec.end, symbols=symbols):
                return engine.copy_frame_out(
                    c, "SELECT signal_id, strategy_id, symbol, timeframe,"
                    " (extract(epoch FROM signal_ts) * 1000000)::bigint AS signal_ts, action, size_hint, confidence,"
                    " ref_price::text AS ref_price, atr_14 FROM strategy_signal_history WHERE strategy_id = ANY(%s)",
                    SIGNAL_COLUMN_TYPES, (sorted(wanted),))

        signals = pd.concat(engine.in_parallel(self.bt_settings, [
            lambda c, group=group: read(c, group) for group in symbol_groups(bars)]), ignore_index=True)
        if signals.empty:
            return signals.assign(decide_at=pd.Series(dtype="datetime64[ns, UTC]"))
        signals["signal_ts"] = pd.to_datetime(signals.signal_ts, unit="us", utc=True)
        # the live gate's order (gate.DecisionGate.pending); signal ids are ASCII: code point order
        signals = signals.sort_values(["signal_ts", "signal_id"], kind="stable", ignore_index=True)
        signals["decide_at"] = decision_times(bars, signals, spec.max_signal_age)
        return signals.dropna(subset=["decide_at"])

    def _write(self, conn: psycopg.Connection, spec: BacktestSpec, replay: ReplayOutcome) -> None:
        """What the sequential part changed besides its rows (already copied in bulk):
        paper accounts, policy changes as the operator's, blocks (account versions); then
        the statistics and the materialized models that the views read from here on."""
        for account_id in replay.opened_paper:
            accounts.add(conn, account_id, capital=PAPER_CAPITAL, max_leverage=PAPER_LEVERAGE)
        for change in sorted(spec.policy_changes, key=lambda c: c.at):
            policy.update(conn, change.account_id, updated_by=change.updated_by, at=change.at, **change.changes)
        for account_id in replay.blocked:
            accounts.set_status(conn, account_id, "BLOCKED", updated_by=GATE_ID)
        for table in WRITTEN_COLUMNS:
            conn.execute(f"ANALYZE {table}")
        # the models deployed here as materialized views (dbt var refreshed_models), now that
        # their raw tables are written: each of them computed once for every view read after
        for model in self._model_var("refreshed_models"):
            conn.execute(f'REFRESH MATERIALIZED VIEW "{model}"')

    def ensure_result_tables(self, conn: psycopg.Connection) -> None:
        """The main schema's results tables (RESULTS), once per run or sweep, not per stored run:
        a sweep point's storing waits on each statement."""
        main = self.settings.schema
        for table, (relation, _) in RESULTS.items():
            conn.execute(f"CREATE TABLE IF NOT EXISTS \"{main}\".{table} AS"
                         f" SELECT ''::text AS run_id, * FROM \"{self.bt_settings.schema}\".{relation} WITH NO DATA")
            conn.execute(f'CREATE INDEX IF NOT EXISTS {table}_run ON "{main}".{table} (run_id)')

    def _check_and_store(self, conn: psycopg.Connection, spec: BacktestSpec, run_id: str, book: Ledgers) -> None:
        """The book's final ledgers checked against the views, every account (positions,
        cash, realized P&L), while the run's views are stored (_store_result); a run
        whose book and views differ fails and keeps no results."""
        main = self.settings.schema
        stored = [lambda c, table=table: self._store_result(c, spec, run_id, table) for table in RESULTS]
        _, mismatches, *_ = engine.in_parallel(self.bt_settings, [
            stored[0], lambda c: reconcile(c, self.bt_settings, book, spec.end), *stored[1:]])
        if mismatches:
            for table in RESULTS:
                conn.execute(f'DELETE FROM "{main}".{table} WHERE run_id = %s', (run_id,))
            raise BacktestMismatchError("account book and views differ at the end of the run: " + "; ".join(
                f"{m.account_id} {m.describe()}" for m in mismatches[:10]))

    # -- results ----------------------------------------------------------------------
    def _analyse(self, conn: psycopg.Connection, spec: BacktestSpec, run_id: str, tz: str, *,
                 opened_at: pd.Timestamp) -> Analysis:
        """Metrics per account, per strategy and for the run, from the run's views at its end
        (as stored under the run_id when the outputs keep them: each view is computed once).
        Trades are round trips; every account opens at its capital at the first bar (not at
        spec.start: a --tz west of UTC would put that on the day before the first bar)."""
        main = self.settings.schema
        full = spec.outputs == "full"
        with engine.read_scope(conn, self.bt_settings, as_of=spec.end):
            # by COPY and Arrow (a minute a row: a year is 98k rows an account), epoch microseconds:
            # they convert to timestamps at once, tz-aware objects do not
            equity = engine.copy_frame_out(
                conn, "SELECT account_id, (extract(epoch FROM bar_ts) * 1000000)::bigint AS ts,"
                " equity::float8 AS equity FROM "
                + (f'"{main}".backtest_equity WHERE run_id = %s' if full else "pnl_timeseries"),
                {"account_id": pa.string(), "ts": pa.int64(), "equity": pa.float64()}, (run_id,) if full else ())
            equity["ts"] = pd.to_datetime(equity.ts, unit="us", utc=True)
            trades = _read_trades(conn, f'"{main}".backtest_trades', run_id)
            # by COPY and Arrow, not a tuple of Decimals per fill: a year of 100 symbols has 600k
            fills = performance.fills_from_exec_reports(engine.copy_frame_out(
                conn, "SELECT (extract(epoch FROM exec_ts) * 1000000)::bigint AS exec_ts, account_id, strategy_id,"
                " symbol, side, fill_qty::float8 AS fill_qty, fill_price::float8 AS fill_price, fee::float8 AS fee"
                " FROM stg_execs ORDER BY exec_ts",
                {"exec_ts": pa.int64(), **{c: pa.string() for c in ("account_id", "strategy_id", "symbol", "side")},
                 **{c: pa.float64() for c in ("fill_qty", "fill_price", "fee")}}))
            fills["ts"] = pd.to_datetime(fills.ts, unit="us", utc=True)
            # the broker's reasons read "<CODE>: details" (tradeflow.reasons)
            rejects = engine.query_frame(
                conn, "SELECT stage, reject_code, strategy_id, account_id, count(*) AS count FROM ("
                " SELECT 'gate' AS stage, reject_code, strategy_id, account_id FROM trade_rejections UNION ALL"
                " SELECT 'broker', split_part(reason, ':', 1), strategy_id, account_id FROM order_events"
                " WHERE status = 'REJECTED') AS refused GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 1, 2, 3, 4")
        capital = {a.account_id: a.capital for a in spec.accounts}
        # every account starts the run at its capital (pnl_timeseries starts at its first fill)
        opening = pd.DataFrame({"account_id": list(capital), "ts": opened_at,
                                "equity": [float(c) for c in capital.values()]})
        equity = pd.concat([opening, equity], ignore_index=True)
        common = {"initial_equity": capital, "tz": tz}
        return Analysis(
            equity=performance.combine_equity(equity, "account_id", capital),
            by_account=performance.metrics_by("account_id", equity, trades, fills, **common),
            by_strategy=performance.metrics_by("strategy_id", equity, trades, fills, **common),
            trades=trades, rejects=rejects, opened_at=opened_at)

    @staticmethod
    def _report_data(spec: BacktestSpec, run_id: str, bars: pd.DataFrame, analysis: Analysis, tz: str,
                     config: dict[str, object] | None) -> ReportData:
        initial = analysis.equity.attrs["initial_equity"]
        daily = performance.daily_equity(analysis.equity, tz=tz, initial_equity=initial)
        month_ends = daily.groupby(daily.index.to_period("M")).last()
        monthly = month_ends / month_ends.shift(1, fill_value=initial) - 1
        benchmark = performance.buy_and_hold(bars, initial)
        alpha, beta = performance.alpha_beta(performance.daily_returns(analysis.equity, tz, initial),
                                             performance.daily_returns(benchmark, tz, initial))
        headline = {**analysis.by_account.loc[performance.RUN_LABEL].to_dict(), "alpha": alpha, "beta": beta,
                    "benchmark_return": float(benchmark.equity.iloc[-1]) / initial - 1}
        return ReportData(
            run_id=run_id, title=f"Backtest {run_id}", period_start=spec.start, period_end=spec.end,
            parameters={"symbols": ", ".join(sorted(bars.symbol.unique())),
                        "strategies": ", ".join(spec.strategies) if spec.strategies else "all enabled",
                        "accounts": ", ".join(f"{a.account_id} ({a.capital:,})" for a in spec.accounts),
                        "bars": f"{len(bars):,}", "fill model": describe_fill_model(spec.paper), "time zone": tz},
            equity=analysis.equity,
            # strategies share accounts: they have trade metrics, not equity curves of their own
            metrics_by_strategy=analysis.by_strategy[[c for c in STRATEGY_REPORT_COLUMNS
                                                      if c in analysis.by_strategy.columns]],
            metrics_by_account=analysis.by_account, monthly_returns=monthly,
            trades=analysis.trades[[c for c in TRADE_REPORT_COLUMNS if c in analysis.trades.columns]],
            rejects_by_code=analysis.rejects, run_metrics=headline, config=config or {},
            bars=bars[["symbol", "ts", "close"]], benchmark=benchmark, tz=tz)

    def _store_result(self, conn: psycopg.Connection, spec: BacktestSpec, run_id: str, table: str) -> None:
        """One of the run's views, as it stands at the run's end, under its run_id in the main schema."""
        main, bt = self.settings.schema, self.bt_settings.schema
        relation, kept_by = RESULTS[table]
        columns = self._evolve(conn, table, relation)
        conn.execute(f'DELETE FROM "{main}".{table} WHERE run_id = %s', (run_id,))
        if spec.outputs in kept_by:
            # the snapshot at the run's end: open positions marked at the final prices
            with engine.read_scope(conn, self.bt_settings, as_of=spec.end):
                conn.execute(f'INSERT INTO "{main}".{table} (run_id, {columns})'
                             f' SELECT %s, {columns} FROM "{bt}".{relation}', (run_id,))

    def _evolve(self, conn: psycopg.Connection, table: str, relation: str) -> str:
        """A results table kept from an older version gains the relation's new columns
        (e.g. order_events.seq), so old runs stay next to new ones; returns the column list."""
        def described(schema: str, name: str) -> dict[str, str]:
            return dict(conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
                " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                (schema, name)).fetchall())

        source = described(self.bt_settings.schema, relation)
        kept = described(self.settings.schema, table)
        for name, kind in source.items():
            if name not in kept:
                conn.execute(f'ALTER TABLE "{self.settings.schema}".{table} ADD COLUMN "{name}" {kind}')
        return ", ".join(f'"{name}"' for name in source)

    def _store_run(self, conn: psycopg.Connection, spec: BacktestSpec, run_id: str, shape: RunShape,
                   stats: ReplayStats, seconds: dict[str, float], analysis: Analysis,
                   config: dict[str, object] | None) -> None:
        main = self.settings.schema
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{main}".backtest_runs (run_id text PRIMARY KEY, spec jsonb,'
                     ' period_start timestamptz, period_end timestamptz, symbols text[], bars bigint, signals bigint,'
                     ' decisions bigint, accepted bigint, rejects jsonb, seconds jsonb, finished_at timestamptz)')
        # added since: the resolved run configuration, the broker's rejections by reason code
        conn.execute(f'ALTER TABLE "{main}".backtest_runs ADD COLUMN IF NOT EXISTS config jsonb,'
                     ' ADD COLUMN IF NOT EXISTS broker_rejects jsonb')
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{main}".backtest_metrics (run_id text, scope text, key text,'
                     ' metrics jsonb, PRIMARY KEY (run_id, scope, key))')
        conn.execute(f'DELETE FROM "{main}".backtest_metrics WHERE run_id = %s', (run_id,))
        with conn.cursor() as cur:
            cur.executemany(f'INSERT INTO "{main}".backtest_metrics VALUES (%s, %s, %s, %s)', [
                (run_id, scope, str(key), json.dumps({k: _json_number(v) for k, v in row.items()}))
                for scope, frame in (("account", analysis.by_account), ("strategy", analysis.by_strategy))
                for key, row in frame.iterrows()])
        columns = ("run_id, spec, period_start, period_end, symbols, bars, signals, decisions, accepted, rejects,"
                   " seconds, finished_at, config, broker_rejects")
        conn.execute(
            f'INSERT INTO "{main}".backtest_runs ({columns})'
            ' VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), %s, %s) ON CONFLICT (run_id) DO UPDATE SET '
            + ", ".join(f"{c} = excluded.{c}" for c in columns.split(", ")[1:]),
            (run_id, json.dumps(asdict(spec), default=str), spec.start, spec.end, list(shape.symbols),
             shape.bars, shape.signals, stats.decisions, stats.accepted, json.dumps(stats.rejects),
             json.dumps({k: round(v, 3) for k, v in seconds.items()}),
             None if config is None else json.dumps(config), json.dumps(analysis.broker_rejects)))


__all__ = ["AccountSpec", "Backtest", "BacktestError", "BacktestResult", "BacktestSpec", "PolicyChange",
           "backtest_settings", "decision_times", "describe_fill_model"]
