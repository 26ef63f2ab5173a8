"""The decision gate: TradePicker routing, sizing and pre-trade risk.

Whether a signal becomes an order has to be decided once, in order, and never
revised, which no engine's views can do portably. So one small process
decides each new signal and appends the immutable decision (with the inputs
it saw) to trade_decisions, plus a NEW order event for an accepted one, in
one transaction. It decides from hot state, the account book
(tradeflow.trading.book), rebuilt from the views at start-up, followed
through the change feeds and reconciled against the views on a cadence: no
decision re-reads history. The backtest decides through the same Gatekeeper.

Decisions are serialized: one lock covers bringing the book up to date,
deciding and writing, so concurrent candidates can never jointly break a
limit. Run one gate per deployment.

Routing (seed design): a BUY goes to an ACTIVE account not holding the
symbol, least open symbols first (open and pending count), least recently
chosen on ties; failing that, with allow_scale_in, to an account already
holding it; at most max_open_symbols per account. A SELL closes the
strategy's long in the account holding the largest one (strict mode:
sell_requires_long). A BLOCKED account takes no new risk but may still close;
its kill switch stops everything. The first candidate that passes every risk
check gets the order; if none passes, the preferred candidate's reason is
recorded.
"""
from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable, Iterable

import psycopg

from adapters.execution import crash_point
from adapters.orders import (
    ORDER_EVENT_COLUMNS,
    SHADOW_PREFIX,
    OrderStatus,
    OrderType,
    TimeInForce,
    client_order_id,
    is_shadow,
)
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.engine import ConnectionPool, read_scope
from tradeflow.reasons import ReasonCode
from tradeflow.trading import accounts, orders
from tradeflow.trading.book import AccountBook, AccountState, Pending
from tradeflow.trading.book_sync import BookFollower, Mismatch, bootstrap, reconcile
from tradeflow.trading.orders import ManualOrder
from tradeflow.trading.risk import MarketRisk, breaches, check_portfolio
from tradeflow.writer import insert_rows

DECISION_COLUMNS = ("decision_id", "signal_id", "strategy_id", "symbol", "action", "account_id", "outcome",
                    "reject_code", "qty", "ref_price", "client_order_id", "inputs", "signal_ts", "decided_at",
                    "gate_id")
log = logging.getLogger("tradeflow.gate")
book_log = logging.getLogger("tradeflow.book")
TIMEFRAMES = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15),
              "1h": timedelta(hours=1)}


@dataclass(frozen=True, slots=True)
class Signal:
    signal_id: str
    strategy_id: str
    symbol: str
    timeframe: str
    signal_ts: datetime
    action: str
    size_hint: float
    confidence: float
    ref_price: Decimal | None
    atr_14: float | None


@dataclass(frozen=True, slots=True)
class Sizing:
    """Per-strategy terms from strategy_config params. Sizing: risk equity *
    risk_per_trade_pct per ATR * atr_multiple of adverse move, in lots. Orders:
    MARKET, or LIMIT/STOP placed limit_offset_bps / stop_offset_bps from the
    signal's close (a buy limit below it, a buy stop above it). fixed_qty
    replaces the risk-based size (peer comparisons, simple setups)."""
    atr_multiple: Decimal = Decimal(2)
    lot_size: Decimal = Decimal(1)
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_offset_bps: Decimal = Decimal(0)
    stop_offset_bps: Decimal = Decimal(0)
    tick_size: Decimal = Decimal("0.01")
    fixed_qty: Decimal | None = None  # a fixed order size instead of the risk-based one
    limit_price: Decimal | None = None  # explicit prices (manual orders) instead of offsets
    stop_price: Decimal | None = None

    def prices(self, action: str, ref_price: Decimal | None) -> tuple[Decimal | None, Decimal | None]:
        """(limit_price, stop_price) for an order on this signal."""
        if self.limit_price is not None or self.stop_price is not None:
            return self.limit_price, self.stop_price
        if ref_price is None or self.order_type is OrderType.MARKET:
            return None, None
        buy = action == "BUY"
        if self.order_type is OrderType.LIMIT:
            price = ref_price * (1 - self.limit_offset_bps / 10_000 if buy else 1 + self.limit_offset_bps / 10_000)
            return price.quantize(self.tick_size, rounding=ROUND_FLOOR if buy else ROUND_CEILING), None
        price = ref_price * (1 + self.stop_offset_bps / 10_000 if buy else 1 - self.stop_offset_bps / 10_000)
        return None, price.quantize(self.tick_size, rounding=ROUND_CEILING if buy else ROUND_FLOOR)


# a strategy's shadow account trades every signal, for unbiased scoring
PAPER_CAPITAL = Decimal(100_000)
PAPER_OPEN_SYMBOLS = 1_000_000
PAPER_LEVERAGE = Decimal(100)


def paper_account_id(strategy_id: str) -> str:
    return SHADOW_PREFIX + strategy_id


@dataclass(frozen=True, slots=True)
class Decision:
    signal: Signal
    accepted: bool
    account_id: str | None
    qty: Decimal
    code: ReasonCode | None
    inputs: dict[str, object]
    blocked_accounts: tuple[str, ...] = ()  # drawdown breaches found on the way
    terms: Sizing = Sizing()
    shadow: bool = False  # the paper account's decision on the signal, next to the live one

    @property
    def decision_id(self) -> str:
        return SHADOW_PREFIX + self.signal.signal_id if self.shadow else self.signal.signal_id

    @property
    def client_order_id(self) -> str | None:
        return client_order_id(self.decision_id) if self.accepted else None


def size_buy(signal: Signal, account: AccountState, sizing: Sizing) -> Decimal:
    """Risk budget over the adverse move, scaled by the signal's strength, in whole lots."""
    if sizing.fixed_qty is not None:
        return sizing.fixed_qty
    strength = Decimal(str(signal.size_hint)) * (Decimal("0.5") + Decimal("0.5") * Decimal(str(signal.confidence)))
    budget = account.equity * account.risk_per_trade_pct * strength
    per_unit_risk = Decimal(str(signal.atr_14)) * sizing.atr_multiple
    lots = (budget / per_unit_risk / sizing.lot_size).to_integral_value(rounding=ROUND_FLOOR)
    return max(lots, Decimal(0)) * sizing.lot_size


def check_risk(account: AccountState, symbol: str, qty: Decimal, price: Decimal,
               market: MarketRisk | None = None) -> ReasonCode | None:
    """Pre-trade checks for a risk-adding BUY, in the order they are reported; then, with the
    market's hot data, the portfolio checks (sector, correlation, VaR, margin: docs/risk.md)."""
    notional = qty * price
    pending_notional = sum((p.open_qty * p.ref_price for p in account.pending if p.action == "BUY"), Decimal(0))
    pending_symbol = [p for p in account.pending if p.symbol == symbol and p.action == "BUY"]
    if account.max_order_notional is not None and notional > account.max_order_notional:
        return ReasonCode.ORDER_NOTIONAL_EXCEEDED
    if account.max_position_qty is not None:
        held = sum((q for (_, s), q in account.positions.items() if s == symbol), Decimal(0))
        if held + sum((p.open_qty for p in pending_symbol), Decimal(0)) + qty > account.max_position_qty:
            return ReasonCode.POSITION_LIMIT_EXCEEDED
    if account.gross_exposure + pending_notional + notional > account.equity * account.max_leverage:
        return ReasonCode.LEVERAGE_EXCEEDED
    if account.max_concentration_pct is not None:
        exposure = (account.symbol_exposure.get(symbol, Decimal(0))
                    + sum((p.open_qty * p.ref_price for p in pending_symbol), Decimal(0)) + notional)
        if exposure > account.max_concentration_pct * account.equity:
            return ReasonCode.CONCENTRATION_EXCEEDED
    buying_power = account.cash - pending_notional + (account.max_leverage - 1) * account.equity
    if notional > buying_power:
        return ReasonCode.INSUFFICIENT_BUYING_POWER
    return None if market is None else check_portfolio(account, market, symbol, notional)


def drawdown_breached(account: AccountState) -> bool:
    if account.max_drawdown_pct is None or account.peak_equity <= 0:
        return False
    return (account.peak_equity - account.equity) / account.peak_equity > account.max_drawdown_pct


def decide(signal: Signal, accounts_state: Iterable[AccountState], sizing: Sizing,
           market: MarketRisk | None = None) -> Decision:
    """Pure routing + sizing + risk: the same inputs always give the same decision."""
    return _route(signal, list(accounts_state), sizing, market)


def _route(signal: Signal, states: list[AccountState], sizing: Sizing, market: MarketRisk | None) -> Decision:
    inputs: dict[str, object] = {"signal": {"action": signal.action, "ref_price": str(signal.ref_price),
                                            "atr_14": signal.atr_14, "confidence": signal.confidence}}
    if signal.action == "SELL":
        return _decide_sell(signal, states, inputs, sizing)
    atr_needed = sizing.fixed_qty is None
    if signal.ref_price is None or atr_needed and (not signal.atr_14 or not math.isfinite(signal.atr_14)):
        return Decision(signal, False, None, Decimal(0), ReasonCode.NO_REFERENCE_PRICE, inputs)
    live = [a for a in states if not a.kill_switch]
    if not live:
        return Decision(signal, False, None, Decimal(0),
                        ReasonCode.KILL_SWITCH_ENGAGED if states else ReasonCode.ACCOUNT_BLOCKED, inputs)
    active = [a for a in live if a.status == "ACTIVE"]
    if not active:
        return Decision(signal, False, None, Decimal(0), ReasonCode.ACCOUNT_BLOCKED, inputs)
    candidates = _buy_candidates(signal.symbol, active)
    if not candidates:
        inputs["accounts"] = [a.summary() for a in active]
        return Decision(signal, False, None, Decimal(0), ReasonCode.OPEN_LIMIT_EXCEEDED, inputs)
    first_failure: tuple[AccountState, ReasonCode] | None = None
    blocked: list[str] = []
    for account in candidates:
        if drawdown_breached(account):
            blocked.append(account.account_id)
            first_failure = first_failure or (account, ReasonCode.DRAWDOWN_BREACHED)
            continue
        qty = size_buy(signal, account, sizing)
        code = ReasonCode.ZERO_SIZE if qty <= 0 else check_risk(account, signal.symbol, qty, signal.ref_price, market)
        if code is None:
            return Decision(signal, True, account.account_id, qty, None, {**inputs, "account": account.summary()},
                            tuple(blocked), sizing)
        first_failure = first_failure or (account, code)
    account, code = first_failure
    return Decision(signal, False, account.account_id, Decimal(0), code, {**inputs, "account": account.summary()},
                    tuple(blocked))


def _buy_candidates(symbol: str, active: list[AccountState]) -> list[AccountState]:
    open_symbols = {a.account_id: a.open_symbols for a in active}  # a set built per account, once

    def fairness(a: AccountState) -> tuple:
        # least loaded first; on ties the account chosen least recently (never chosen first)
        return (len(open_symbols[a.account_id]), a.last_accepted_at is not None, a.last_accepted_at or datetime.min,
                a.account_id)

    fresh = [a for a in active
             if symbol not in open_symbols[a.account_id] and len(open_symbols[a.account_id]) < a.max_open_symbols]
    holders = [a for a in active if a.allow_scale_in and symbol in open_symbols[a.account_id]]
    return sorted(fresh, key=fairness) + sorted(holders, key=fairness)


def _decide_sell(signal: Signal, states: list[AccountState], inputs: dict[str, object], sizing: Sizing) -> Decision:
    def closable(a: AccountState) -> Decimal:
        held = a.positions.get((signal.strategy_id, signal.symbol), Decimal(0))
        pending = sum((p.open_qty for p in a.pending if p.action == "SELL" and p.symbol == signal.symbol
                       and p.strategy_id == signal.strategy_id), Decimal(0))
        return held - pending if held > 0 else Decimal(0)

    holders = [a for a in states if closable(a) > 0
               or (not a.sell_requires_long and a.positions.get((signal.strategy_id, signal.symbol), 0) != 0)]
    if not holders:
        return Decision(signal, False, None, Decimal(0), ReasonCode.NO_OPEN_POSITION, inputs)
    live = [a for a in holders if not a.kill_switch]
    if not live:
        return Decision(signal, False, holders[0].account_id, Decimal(0), ReasonCode.KILL_SWITCH_ENGAGED, inputs)
    account = max(live, key=lambda a: (closable(a), a.account_id))
    qty = closable(account) if sizing.fixed_qty is None else min(closable(account), sizing.fixed_qty)
    if qty <= 0:
        return Decision(signal, False, account.account_id, Decimal(0), ReasonCode.NO_OPEN_POSITION,
                        {**inputs, "account": account.summary()})
    return Decision(signal, True, account.account_id, qty, None, {**inputs, "account": account.summary()},
                    terms=sizing)


@dataclass(frozen=True, slots=True)
class Effects:
    """What deciding one signal changes, written together (one transaction live, in bulk in a backtest)."""
    decisions: tuple[Decision, ...]
    blocked: tuple[str, ...] = ()        # accounts blocked for a drawdown breach on the way
    opened_paper: tuple[str, ...] = ()   # strategies' paper accounts opened for this decision


class Gatekeeper:
    """Decides signals from the account book: routing, sizing, every risk check and the
    book's update, with no SQL. The live gate and the backtest both decide through it."""

    def __init__(self, book: AccountBook, *, clock: Callable[[], datetime], max_signal_age: timedelta,
                 shadow: bool = False) -> None:
        self.book = book
        self.clock = clock
        self.max_signal_age = max_signal_age
        self.shadow = shadow
        self.terms: dict[str, Sizing] = {}             # strategy -> sizing and order terms
        self.multipliers: dict[str, Decimal] = {}      # strategy -> weight-derived size multiplier
        self.halted: set[str] = set()                  # accounts whose book disagreed with the views

    def is_stale(self, signal: Signal) -> bool:
        bar_close = signal.signal_ts + TIMEFRAMES.get(signal.timeframe, timedelta(minutes=1))
        return self.clock() - bar_close > self.max_signal_age

    def _states(self, now: datetime) -> list[AccountState]:
        states = self.book.states(now)
        # an account the reconciliation halted takes no new risk, as a BLOCKED one
        return [replace(s, status="BLOCKED") if s.account_id in self.halted else s for s in states]

    def _instrument_terms(self, symbol: str, terms: Sizing) -> Sizing:
        """A symbol's lot and tick sizes come from its instruments row, where it has one."""
        instrument = self.book.risk.instruments.get(symbol)
        if instrument is None or (terms.lot_size, terms.tick_size) == (instrument.lot_size, instrument.tick_size):
            return terms
        return replace(terms, lot_size=instrument.lot_size, tick_size=instrument.tick_size)

    def decide(self, signal: Signal) -> Effects:
        if self.is_stale(signal):
            return Effects((Decision(signal, False, None, Decimal(0), ReasonCode.STALE_SIGNAL, {}),))
        now = self.clock()
        opened: tuple[str, ...] = ()
        paper_id = paper_account_id(signal.strategy_id)
        if self.shadow and paper_id not in self.book.accounts:
            self.book.open_account(paper_id, PAPER_CAPITAL, max_leverage=PAPER_LEVERAGE)
            opened = (paper_id,)
        states = self._states(now)
        sizing = self._instrument_terms(signal.symbol, self.terms.get(signal.strategy_id, Sizing()))
        multiplier = self.multipliers.get(signal.strategy_id, Decimal(1))
        # the strategy's weight scales its size; TradePicker limits and risk checks still apply
        weighted = signal if multiplier == 1 else replace(signal, size_hint=signal.size_hint * float(multiplier))
        decision = decide(weighted, [a for a in states if not is_shadow(a.account_id)], sizing, self.book.risk)
        # on the signal as received (not the weighted copy it was sized on); built, not replace()d: per decision
        decision = Decision(signal, decision.accepted, decision.account_id, decision.qty, decision.code,
                            {**decision.inputs, "size_multiplier": str(multiplier)}, decision.blocked_accounts,
                            decision.terms)
        decisions = [decision]
        if self.shadow:  # the paper account has no open-symbol cap
            paper = [replace(a, max_open_symbols=PAPER_OPEN_SYMBOLS) for a in states if a.account_id == paper_id]
            decisions.append(replace(decide(signal, paper, sizing, self.book.risk), shadow=True))
        return self._apply(Effects(tuple(decisions), decision.blocked_accounts, opened), now)

    def decide_manual(self, signal: Signal, account_id: str, terms: Sizing, manual: dict[str, object]) -> Effects:
        if self.is_stale(signal):
            return Effects((Decision(signal, False, account_id, Decimal(0), ReasonCode.STALE_SIGNAL,
                                     {"manual": manual}),))
        now = self.clock()
        decision = decide(signal, [a for a in self._states(now) if a.account_id == account_id],
                          self._instrument_terms(signal.symbol, terms), self.book.risk)
        return self._apply(Effects((replace(decision, inputs={**decision.inputs, "manual": manual}),),
                                   decision.blocked_accounts), now)

    @property
    def monitoring(self) -> bool:
        """Whether some account has a post-trade check on."""
        return any(account.portfolio.monitored for account in self.book.accounts.values())

    def monitor(self, source: str) -> list[tuple]:
        """Post-trade (docs/risk.md): a risk event row (RISK_EVENT_COLUMNS) for each breach
        that began since the last look: a margin call (CRITICAL), VaR or a sector above its
        limit after market moves (WARNING). A breach is raised again only after it ended."""
        now = self.clock()
        rows: list[tuple] = []
        for account_id, account in self.book.accounts.items():
            if not account.portfolio.monitored:
                account.breaches.clear()
                continue
            found = {b.key: b for b in breaches(self.book.state(account_id, now), self.book.risk)}
            for key in sorted(found.keys() - account.breaches):
                breach = found[key]
                rows.append((f"{key}:{account_id}:{now.isoformat()}", account_id, None, str(breach.rule),
                             breach.severity, breach.message, now, source))
            account.breaches = set(found)
        return rows

    def _apply(self, effects: Effects, now: datetime) -> Effects:
        for account_id in effects.blocked:
            self.book.set_status(account_id, "BLOCKED")
        for d in effects.decisions:
            if d.accepted:
                self.book.on_accepted(d.client_order_id, d.account_id, d.signal.strategy_id, d.signal.symbol,
                                      d.signal.action, d.qty, d.signal.ref_price or Decimal(0), now)
        return effects


def sizing_from_params(params: dict | None) -> Sizing:
    """A strategy's terms from its strategy_config params."""
    params = params or {}
    defaults = Sizing()
    return Sizing(atr_multiple=Decimal(str(params.get("atr_multiple", defaults.atr_multiple))),
                  lot_size=Decimal(str(params.get("lot_size", defaults.lot_size))),
                  order_type=OrderType(params.get("order_type", defaults.order_type)),
                  time_in_force=TimeInForce(params.get("time_in_force", defaults.time_in_force)),
                  limit_offset_bps=Decimal(str(params.get("limit_offset_bps", defaults.limit_offset_bps))),
                  stop_offset_bps=Decimal(str(params.get("stop_offset_bps", defaults.stop_offset_bps))),
                  fixed_qty=Decimal(str(params["fixed_qty"])) if params.get("fixed_qty") else None)


def load_terms(conn: psycopg.Connection) -> tuple[dict[str, Sizing], dict[str, Decimal]]:
    """Every strategy's sizing and weight multiplier (a few rows, read per pass)."""
    terms = {strategy_id: sizing_from_params(params) for strategy_id, params in
             conn.execute("SELECT strategy_id, params FROM strategy_config").fetchall()}
    multipliers = {strategy_id: Decimal(str(m)) for strategy_id, m in conn.execute(
        "SELECT strategy_id, size_multiplier FROM strategy_weights_latest WHERE size_multiplier IS NOT NULL")}
    return terms, multipliers


def decision_rows(effects: Effects, now: datetime, gate_id: str) -> dict[str, list[tuple]]:
    """The rows one decision's effects append: NEW order events, decisions, risk events."""
    rows: dict[str, list[tuple]] = {"order_events": [], "trade_decisions": [], "risk_events": []}
    for account_id in effects.blocked:
        rows["risk_events"].append((
            f"drawdown:{account_id}:{now.isoformat()}", account_id, None, str(ReasonCode.DRAWDOWN_BREACHED),
            "CRITICAL", "equity fell below peak by more than max_drawdown_pct: account blocked", now, gate_id))
    for d in effects.decisions:
        signal, terms = d.signal, d.terms
        if d.accepted:
            limit_price, stop_price = terms.prices(signal.action, signal.ref_price)
            rows["order_events"].append((
                d.client_order_id, d.account_id, signal.strategy_id, signal.symbol, signal.action,
                str(terms.order_type), str(terms.time_in_force), d.qty, limit_price, stop_price,
                str(OrderStatus.NEW), Decimal(0), None, "", now, gate_id))
        rows["trade_decisions"].append((
            d.decision_id, signal.signal_id, signal.strategy_id, signal.symbol, signal.action, d.account_id,
            "ACCEPTED" if d.accepted else "REJECTED", None if d.code is None else str(d.code),
            d.qty if d.accepted else None, signal.ref_price, d.client_order_id, json.dumps(d.inputs, default=str),
            signal.signal_ts, now, gate_id))
    return rows


RISK_EVENT_COLUMNS = ("event_id", "account_id", "symbol", "rule", "severity", "message", "ts", "source")
ROW_COLUMNS = {"order_events": ORDER_EVENT_COLUMNS, "trade_decisions": DECISION_COLUMNS,
               "risk_events": RISK_EVENT_COLUMNS}


BUCKET_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)  # int_bars_multi_timeframe's date_bin origin


def last_minute_of_first_bar(since: datetime, bar: timedelta) -> datetime:
    """The last minute of the first `bar`-long bar starting at or after `since`. A symbol
    has a final bar starting at or after `since` only if it has a 1-minute bar from this
    minute on: a bar is final with all its minutes in (its last one among them) or once
    the symbol has a later bar. So the live read of a higher timeframe (live_since) skips
    the symbols whose newest minutes still belong to a bar already decided or not
    closed: on a steady feed (and the default max_signal_age), 2 of every 5 passes read
    no 5m bars at all."""
    first = BUCKET_ORIGIN + -((BUCKET_ORIGIN - since) // bar) * bar
    return first + bar - TIMEFRAMES["1m"]


class DecisionGate:
    """The live gate: decides each undecided signal once from its account book and
    appends the decision, its NEW order and any block in one transaction.

    The book is rebuilt from the views before the first decision (nothing is
    decided until it is), then followed through the change feeds, and
    reconciled against the views every `reconcile_every` of wall time."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, *, gate_id: str = "gate",
                 clock: Callable[[], datetime] = utc_now, max_signal_age: timedelta = timedelta(minutes=2),
                 shadow: bool = False, reconcile_every: timedelta = timedelta(minutes=1)) -> None:
        self.conn = conn
        self.settings = settings
        self.gate_id = gate_id
        self.clock = clock
        # a signal is acted on only while its bar is fresh: a gate started on
        # top of history, or catching up after an outage, must not trade the past
        self.max_signal_age = max_signal_age
        self.shadow = shadow
        self.reconcile_every = reconcile_every
        self.keeper = Gatekeeper(AccountBook(), clock=clock, max_signal_age=max_signal_age, shadow=shadow)
        self._follower: BookFollower | None = None
        self._next_reconcile = 0.0
        self._lock = threading.Lock()
        self._readers: ConnectionPool | None = None  # the timeframes' signal reads, side by side

    @property
    def book(self) -> AccountBook:
        return self.keeper.book

    @property
    def ready(self) -> bool:
        """True once the book has been rebuilt from the views."""
        return self._follower is not None

    def close(self) -> None:
        self._close_follower()
        if self._readers is not None:
            self._readers.close()
            self._readers = None

    def _close_follower(self) -> None:
        if self._follower is not None:
            self._follower.close()
            self._follower = None

    # -- the book ------------------------------------------------------------------------
    def _rebuild(self) -> None:
        self._close_follower()
        book = AccountBook()
        # feeds first: what arrives during the bootstrap read is seen twice and applied once
        follower = BookFollower(self.conn, self.settings, book, consumer=self.gate_id)
        bootstrap(self.conn, self.settings, book, self.clock())
        self.keeper.book = book
        self._follower = follower
        book_log.info("account book rebuilt from the views", extra={"accounts": len(book.accounts)})

    def sync(self) -> None:
        """Bring the book up to date (rebuilding it first if it was never built)."""
        if self._follower is None:
            self._rebuild()
            self.reconcile()
        else:
            self._follower.sync(self.clock())
            if time.monotonic() >= self._next_reconcile:
                self.reconcile()
        self.keeper.terms, self.keeper.multipliers = load_terms(self.conn)

    def reconcile(self) -> list[Mismatch]:
        """Book against views. A difference that survives a catch-up raises a CRITICAL
        risk event per account (BOOK_MISMATCH) and rebuilds the book from the views; an
        account still different after that takes no new risk until one agrees."""
        self._next_reconcile = time.monotonic() + self.reconcile_every.total_seconds()
        now = self.clock()
        found = reconcile(self.conn, self.settings, self.book, now)
        if found:  # a fill may have landed between the book's sync and the views' read
            self._follower.sync(now)
            found = reconcile(self.conn, self.settings, self.book, now)
        if not found:
            self.keeper.halted.clear()
            return []
        by_account: dict[str, list[Mismatch]] = {}
        for mismatch in found:
            by_account.setdefault(mismatch.account_id, []).append(mismatch)
        insert_rows(self.conn, "risk_events", RISK_EVENT_COLUMNS, [(
            f"book:{account_id}:{now.isoformat()}", account_id, None, str(ReasonCode.BOOK_MISMATCH), "CRITICAL",
            "account book differs from the views (" + "; ".join(m.describe() for m in items) + "): rebuilt",
            now, self.gate_id) for account_id, items in by_account.items()], batch_rows=100)
        book_log.error("account book differs from the views: rebuilding", extra={"accounts": sorted(by_account)})
        self._rebuild()
        self.keeper.halted = {m.account_id for m in reconcile(self.conn, self.settings, self.book, now)}
        return found

    # -- signals -------------------------------------------------------------------------
    def undecided_signals(self, limit: int = 1000) -> list[Signal]:
        """Undecided signals of fresh bars, oldest first. Each timeframe is read
        over its live window only: the newest live_warmup_bars bars of the
        symbols that have a fresh bar. Timeframes are read side by side, each on
        a connection of its own (the embedded engine computes a read on one core)."""
        now = self.clock()
        timeframes = [row[0] for row in self.conn.execute(
            "SELECT DISTINCT timeframe FROM strategy_config WHERE enabled ORDER BY timeframe").fetchall()]

        def read(conn: psycopg.Connection, timeframe: str) -> list[Signal]:
            bar = TIMEFRAMES[timeframe]
            since = now - self.max_signal_age - bar
            with read_scope(conn, self.settings, as_of=now, live_since=last_minute_of_first_bar(since, bar),
                            live_bars=self.settings.live_warmup_bars * (bar // TIMEFRAMES["1m"]) or None):
                rows = conn.execute(
                    "SELECT s.signal_id, s.strategy_id, s.symbol, s.timeframe, s.signal_ts, s.action, s.size_hint,"
                    " s.confidence, s.ref_price, s.atr_14 FROM strategy_signal_history s"
                    " LEFT JOIN trade_decisions d ON d.decision_id = s.signal_id"
                    " WHERE s.timeframe = %s AND s.signal_ts >= %s AND d.decision_id IS NULL"
                    " ORDER BY s.signal_ts, s.signal_id LIMIT %s", (timeframe, since, limit),
                    # planned once per connection (generic plans: engine.conninfo), not on each of
                    # the first passes: planning the signal chain costs about a third of reading it
                    prepare=True).fetchall()
            return [Signal(*row) for row in rows]

        if len(timeframes) > 1:
            # never starts a stopped embedded server: the daemon waits for it (it reconnects)
            self._readers = self._readers or ConnectionPool(self.settings, len(timeframes), start=False)
            by_timeframe = self._readers.map([lambda c, tf=tf: read(c, tf) for tf in timeframes])
        else:
            by_timeframe = [read(self.conn, tf) for tf in timeframes]
        signals = [signal for each in by_timeframe for signal in each]
        return sorted(signals, key=lambda s: (s.signal_ts, s.signal_id))[:limit]

    def count_stale(self) -> int:
        """Undecided signals on the newest live_warmup_bars bars of each symbol whose bar
        closed more than max_signal_age ago: never acted on (undecided_signals skips
        them), counted so a gate started on top of history can say why it decides none."""
        now = self.clock()
        stale = 0
        for (timeframe,) in self.conn.execute(
                "SELECT DISTINCT timeframe FROM strategy_config WHERE enabled ORDER BY timeframe").fetchall():
            bar = TIMEFRAMES[timeframe]
            with read_scope(self.conn, self.settings, as_of=now, live_since=datetime.min.replace(tzinfo=timezone.utc),
                            live_bars=self.settings.live_warmup_bars * (bar // TIMEFRAMES["1m"]) or None):
                [(count,)] = self.conn.execute(
                    "SELECT count(*) FROM strategy_signal_history s LEFT JOIN trade_decisions d"
                    " ON d.decision_id = s.signal_id WHERE s.timeframe = %s AND s.signal_ts < %s"
                    " AND d.decision_id IS NULL", (timeframe, now - self.max_signal_age - bar)).fetchall()
            stale += count
        return stale

    def run_once(self, limit: int = 1000) -> list[Decision]:
        """One pass: the book brought up to date once, then every pending manual order and
        undecided signal decided from it (each decision updates the book itself)."""
        requests = orders.pending_manual_orders(self.conn)
        signals = self.undecided_signals(limit)
        if not requests and not signals and not (self.ready and self.keeper.monitoring):
            return []
        with self._lock:
            self.sync()
            breached = self.keeper.monitor(self.gate_id)
            if breached:
                insert_rows(self.conn, "risk_events", RISK_EVENT_COLUMNS, breached, batch_rows=100)
            return ([self._decide_manual(request) for request in requests]
                    + [self._decide(signal) for signal in signals])

    def decide(self, signal: Signal) -> Decision:
        """Decide one signal; deciding it again returns the stored decision unchanged."""
        with self._lock:
            self.sync()
            return self._decide(signal)

    def _decide(self, signal: Signal) -> Decision:
        stored = self._stored(signal)
        return stored if stored is not None else self._write(self.keeper.decide(signal))

    def decide_manual(self, request: ManualOrder) -> Decision:
        """An operator's order for one account (tradeflow.trading.orders.request_manual_order):
        routed and risk-checked like a signal (a SELL closes at most the
        strategy's long), decided once under the request's decision_id.
        A request not decided within max_signal_age is STALE_SIGNAL."""
        with self._lock:
            self.sync()
            return self._decide_manual(request)

    def _decide_manual(self, request: ManualOrder) -> Decision:
        row = self.conn.execute("SELECT close FROM price_1m_history WHERE symbol = %s AND ts < %s"
                                " ORDER BY ts DESC, received_at LIMIT 1",
                                (request.symbol, request.requested_at)).fetchone()
        signal = Signal(signal_id=request.decision_id, strategy_id=request.strategy_id,
                        symbol=request.symbol, timeframe="1m", signal_ts=request.requested_at - TIMEFRAMES["1m"],
                        action=request.side, size_hint=1.0, confidence=1.0, ref_price=row[0] if row else None,
                        atr_14=None)
        terms = Sizing(order_type=request.order_type, time_in_force=request.time_in_force, fixed_qty=request.qty,
                       limit_price=request.limit_price, stop_price=request.stop_price)
        manual = {"request_id": request.request_id, "requested_by": request.requested_by, "reason": request.reason}
        stored = self._stored(signal)
        if stored is not None:
            return stored
        return self._write(self.keeper.decide_manual(signal, request.account_id, terms, manual))

    def _stored(self, signal: Signal) -> Decision | None:
        row = self.conn.execute(
            "SELECT outcome, account_id, qty, reject_code, inputs FROM trade_decisions WHERE decision_id = %s",
            (signal.signal_id,)).fetchone()
        if row is None:
            return None
        outcome, account_id, qty, code, inputs = row
        return Decision(signal, outcome == "ACCEPTED", account_id, qty or Decimal(0),
                        ReasonCode(code) if code else None, inputs)

    # -- writing -----------------------------------------------------------------------
    def _write(self, effects: Effects) -> Decision:
        """The decision, its NEW order, blocks and paper accounts: all or nothing, so a
        gate killed half-way leaves no order without its decision, or the reverse."""
        now = self.clock()
        with self.conn.transaction():
            for account_id in effects.opened_paper:
                if accounts.get(self.conn, account_id) is None:
                    accounts.add(self.conn, account_id, capital=PAPER_CAPITAL, max_leverage=PAPER_LEVERAGE)
            for account_id in effects.blocked:
                account = accounts.get(self.conn, account_id)
                if account is not None and account.status != "BLOCKED":
                    accounts.set_status(self.conn, account_id, "BLOCKED", updated_by=self.gate_id)
            for table, rows in decision_rows(effects, now, self.gate_id).items():
                if rows:
                    insert_rows(self.conn, table, ROW_COLUMNS[table], rows, batch_rows=1000)
                    crash_point(f"gate_{table}_written")
        crash_point("gate_committed")
        for decision in effects.decisions:
            log.info("signal %s %s", "accepted" if decision.accepted else "rejected", decision.signal.action,
                     extra={"signal_id": decision.signal.signal_id, "decision_id": decision.decision_id,
                            "order_id": decision.client_order_id, "account_id": decision.account_id,
                            "strategy_id": decision.signal.strategy_id, "symbol": decision.signal.symbol,
                            "code": None if decision.code is None else str(decision.code)})
        return effects.decisions[0]


__all__ = ["AccountState", "Decision", "DecisionGate", "Effects", "Gatekeeper", "Pending", "Signal", "Sizing",
           "check_risk", "decide", "decision_rows", "size_buy"]
