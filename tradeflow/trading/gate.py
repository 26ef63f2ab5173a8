"""The decision gate: TradePicker routing, sizing and pre-trade risk.

Views say what is true (positions, pending orders, equity, policy); whether a
signal becomes an order has to be decided once, in order, and never revised,
which no engine's views can do portably. So one small process reads the views,
decides each new signal, and appends the immutable decision (with the inputs
it saw) to trade_decisions, plus a NEW order event for an accepted one.

Decisions are serialized: one lock covers reading the state, deciding and
writing, so concurrent candidates can never jointly break a limit. Run one
gate per deployment.

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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable, Iterable

import psycopg

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
from tradeflow.engine import read_scope
from tradeflow.reasons import ReasonCode
from tradeflow.trading import accounts, orders
from tradeflow.trading.orders import ManualOrder
from tradeflow.writer import insert_rows

DECISION_COLUMNS = ("decision_id", "signal_id", "strategy_id", "symbol", "action", "account_id", "outcome",
                    "reject_code", "qty", "ref_price", "client_order_id", "inputs", "signal_ts", "decided_at",
                    "gate_id")
log = logging.getLogger("tradeflow.gate")
# account_risk_inputs as the gate reads it: every column but peak_equity (see DecisionGate._peak_equity)
RISK_INPUT_COLUMNS = ("account_id", "status", "kill_switch", "max_open_symbols", "allow_scale_in",
                      "sell_requires_long", "max_order_notional", "max_position_qty", "max_concentration_pct",
                      "max_drawdown_pct", "risk_per_trade_pct", "max_leverage", "reservation_ttl_seconds", "cash",
                      "equity", "initial_capital", "gross_exposure")
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


@dataclass(frozen=True, slots=True)
class Pending:
    strategy_id: str
    symbol: str
    action: str
    open_qty: Decimal
    ref_price: Decimal


@dataclass(frozen=True, slots=True)
class AccountState:
    account_id: str
    status: str
    kill_switch: bool
    max_open_symbols: int
    allow_scale_in: bool
    sell_requires_long: bool
    max_order_notional: Decimal | None
    max_position_qty: Decimal | None
    max_concentration_pct: Decimal | None
    max_drawdown_pct: Decimal | None
    risk_per_trade_pct: Decimal
    max_leverage: Decimal
    reservation_ttl_seconds: int
    cash: Decimal
    equity: Decimal
    peak_equity: Decimal
    gross_exposure: Decimal
    positions: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (strategy, symbol) -> net qty
    symbol_exposure: dict[str, Decimal] = field(default_factory=dict)       # symbol -> |market value|
    pending: tuple[Pending, ...] = ()
    last_accepted_at: datetime | None = None

    @property
    def open_symbols(self) -> set[str]:
        held = {symbol for (_, symbol), qty in self.positions.items() if qty != 0}
        return held | {p.symbol for p in self.pending if p.action == "BUY"}

    def holds(self, symbol: str) -> bool:
        return any(qty != 0 for (_, s), qty in self.positions.items() if s == symbol)

    def summary(self) -> dict[str, object]:
        """The inputs a decision saw, stored with it."""
        return {
            "account_id": self.account_id, "status": self.status, "kill_switch": self.kill_switch,
            "open_symbols": sorted(self.open_symbols), "pending_orders": len(self.pending),
            "equity": str(self.equity), "peak_equity": str(self.peak_equity), "cash": str(self.cash),
            "gross_exposure": str(self.gross_exposure), "max_open_symbols": self.max_open_symbols,
            "max_leverage": str(self.max_leverage),
        }


# a strategy's shadow account trades every signal, for unbiased scoring
PAPER_CAPITAL = Decimal(100_000)
PAPER_OPEN_SYMBOLS = 1_000_000


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


def check_risk(account: AccountState, symbol: str, qty: Decimal, price: Decimal) -> ReasonCode | None:
    """Pre-trade checks for a risk-adding BUY, in the order they are reported."""
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
    return None


def drawdown_breached(account: AccountState) -> bool:
    if account.max_drawdown_pct is None or account.peak_equity <= 0:
        return False
    return (account.peak_equity - account.equity) / account.peak_equity > account.max_drawdown_pct


def decide(signal: Signal, accounts_state: Iterable[AccountState], sizing: Sizing) -> Decision:
    """Pure routing + sizing + risk: the same inputs always give the same decision."""
    decision = _route(signal, list(accounts_state), sizing)
    return replace(decision, terms=sizing) if decision.accepted else decision


def _route(signal: Signal, states: list[AccountState], sizing: Sizing) -> Decision:
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
        code = ReasonCode.ZERO_SIZE if qty <= 0 else check_risk(account, signal.symbol, qty, signal.ref_price)
        if code is None:
            return Decision(signal, True, account.account_id, qty, None, {**inputs, "account": account.summary()},
                            tuple(blocked))
        first_failure = first_failure or (account, code)
    account, code = first_failure
    return Decision(signal, False, account.account_id, Decimal(0), code, {**inputs, "account": account.summary()},
                    tuple(blocked))


def _buy_candidates(symbol: str, active: list[AccountState]) -> list[AccountState]:
    def fairness(a: AccountState) -> tuple:
        # least loaded first; on ties the account chosen least recently (never chosen first)
        return (len(a.open_symbols), a.last_accepted_at is not None, a.last_accepted_at or datetime.min, a.account_id)

    fresh = [a for a in active if symbol not in a.open_symbols and len(a.open_symbols) < a.max_open_symbols]
    holders = [a for a in active if a.allow_scale_in and symbol in a.open_symbols]
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
    return Decision(signal, True, account.account_id, qty, None, {**inputs, "account": account.summary()})


class DecisionGate:
    """Reads the views, decides each undecided signal once, appends the decision."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, *, gate_id: str = "gate",
                 clock: Callable[[], datetime] = utc_now, max_signal_age: timedelta = timedelta(minutes=2),
                 shadow: bool = False) -> None:
        self.conn = conn
        # shadow: each signal is also decided for its strategy's paper account
        # (no open-symbol cap, unweighted), whose matches score the strategy
        self.shadow = shadow
        self.settings = settings
        self.gate_id = gate_id
        self.clock = clock
        # a signal is acted on only while its bar is fresh: a gate started on
        # top of history, or catching up after an outage, must not trade the past
        self.max_signal_age = max_signal_age
        self._lock = threading.Lock()

    def undecided_signals(self, limit: int = 1000) -> list[Signal]:
        """Undecided signals of fresh bars, oldest first. Each timeframe is read
        over its live window only: the newest live_warmup_bars bars of the
        symbols that have a fresh bar."""
        now = self.clock()
        signals: list[Signal] = []
        for (timeframe,) in self.conn.execute(
                "SELECT DISTINCT timeframe FROM strategy_config WHERE enabled ORDER BY timeframe").fetchall():
            bar = TIMEFRAMES[timeframe]
            since = now - self.max_signal_age - bar
            with read_scope(self.conn, self.settings, as_of=now, live_since=since,
                            live_bars=self.settings.live_warmup_bars * (bar // TIMEFRAMES["1m"]) or None):
                rows = self.conn.execute(
                    "SELECT s.signal_id, s.strategy_id, s.symbol, s.timeframe, s.signal_ts, s.action, s.size_hint,"
                    " s.confidence, s.ref_price, s.atr_14 FROM strategy_signal_history s"
                    " LEFT JOIN trade_decisions d ON d.decision_id = s.signal_id"
                    " WHERE s.timeframe = %s AND s.signal_ts >= %s AND d.decision_id IS NULL"
                    " ORDER BY s.signal_ts, s.signal_id LIMIT %s", (timeframe, since, limit)).fetchall()
            signals += [Signal(*row) for row in rows]
        return sorted(signals, key=lambda s: (s.signal_ts, s.signal_id))[:limit]

    def run_once(self, limit: int = 1000) -> list[Decision]:
        manual = [self.decide_manual(request) for request in orders.pending_manual_orders(self.conn)]
        return manual + self._run_signals(limit)

    def _run_signals(self, limit: int) -> list[Decision]:
        signals = self.undecided_signals(limit)
        stale = [s for s in signals if self._is_stale(s)]
        if stale:
            with self._lock:
                self._write_all([Decision(s, False, None, Decimal(0), ReasonCode.STALE_SIGNAL, {}) for s in stale])
        return [Decision(s, False, None, Decimal(0), ReasonCode.STALE_SIGNAL, {}) for s in stale] + [
            self.decide(signal) for signal in signals if not self._is_stale(signal)]

    def _is_stale(self, signal: Signal) -> bool:
        bar_close = signal.signal_ts + TIMEFRAMES.get(signal.timeframe, timedelta(minutes=1))
        return self.clock() - bar_close > self.max_signal_age

    def decide(self, signal: Signal) -> Decision:
        """Decide one signal; deciding it again returns the stored decision unchanged."""
        with self._lock:
            stored = self._stored(signal)
            if stored is not None:
                return stored
            if self._is_stale(signal):
                decision = Decision(signal, False, None, Decimal(0), ReasonCode.STALE_SIGNAL, {})
                self._write_all([decision])
                return decision
            paper_id = paper_account_id(signal.strategy_id)
            if self.shadow and accounts.get(self.conn, paper_id) is None:
                self._open_paper_account(paper_id)
            with read_scope(self.conn, self.settings, as_of=self.clock()):
                states = self._account_states()
                multiplier = self._size_multiplier(signal.strategy_id)
            sizing = self._sizing(signal.strategy_id)
            # the strategy's weight scales its size; TradePicker limits and risk checks still apply
            weighted = replace(signal, size_hint=signal.size_hint * float(multiplier))
            decision = decide(weighted, [a for a in states if not is_shadow(a.account_id)], sizing)
            decision = replace(decision, signal=signal, inputs={**decision.inputs, "size_multiplier": str(multiplier)})
            decisions = [decision]
            if self.shadow:  # the paper account has no open-symbol cap
                paper = [replace(a, max_open_symbols=PAPER_OPEN_SYMBOLS) for a in states if a.account_id == paper_id]
                decisions.append(replace(decide(signal, paper, sizing), shadow=True))
            self._write_all(decisions)
            return decision

    def decide_manual(self, request: ManualOrder) -> Decision:
        """An operator's order for one account (tradeflow.trading.orders.request_manual_order):
        routed and risk-checked like a signal (a SELL closes at most the
        strategy's long), decided once under the request's decision_id.
        A request not decided within max_signal_age is STALE_SIGNAL."""
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
        with self._lock:
            stored = self._stored(signal)
            if stored is not None:
                return stored
            if self._is_stale(signal):
                decision = Decision(signal, False, request.account_id, Decimal(0), ReasonCode.STALE_SIGNAL,
                                    {"manual": manual})
            else:
                with read_scope(self.conn, self.settings, as_of=self.clock()):
                    states = [a for a in self._account_states() if a.account_id == request.account_id]
                decision = decide(signal, states, terms)
                decision = replace(decision, inputs={**decision.inputs, "manual": manual})
            self._write_all([decision])
            return decision

    # -- reading the views -----------------------------------------------------
    def _stored(self, signal: Signal) -> Decision | None:
        row = self.conn.execute(
            "SELECT outcome, account_id, qty, reject_code, inputs FROM trade_decisions WHERE decision_id = %s",
            (signal.signal_id,)).fetchone()
        if row is None:
            return None
        outcome, account_id, qty, code, inputs = row
        return Decision(signal, outcome == "ACCEPTED", account_id, qty or Decimal(0),
                        ReasonCode(code) if code else None, inputs)

    def _sizing(self, strategy_id: str) -> Sizing:
        row = self.conn.execute("SELECT params FROM strategy_config WHERE strategy_id = %s", (strategy_id,)).fetchone()
        params = (row[0] if row else {}) or {}
        defaults = Sizing()
        return Sizing(atr_multiple=Decimal(str(params.get("atr_multiple", defaults.atr_multiple))),
                      lot_size=Decimal(str(params.get("lot_size", defaults.lot_size))),
                      order_type=OrderType(params.get("order_type", defaults.order_type)),
                      time_in_force=TimeInForce(params.get("time_in_force", defaults.time_in_force)),
                      limit_offset_bps=Decimal(str(params.get("limit_offset_bps", defaults.limit_offset_bps))),
                      stop_offset_bps=Decimal(str(params.get("stop_offset_bps", defaults.stop_offset_bps))),
                      fixed_qty=Decimal(str(params["fixed_qty"])) if params.get("fixed_qty") else None)

    def _size_multiplier(self, strategy_id: str) -> Decimal:
        row = self.conn.execute("SELECT size_multiplier FROM strategy_weights_latest WHERE strategy_id = %s",
                                (strategy_id,)).fetchone()
        return Decimal(str(row[0])) if row and row[0] is not None else Decimal(1)

    def _open_paper_account(self, account_id: str) -> None:
        """A strategy's shadow account: every signal gets an order, whatever the live accounts hold."""
        accounts.add(self.conn, account_id, capital=PAPER_CAPITAL, max_leverage=Decimal(100))

    def _account_states(self) -> list[AccountState]:
        now = self.clock()
        # every column but peak_equity: the view's peak is computed only where a drawdown limit needs it
        cur = self.conn.execute(f"SELECT {', '.join(RISK_INPUT_COLUMNS)} FROM account_risk_inputs ORDER BY account_id")
        raw = [dict(zip(RISK_INPUT_COLUMNS, row)) for row in cur.fetchall()]
        peaks = self._peak_equity(raw)
        for row in raw:
            row["peak_equity"] = peaks[row["account_id"]]
        positions: dict[str, dict[tuple[str, str], Decimal]] = {}
        exposure: dict[str, dict[str, Decimal]] = {}
        for account_id, strategy_id, symbol, net_qty, value in self.conn.execute(
                "SELECT account_id, strategy_id, symbol, net_qty, net_qty * current_price FROM unrealized_pnl_latest"):
            positions.setdefault(account_id, {})[(strategy_id, symbol)] = net_qty
            by_symbol = exposure.setdefault(account_id, {})
            by_symbol[symbol] = by_symbol.get(symbol, Decimal(0)) + abs(value or 0)
        pending: dict[str, list[Pending]] = {}
        for account_id, strategy_id, symbol, action, open_qty, ref_price, decided_at, ttl in self.conn.execute(
                "SELECT account_id, strategy_id, symbol, action, open_qty, ref_price, decided_at,"
                " reservation_ttl_seconds FROM int_pending_orders"):
            if decided_at + timedelta(seconds=ttl) > now:  # reservation still held
                pending.setdefault(account_id, []).append(Pending(strategy_id, symbol, action, open_qty, ref_price))
        last_accepted = dict(self.conn.execute(
            "SELECT account_id, max(decided_at) FROM trade_decisions WHERE outcome = 'ACCEPTED' GROUP BY account_id"
        ).fetchall())
        fields = AccountState.__dataclass_fields__
        return [AccountState(**{k: v for k, v in row.items() if k in fields and k not in
                                {"positions", "symbol_exposure", "pending", "last_accepted_at"}},
                             positions=positions.get(row["account_id"], {}),
                             symbol_exposure=exposure.get(row["account_id"], {}),
                             pending=tuple(pending.get(row["account_id"], ())),
                             last_accepted_at=last_accepted.get(row["account_id"]))
                for row in raw]

    def _peak_equity(self, accounts_: list[dict]) -> dict[str, Decimal]:
        """Peak equity as account_risk_inputs defines it, read for the accounts
        with a drawdown limit only (the one check that uses it): on the embedded
        engine it costs the account's whole equity history."""
        limited = [a["account_id"] for a in accounts_ if a["max_drawdown_pct"] is not None]
        seen = dict(self.conn.execute(
            "SELECT account_id, max(equity) FROM pnl_timeseries WHERE account_id = ANY(%s) GROUP BY account_id",
            (limited,)).fetchall()) if limited else {}
        return {a["account_id"]: max(seen.get(a["account_id"]) or a["equity"], a["initial_capital"], a["equity"])
                for a in accounts_}

    # -- writing -----------------------------------------------------------------
    def _write_all(self, decisions: list[Decision]) -> None:
        now = self.clock()
        for decision in decisions:
            for account_id in decision.blocked_accounts:
                self._block_for_drawdown(account_id, now)
        # the NEW order first: once a decision is visible its order terms are too
        for decision in decisions:
            if decision.accepted:
                self._write_new_order(decision, now)
        insert_rows(self.conn, "trade_decisions", DECISION_COLUMNS, [(
            d.decision_id, d.signal.signal_id, d.signal.strategy_id, d.signal.symbol, d.signal.action,
            d.account_id, "ACCEPTED" if d.accepted else "REJECTED",
            None if d.code is None else str(d.code), d.qty if d.accepted else None,
            d.signal.ref_price, d.client_order_id, json.dumps(d.inputs, default=str), d.signal.signal_ts,
            now, self.gate_id) for d in decisions], batch_rows=1000)
        for decision in decisions:
            log.info("signal %s %s", "accepted" if decision.accepted else "rejected", decision.signal.action,
                     extra={"signal_id": decision.signal.signal_id, "decision_id": decision.decision_id,
                            "order_id": decision.client_order_id, "account_id": decision.account_id,
                            "strategy_id": decision.signal.strategy_id, "symbol": decision.signal.symbol,
                            "code": None if decision.code is None else str(decision.code)})

    def _write_new_order(self, decision: Decision, now: datetime) -> None:
        signal, terms = decision.signal, decision.terms
        limit_price, stop_price = terms.prices(signal.action, signal.ref_price)
        insert_rows(self.conn, "order_events", ORDER_EVENT_COLUMNS, [(
            decision.client_order_id, decision.account_id, signal.strategy_id, signal.symbol, signal.action,
            str(terms.order_type), str(terms.time_in_force), decision.qty, limit_price, stop_price,
            str(OrderStatus.NEW), Decimal(0), None, "", now, self.gate_id)], batch_rows=1)

    def _block_for_drawdown(self, account_id: str, now: datetime) -> None:
        account = accounts.get(self.conn, account_id)
        if account is None or account.status == "BLOCKED":
            return
        accounts.set_status(self.conn, account_id, "BLOCKED", updated_by=self.gate_id)
        insert_rows(self.conn, "risk_events", ("event_id", "account_id", "symbol", "rule", "severity", "message",
                                               "ts", "source"), [(
            f"drawdown:{account_id}:{now.isoformat()}", account_id, None, str(ReasonCode.DRAWDOWN_BREACHED),
            "CRITICAL", "equity fell below peak by more than max_drawdown_pct: account blocked", now,
            self.gate_id)], batch_rows=1)


__all__ = ["AccountState", "Decision", "DecisionGate", "Pending", "Signal", "Sizing", "check_risk", "decide",
           "size_buy"]
