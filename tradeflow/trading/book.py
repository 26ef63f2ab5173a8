"""The account book: the gate's hot state, in plain Python, no SQL inside.

The seed's TradePicker and risk guard decide from state they keep in memory,
fed by position and fill changes and rehydrated from the durable tables at
start-up. This is that state. Per account: policy, cash, positions per
(strategy, symbol) with FIFO lots and average cost, the last mark per symbol,
equity and its peak, working orders with their unfilled remainder, and the
last accepted time. Events are applied in event-time order by the caller
(the live gate from the change feeds, the backtest from its own loop); the
book hands `decide` the AccountState it needs.

Conventions are the views' (docs/positions.md), one definition each:
- cash = initial capital - sum(signed_qty * fill_price) - fees;
- a mark is the last close at or before now; before a symbol's first close,
  its positions count at the signed notional of the account's fills in it;
- equity = cash + sum(net_qty * mark); gross exposure = sum(|net_qty * mark|)
  per (strategy, symbol);
- peak equity = the highest equity at any bar close while the account held
  something, never below the initial capital or the current equity
  (account_risk_inputs over pnl_timeseries);
- FIFO realized P&L is exact: a fill's fee is spread over its units, a match
  carries both fills' shares (trade_match_history); average cost follows
  int_average_cost_parts (NautilusTrader's convention);
- pending exposure is the unfilled remainder of every order not terminal
  (NEW, ACK, PARTIAL), whatever its age; the reservation TTL releases only an
  order never acknowledged (int_pending_orders).
"""
from __future__ import annotations

import bisect
import operator
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import Iterable, Mapping

from adapters.orders import OrderStatus
from tradeflow.trading.risk import NO_LIMITS, MarketRisk, PortfolioLimits

ZERO = Decimal(0)
PNL_METHODS = ("fifo", "average_cost")  # the views' pnl_method var
# stg_account_policy's defaults for a field no version has set
POLICY_DEFAULTS: dict[str, object] = {
    "max_open_symbols": 3, "allow_scale_in": False, "sell_requires_long": True, "max_order_notional": None,
    "max_position_qty": None, "max_concentration_pct": None, "max_drawdown_pct": None,
    "risk_per_trade_pct": Decimal("0.01"), "kill_switch": False, "reservation_ttl_seconds": 300,
    "max_sector_exposure_pct": None, "max_correlated_exposure_pct": None, "correlation_threshold": Decimal("0.7"),
    "max_var_pct": None, "var_confidence": Decimal("0.95"), "margin_check": False,
}
ACKNOWLEDGED = {OrderStatus.ACK, OrderStatus.PARTIAL}
_PORTFOLIO_LIMITS = ("max_sector_exposure_pct", "max_correlated_exposure_pct", "correlation_threshold", "max_var_pct",
                     "var_confidence")


class BookError(ValueError):
    """An event the book cannot apply (unknown account, malformed fill); the message names the field."""


@dataclass(frozen=True, slots=True)
class Pending:
    """A working order's reservation: its unfilled remainder at the decision's reference price."""
    strategy_id: str
    symbol: str
    action: str
    open_qty: Decimal
    ref_price: Decimal


@dataclass(frozen=True, slots=True)
class AccountState:
    """What a decision reads about one account. From the book, positions and
    symbol_exposure are read-only views of its maps, valid until its next event."""
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
    positions: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)  # (strategy, symbol) -> non-zero net qty
    symbol_exposure: Mapping[str, Decimal] = field(default_factory=dict)       # symbol -> |market value|
    pending: tuple[Pending, ...] = ()
    last_accepted_at: datetime | None = None
    # the portfolio checks' inputs (tradeflow.trading.risk)
    market_value: Mapping[str, Decimal] = field(default_factory=dict)         # symbol -> sum(net_qty * mark)
    portfolio: PortfolioLimits = NO_LIMITS
    valuation: int = 0                        # changes whenever market_value does
    held_symbols: Mapping[str, object] = field(default_factory=dict)  # the symbols of `positions`, as keys

    @property
    def open_symbols(self) -> set[str]:
        return set(self.held_symbols).union(p.symbol for p in self.pending if p.action == "BUY")

    def summary(self) -> dict[str, object]:
        """The inputs a decision saw, stored with it."""
        return {
            "account_id": self.account_id, "status": self.status, "kill_switch": self.kill_switch,
            "open_symbols": sorted(self.open_symbols), "pending_orders": len(self.pending),
            "equity": str(self.equity), "peak_equity": str(self.peak_equity), "cash": str(self.cash),
            "gross_exposure": str(self.gross_exposure), "max_open_symbols": self.max_open_symbols,
            "max_leverage": str(self.max_leverage),
        }


@dataclass(frozen=True, slots=True)
class BookFill:
    """One fill as the book applies it (exec_report_history's columns that matter)."""
    account_id: str
    strategy_id: str
    symbol: str
    order_id: str
    fill_id: str
    side: str
    qty: Decimal
    price: Decimal
    fee: Decimal
    exec_ts: datetime

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.side == "BUY" else -self.qty

    @property
    def sort_key(self) -> tuple:
        # the views apply a key's fills in (exec_ts, order_id, fill_id) order
        return (self.exec_ts, self.order_id, self.fill_id)


@dataclass(frozen=True, slots=True)
class _Lot:
    """Immutable, so a snapshot of the open lots is a shallow copy."""
    qty: Decimal            # remaining units, positive
    price: Decimal
    fee_per_unit: Decimal


class Position:
    """One (strategy, symbol) of an account: net quantity, FIFO lots, average cost, realized P&L.

    Fills usually arrive in order and are applied incrementally. Several fills
    stamped at one instant may arrive in any order (their order ids decide it):
    the state before that instant is kept, so one of them arriving late costs a
    replay of that instant's fills only. A fill older than that replays the
    key's fills in order."""

    __slots__ = ("fills", "net_qty", "lots", "long", "realized_gross", "realized_fees", "avg_price", "avg_fee",
                 "avg_realized_gross", "avg_realized_fees", "_instant_start", "_before_instant")

    def __init__(self) -> None:
        self.fills: list[BookFill] = []
        self._reset()

    def _reset(self) -> None:
        self.net_qty = ZERO
        self.lots: deque[_Lot] = deque()
        self.long = True              # the side of the open lots
        self.realized_gross = ZERO
        self.realized_fees = ZERO
        self.avg_price = ZERO
        self.avg_fee = ZERO           # open fees per unit (average cost)
        self.avg_realized_gross = ZERO
        self.avg_realized_fees = ZERO
        self._instant_start = 0       # index in fills of the newest instant's first fill
        self._before_instant = self._snapshot()

    _SCALARS = ("net_qty", "long", "realized_gross", "realized_fees", "avg_price", "avg_fee", "avg_realized_gross",
                "avg_realized_fees")
    _scalars_of = staticmethod(operator.attrgetter(*_SCALARS))

    def _snapshot(self) -> tuple:
        return self._scalars_of(self), tuple(self.lots)

    def _restore(self, snapshot: tuple) -> None:
        scalars, lots = snapshot
        for name, value in zip(self._SCALARS, scalars):
            setattr(self, name, value)
        self.lots = deque(lots)

    def add(self, fill: BookFill) -> None:
        if not self.fills or fill.sort_key >= self.fills[-1].sort_key:
            if not self.fills or fill.exec_ts > self.fills[-1].exec_ts:  # a new instant begins
                self._instant_start, self._before_instant = len(self.fills), self._snapshot()
            self.fills.append(fill)
            self._apply(fill)
            return
        bisect.insort(self.fills, fill, key=lambda f: f.sort_key)
        if fill.exec_ts == self.fills[-1].exec_ts and self._instant_start < len(self.fills) - 1:
            self._restore(self._before_instant)  # late within the newest instant: replay that instant
            replay = self.fills[self._instant_start:]
        else:
            self._reset()  # older than the newest instant: replay the key
            replay = self.fills
            self._instant_start = next(i for i in range(len(replay) - 1, -1, -1)
                                       if i == 0 or replay[i - 1].exec_ts < replay[-1].exec_ts)
        for index, each in enumerate(replay):
            if replay is self.fills and index == self._instant_start:
                self._before_instant = self._snapshot()
            self._apply(each)

    def _apply(self, fill: BookFill) -> None:
        self._apply_fifo(fill)
        self._apply_average_cost(fill)
        self.net_qty += fill.signed_qty

    def _apply_fifo(self, fill: BookFill) -> None:
        buying = fill.side == "BUY"
        fee_per_unit = fill.fee / fill.qty
        remaining = fill.qty
        while remaining > 0 and self.lots and self.long != buying:
            lot = self.lots[0]
            matched = min(lot.qty, remaining)
            buy_price, sell_price = (fill.price, lot.price) if buying else (lot.price, fill.price)
            self.realized_gross += (sell_price - buy_price) * matched
            self.realized_fees += matched * (lot.fee_per_unit + fee_per_unit)
            remaining -= matched
            if matched == lot.qty:
                self.lots.popleft()
            else:
                self.lots[0] = _Lot(lot.qty - matched, lot.price, lot.fee_per_unit)
        if remaining > 0:
            if not self.lots:
                self.long = buying
            self.lots.append(_Lot(remaining, fill.price, fee_per_unit))

    def _apply_average_cost(self, fill: BookFill) -> None:
        before = self.net_qty
        signed = fill.signed_qty
        closing = before != 0 and (before > 0) != (signed > 0)
        close_qty = min(fill.qty, abs(before)) if closing else ZERO
        if close_qty:
            direction = 1 if fill.side == "SELL" else -1  # a SELL closes a long, a BUY a short
            self.avg_realized_gross += close_qty * (fill.price - self.avg_price) * direction
            self.avg_realized_fees += fill.fee * close_qty / fill.qty + close_qty * self.avg_fee
            if close_qty == abs(before):
                self.avg_price = self.avg_fee = ZERO
        opened = fill.qty - close_qty
        if opened:
            held = abs(before) - close_qty
            fee_part = fill.fee * opened / fill.qty
            self.avg_price = (self.avg_price * held + fill.price * opened) / (held + opened)
            self.avg_fee = (self.avg_fee * held + fee_part) / (held + opened)

    def realized(self, method: str) -> tuple[Decimal, Decimal]:
        """(gross, fees) realized so far under the P&L method."""
        if method == "fifo":
            return self.realized_gross, self.realized_fees
        return self.avg_realized_gross, self.avg_realized_fees


@dataclass(slots=True)
class WorkingOrder:
    client_order_id: str
    account_id: str
    strategy_id: str
    symbol: str
    side: str
    qty: Decimal
    ref_price: Decimal
    decided_at: datetime
    filled: Decimal = ZERO
    acknowledged: bool = False

    @property
    def remainder(self) -> Decimal:
        return max(self.qty - self.filled, ZERO)


class Account:
    """One account's hot state. Mutated only through AccountBook, which keeps the
    valuation incremental: a fill or a bar revalues one symbol, never the account."""

    def __init__(self, account_id: str, initial_capital: Decimal, status: str, max_leverage: Decimal) -> None:
        self.account_id = account_id
        self.initial_capital = initial_capital
        self.status = status
        self.max_leverage = max_leverage
        self.policy: dict[str, object] = dict(POLICY_DEFAULTS)
        self.policy_fields = _policy_fields(self.policy)  # AccountState's policy part, built once per version
        self.cash = initial_capital
        self.positions: dict[tuple[str, str], Position] = {}
        self.net: dict[tuple[str, str], Decimal] = {}        # non-zero net quantity per (strategy, symbol)
        self.held_by_symbol: dict[str, set[str]] = {}     # symbol -> strategies with a non-zero position
        self.net_cost: dict[str, Decimal] = {}            # symbol -> sum(signed_qty * fill_price), every fill
        self.market_value: dict[str, Decimal] = {}        # symbol -> sum(net_qty * mark)
        self.exposure: dict[str, Decimal] = {}            # symbol -> sum(|net_qty * mark|)
        self.total_market_value = ZERO
        self.gross_exposure = ZERO
        self.peak_equity = initial_capital
        self.working: dict[str, WorkingOrder] = {}
        self.last_accepted_at: datetime | None = None
        self.breaches: set[str] = set()                   # post-trade breaches raised and not yet over
        self.portfolio = NO_LIMITS                        # the policy's portfolio checks
        self.market_value_view = MappingProxyType(self.market_value)
        self.held_view = MappingProxyType(self.held_by_symbol)
        self.valuation = 0                                # counts market_value's changes

    @property
    def equity(self) -> Decimal:
        return self.cash + self.total_market_value


def _policy_fields(policy: Mapping[str, object]) -> dict[str, object]:
    """The policy's part of an AccountState, typed."""
    return {"kill_switch": bool(policy["kill_switch"]), "max_open_symbols": int(policy["max_open_symbols"]),
            "allow_scale_in": bool(policy["allow_scale_in"]), "sell_requires_long": bool(policy["sell_requires_long"]),
            "max_order_notional": policy["max_order_notional"], "max_position_qty": policy["max_position_qty"],
            "max_concentration_pct": policy["max_concentration_pct"], "max_drawdown_pct": policy["max_drawdown_pct"],
            "risk_per_trade_pct": Decimal(policy["risk_per_trade_pct"]),
            "reservation_ttl_seconds": int(policy["reservation_ttl_seconds"])}


class AccountBook:
    """Every account's hot state; see the module docstring for the conventions."""

    def __init__(self, pnl_method: str = "fifo") -> None:
        if pnl_method not in PNL_METHODS:
            raise BookError(f"pnl_method: must be fifo or average_cost, got {pnl_method!r}")
        self.pnl_method = pnl_method
        self.risk = MarketRisk()                               # instruments, margin rates, daily returns
        self.accounts: dict[str, Account] = {}
        self.marks: dict[str, tuple[datetime, Decimal]] = {}   # symbol -> (bar ts, close)
        self._fill_ids: set[tuple[str, str]] = set()
        self._holders: dict[str, set[str]] = {}                # symbol -> accounts holding it
        self._order_of: dict[str, str] = {}                    # working client_order_id -> account

    # -- accounts and policy ---------------------------------------------------------
    def open_account(self, account_id: str, initial_capital: Decimal, *, status: str = "ACTIVE",
                     max_leverage: Decimal = Decimal(2)) -> None:
        if account_id in self.accounts:
            account = self.accounts[account_id]
            account.status, account.max_leverage = status, max_leverage
            return
        self.accounts[account_id] = Account(account_id, Decimal(initial_capital), status, Decimal(max_leverage))

    def set_status(self, account_id: str, status: str) -> None:
        self._account(account_id).status = status

    def set_policy(self, account_id: str, values: Mapping[str, object]) -> None:
        """A new policy version: fields it leaves unset take stg_account_policy's defaults."""
        unknown = set(values) - set(POLICY_DEFAULTS)
        if unknown:
            raise BookError(f"{sorted(unknown)[0]}: not a policy field")
        policy = {k: values.get(k) if values.get(k) is not None else default for k, default in POLICY_DEFAULTS.items()}
        for name in _PORTFOLIO_LIMITS:  # compared as exact decimals, whatever type the caller passed
            if policy[name] is not None and not isinstance(policy[name], Decimal):
                policy[name] = Decimal(str(policy[name]))
        account = self._account(account_id)
        account.policy, account.portfolio = policy, PortfolioLimits.from_policy(policy)
        account.policy_fields = _policy_fields(policy)

    def _account(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise BookError(f"account_id: {account_id} is not in the book") from None

    # -- market ----------------------------------------------------------------------
    def on_bars(self, bars: Iterable[tuple[str, datetime, Decimal]]) -> None:
        """Bars that closed together (one minute): marks move, then each holder's peak
        equity is taken once, as pnl_timeseries has one row per account and bar close."""
        touched: set[str] = set()
        for symbol, ts, close in bars:
            holders = self._set_mark(symbol, ts, close)
            if holders:
                touched.update(holders)
        for account_id in touched:
            account = self.accounts[account_id]
            account.peak_equity = max(account.peak_equity, account.equity)

    def on_bar(self, symbol: str, ts: datetime, close: Decimal) -> None:
        self.on_bars(((symbol, ts, close),))

    def set_mark(self, symbol: str, ts: datetime, close: Decimal) -> None:
        """A mark without an equity sample: a symbol about to be held, priced at its last close."""
        self._set_mark(symbol, ts, close)

    def _set_mark(self, symbol: str, ts: datetime, close: Decimal) -> set[str] | None:
        """The accounts revalued (holding the symbol), or None for a late bar."""
        last = self.marks.get(symbol)
        if last is not None and ts < last[0]:
            return None  # a late bar never moves the mark back
        self.marks[symbol] = (ts, close)
        holders = self._holders.get(symbol)
        if holders:
            for account_id in holders:
                self._revalue(self.accounts[account_id], symbol)
        return holders

    def held_symbols(self) -> list[str]:
        """Symbols some account holds: the only ones whose bars move an equity."""
        return [symbol for symbol, holders in self._holders.items() if holders]

    # -- orders ----------------------------------------------------------------------
    def on_accepted(self, client_order_id: str, account_id: str, strategy_id: str, symbol: str, side: str,
                    qty: Decimal, ref_price: Decimal, decided_at: datetime) -> None:
        """A NEW order: it reserves its whole quantity until fills or a terminal state release it."""
        account = self._account(account_id)
        if client_order_id in account.working:
            return
        account.working[client_order_id] = WorkingOrder(client_order_id, account_id, strategy_id, symbol, side,
                                                        Decimal(qty), Decimal(ref_price), decided_at)
        self._order_of[client_order_id] = account_id
        if account.last_accepted_at is None or decided_at > account.last_accepted_at:
            account.last_accepted_at = decided_at

    def on_order_status(self, client_order_id: str, status: OrderStatus | str) -> None:
        """An order event's status: ACK/PARTIAL mark it acknowledged, a terminal one releases it."""
        account_id = self._order_of.get(client_order_id)
        if account_id is None:
            return  # an order the book no longer holds (finished) or never reserved
        status = OrderStatus(status)
        order = self.accounts[account_id].working[client_order_id]
        if status.terminal:
            del self.accounts[account_id].working[client_order_id]
            del self._order_of[client_order_id]
        elif status in ACKNOWLEDGED:
            order.acknowledged = True

    # -- fills -----------------------------------------------------------------------
    def on_fill(self, fill: BookFill) -> bool:
        """Apply a fill once per (order_id, fill_id); returns False for a duplicate."""
        key = (fill.order_id, fill.fill_id)
        if key in self._fill_ids:
            return False
        if fill.qty <= 0:
            raise BookError(f"fill_qty: must be positive, got {fill.qty}")
        account = self._account(fill.account_id)
        self._fill_ids.add(key)
        account.cash += -fill.signed_qty * fill.price - fill.fee
        account.net_cost[fill.symbol] = account.net_cost.get(fill.symbol, ZERO) + fill.signed_qty * fill.price
        held = (fill.strategy_id, fill.symbol)
        position = account.positions.get(held)
        if position is None:
            position = account.positions[held] = Position()
        position.add(fill)
        strategies = account.held_by_symbol.setdefault(fill.symbol, set())
        if position.net_qty != 0:
            account.net[held] = position.net_qty
            strategies.add(fill.strategy_id)
        else:
            account.net.pop(held, None)
            strategies.discard(fill.strategy_id)
        if strategies:
            self._holders.setdefault(fill.symbol, set()).add(account.account_id)
        else:
            del account.held_by_symbol[fill.symbol]
            self._holders.get(fill.symbol, set()).discard(account.account_id)
        self._revalue(account, fill.symbol)
        order = account.working.get(fill.order_id)
        if order is not None:
            order.filled += fill.qty
            order.acknowledged = True  # a broker that fills has acknowledged
        return True

    # -- valuation ---------------------------------------------------------------------
    def _revalue(self, account: Account, symbol: str) -> None:
        """One symbol's market value and exposure in one account, from its positions and
        mark: the last close at or before now; before the symbol's first close, the
        signed notional of the account's fills in it (pnl_timeseries, portfolio_state)."""
        mark = self.marks.get(symbol)
        held = account.held_by_symbol.get(symbol)
        if not held:
            value = gross = ZERO
        elif mark is None:
            value = account.net_cost.get(symbol, ZERO)
            gross = abs(value)
        elif len(held) == 1:  # the common case, without the sums
            for strategy_id in held:
                value = account.positions[(strategy_id, symbol)].net_qty * mark[1]
            gross = abs(value)
        else:
            value = gross = ZERO
            for strategy_id in held:
                each = account.positions[(strategy_id, symbol)].net_qty * mark[1]
                value += each
                gross += abs(each)
        account.valuation += 1
        market_value, exposure = account.market_value, account.exposure
        account.total_market_value += value - market_value.get(symbol, ZERO)
        account.gross_exposure += gross - exposure.get(symbol, ZERO)
        if held:
            market_value[symbol], exposure[symbol] = value, gross
        else:
            market_value.pop(symbol, None)
            exposure.pop(symbol, None)

    # -- reading -----------------------------------------------------------------------
    def equity(self, account_id: str) -> Decimal:
        return self._account(account_id).equity

    def state(self, account_id: str, now: datetime) -> AccountState:
        """The account as a decision reads it: positions and exposure are read-only views
        of the book's own maps (valid until its next event), so a decision costs no copy."""
        account = self._account(account_id)
        fields = account.policy_fields
        pending = ()
        if account.working:
            ttl = timedelta(seconds=fields["reservation_ttl_seconds"])
            pending = tuple(Pending(o.strategy_id, o.symbol, o.side, o.remainder, o.ref_price)
                            for o in account.working.values()
                            if o.remainder > 0 and (o.acknowledged or o.decided_at + ttl > now))
        equity = account.equity
        return AccountState(
            account_id=account_id, status=account.status, max_leverage=account.max_leverage, **fields,
            cash=account.cash, equity=equity, peak_equity=max(account.peak_equity, account.initial_capital, equity),
            gross_exposure=account.gross_exposure, positions=MappingProxyType(account.net),
            symbol_exposure=MappingProxyType(account.exposure), pending=pending,
            last_accepted_at=account.last_accepted_at, market_value=account.market_value_view,
            portfolio=account.portfolio, valuation=account.valuation, held_symbols=account.held_view)

    def states(self, now: datetime) -> list[AccountState]:
        return [self.state(account_id, now) for account_id in sorted(self.accounts)]

    def working_order_ids(self) -> list[str]:
        return sorted(self._order_of)

    def ledger(self, account_id: str, method: str | None = None) -> dict[str, object]:
        """Totals the views also compute, for reconciliation: cash, realized P&L net of
        fees (under `method`, default the book's), and net quantity per (strategy, symbol)."""
        account = self._account(account_id)
        gross = fees = ZERO
        for position in account.positions.values():
            g, f = position.realized(method or self.pnl_method)
            gross += g
            fees += f
        return {"cash": account.cash, "realized_pnl": gross - fees, "positions": dict(account.net)}

    def ledgers(self) -> Ledgers:
        """Every account's ledger under both P&L methods, as of now."""
        return Ledgers(self.pnl_method, {account_id: {method: self.ledger(account_id, method) for method in PNL_METHODS}
                                         for account_id in self.accounts})


@dataclass(frozen=True)
class Ledgers:
    """A book's ledgers (AccountBook.ledger) taken at one instant, what reconciliation checks:
    small and picklable, where the book holds every fill (a sweep hands a run's ledgers to
    another process)."""
    pnl_method: str
    accounts: dict[str, dict[str, dict[str, object]]]  # account -> P&L method -> ledger

    def ledger(self, account_id: str, method: str | None = None) -> dict[str, object]:
        return self.accounts[account_id][method or self.pnl_method]


__all__ = ["AccountBook", "AccountState", "BookError", "BookFill", "Ledgers", "Pending", "POLICY_DEFAULTS",
           "WorkingOrder"]
