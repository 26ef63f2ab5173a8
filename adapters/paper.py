"""Paper broker: fills orders against the 1-minute bars it is fed (on_bar).

A bar is stamped with its open time, as in price_1m_history. An order trades
from the first bar whose ts >= its created_at rounded up to the minute, never
in the bar during which it was placed (that bar's open had passed, its close
was not known yet). Then, per bar of its symbol, in submission order:

- MARKET fills at the bar's open (fill_at="open", event stamped ts) or close
  ("close", stamped ts + 1 min), moved by slippage_bps against the order.
  fill_at="signal_close" fills a MARKET order whole when it is submitted, at
  its ref_price (the close of the bar that triggered it) plus slippage,
  stamped created_at: the bar-execution model of event-driven backtesters
  such as NautilusTrader, kept for comparisons with them (it trades at a
  price the order could not have reached live).
- LIMIT buy fills when low <= limit, at min(limit, open); a sell when high >=
  limit, at max(limit, open). No slippage: the limit is the price.
- STOP buy triggers when high >= stop and fills at max(stop, open) plus
  slippage (sell: low <= stop, min(stop, open) minus slippage). Once
  triggered it is a market order: a remainder fills like one on later bars.
- All orders together take at most max_participation x volume of a bar,
  rounded down to lot_size, first submitted first served; the rest carries
  over (PARTIAL events, cumulative filled_qty). Shadow accounts' orders
  (adapters.orders.is_shadow) trade against a share of their own, so they
  never take liquidity from real accounts. IOC: whatever is left after
  the first bar the order may trade in is CANCELLED. DAY: EXPIRED on the
  first bar (any symbol) at or after the close of its symbol's market session
  it was created in (or of the next session, created while the market is
  closed; tradeflow.ops.sessions: exchange calendars, crypto 24/7), or with
  session_end set, at that UTC time of the day it was created (None: midnight);
  a DAY order that could not trade before then is REJECTED at submit.
- Fees per order: max(min_fee, fee_per_share x qty + fee_bps x notional) on
  the cumulative fill, rounded up to fee_step (fee_rounding="up") or to the
  nearest step, halves away from zero ("nearest"); each fill carries the
  increase.
- Prices are rounded to tick_size against the order (buys up, sells down):
  the simulation never flatters a strategy. Limit and stop prices off the
  tick are REJECTED, as venues do. lot_size and tick_size are the config's,
  or a symbol's own from set_steps (its instruments row: the caller loads
  stg_instruments).

fill_id is f"{client_order_id}-{n}" (n-th fill of the order) and
broker_order_id f"paper-{client_order_id}": unique across restarts of the
book (a counter would start again at 1 in a restarted process) and the same
for the same order; timestamps come from bars and the injected clock. So the
same orders and bars give the same events, and a replay's fills are exact
re-sends that the exec ingester drops. Not thread-safe: one feed drives it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Callable, Literal, Mapping, NamedTuple

from adapters.broker import BrokerError, MalformedReport
from adapters.orders import Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce, is_shadow
from tradeflow.ops.sessions import SymbolCalendars
from tradeflow.reasons import ReasonCode

BAR = timedelta(minutes=1)
BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperConfig:
    fill_at: Literal["open", "close", "signal_close"] = "open"
    slippage_bps: Decimal = Decimal(0)
    fee_per_share: Decimal = Decimal(0)
    fee_bps: Decimal = Decimal(0)
    min_fee: Decimal = Decimal(0)
    fee_step: Decimal = Decimal("0.01")
    fee_rounding: Literal["up", "nearest"] = "up"
    max_participation: Decimal = Decimal("0.1")
    lot_size: Decimal = Decimal(1)
    tick_size: Decimal = Decimal("0.01")
    # "calendar": the close of the order's market session; a time: that UTC time of the day; None: midnight
    session_end: time | Literal["calendar"] | None = "calendar"

    def __post_init__(self) -> None:
        if self.fill_at not in ("open", "close", "signal_close"):
            raise ValueError(f"fill_at: 'open', 'close' or 'signal_close', got {self.fill_at!r}")
        if self.fee_rounding not in ("up", "nearest"):
            raise ValueError(f"fee_rounding: 'up' or 'nearest', got {self.fee_rounding!r}")
        for name in ("slippage_bps", "fee_per_share", "fee_bps", "min_fee", "fee_step", "max_participation",
                     "lot_size", "tick_size"):
            value = getattr(self, name)
            # A float would carry its binary error into every price and fee.
            if not isinstance(value, (Decimal, int)) or isinstance(value, bool):
                raise TypeError(f"{name}: a Decimal, got {value!r}")
            if value < 0:
                raise ValueError(f"{name}: must not be negative, got {value}")
        for name in ("fee_step", "lot_size", "tick_size"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name}: must be positive")
        if not (self.session_end is None or isinstance(self.session_end, time) or self.session_end == "calendar"):
            raise ValueError(f"session_end: 'calendar', a time or None, got {self.session_end!r}")
        if not 0 < self.max_participation <= 1:
            raise ValueError(f"max_participation: in (0, 1], got {self.max_participation}")


# The fill model backtests and the live paper adapter use unless told otherwise: the next bar's
# open, 2 bps slippage, $0.005 a share with a $1 minimum per order.
DEFAULT_FILL_MODEL = PaperConfig(fill_at="open", slippage_bps=Decimal(2), fee_per_share=Decimal("0.005"),
                                 min_fee=Decimal(1))
FILL_MODEL_FIELDS = tuple(f.name for f in fields(PaperConfig))


def fill_model(values: Mapping[str, object], base: PaperConfig = DEFAULT_FILL_MODEL) -> PaperConfig:
    """`base` with some fields set from text or numbers (a command line, a config file):
    amounts as exact Decimals, session_end as "calendar", HH:MM (UTC) or "none". Errors name the field."""
    changes: dict[str, object] = {}
    for name, value in values.items():
        if name not in FILL_MODEL_FIELDS:
            raise ValueError(f"{name}: not a fill model field (fields: {', '.join(FILL_MODEL_FIELDS)})")
        if name == "session_end":
            changes[name] = _session_end(value)
        elif name in ("fill_at", "fee_rounding"):
            changes[name] = str(value)
        else:
            try:
                number = Decimal(str(value))
            except ArithmeticError:
                number = Decimal("NaN")
            if not number.is_finite():
                raise ValueError(f"{name}: a number, got {value!r}")
            changes[name] = number
    return replace(base, **changes)


def _session_end(value: object) -> time | Literal["calendar"] | None:
    if value is None or isinstance(value, time):
        return value
    text = str(value).strip().lower()
    if text in ("", "none"):
        return None
    if text == "calendar":
        return "calendar"
    try:
        return time.fromisoformat(text)
    except ValueError:
        raise ValueError(f"session_end: calendar, HH:MM (UTC) or none, got {value!r}") from None


class _Bar(NamedTuple):
    ts: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(slots=True, kw_only=True)
class _State:
    """One order's book entry; its history is the events, this is only what the next fill needs."""
    order: Order
    last: OrderEvent | None = None
    broker_order_id: str | None = None
    tradable_from: datetime | None = None
    expires_at: datetime | None = None
    filled: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    fills: int = 0
    triggered: bool = False


def _step(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    # quantize keeps the step's exponent: 100 stays 100.00 at a 0.01 tick, not 1.00E+2.
    return ((value / step).to_integral_value(rounding) * step).quantize(step)


def _ceil_minute(ts: datetime) -> datetime:
    floor = ts.replace(second=0, microsecond=0)
    return floor if floor == ts else floor + BAR


class PaperBroker:
    """A Broker (adapters.broker) that simulates fills from bars; see the module docstring."""

    def __init__(self, config: PaperConfig, clock: Callable[[], datetime],
                 calendars: SymbolCalendars | None = None, *, retain_finished: bool = True) -> None:
        """retain_finished=False forgets an order once it is terminal (its state and
        history; its id stays known, so a reused id is still refused): memory bounded
        by the working orders, for a backtest's millions of orders, which never ask
        a finished order's history or cancel one."""
        self.config = config
        self._retain_finished = retain_finished
        self._finished: set[str] = set()  # ids of forgotten orders (retain_finished=False)
        self._clock = clock
        self.calendars = calendars or SymbolCalendars.from_env()
        self._orders: dict[str, _State] = {}
        self._live: dict[str, _State] = {}  # submission order: who is served first in a bar
        self._events: list[OrderEvent] = []
        self._history: dict[str, list[tuple[int, OrderEvent]]] = {}  # (emission number, event)
        self._emitted = 0
        self._steps: dict[str, tuple[Decimal, Decimal]] = {}  # symbol -> (lot_size, tick_size)

    def set_steps(self, steps: dict[str, tuple[Decimal, Decimal]]) -> None:
        """Per-symbol (lot_size, tick_size), from the instruments; other symbols take the config's."""
        self._steps = dict(steps)

    def _lot_size(self, symbol: str) -> Decimal:
        return self._steps[symbol][0] if symbol in self._steps else self.config.lot_size

    def _tick_size(self, symbol: str) -> Decimal:
        return self._steps[symbol][1] if symbol in self._steps else self.config.tick_size

    def submit(self, order: Order) -> OrderEvent:
        if order.client_order_id in self._finished:
            raise BrokerError(f"client_order_id {order.client_order_id} is already used by a finished order",
                              retryable=False)
        known = self._orders.get(order.client_order_id)
        if known is not None:
            if known.order != order:
                raise BrokerError(f"client_order_id {order.client_order_id} is already used by a different order",
                                  retryable=False)
            return known.last
        state = self._orders[order.client_order_id] = _State(order=order)
        if order.created_at.tzinfo is None:
            return self._emit(state, OrderStatus.REJECTED, self._clock(),
                              reason=f"{ReasonCode.NO_TIME_ZONE}: created_at has no time zone")
        state.tradable_from = _ceil_minute(order.created_at)
        if order.time_in_force is TimeInForce.DAY:
            state.expires_at = self._session_close(order)
        reason = self._refusal(state)
        if reason:
            return self._emit(state, OrderStatus.REJECTED, self._clock(), reason=reason)
        state.broker_order_id = f"paper-{order.client_order_id}"
        self._live[order.client_order_id] = state
        ack = self._emit(state, OrderStatus.ACK, self._clock())
        if self._fills_at_submit(order):
            price = self._slipped(order.symbol, order.ref_price, order.side is Side.BUY)
            self._fill(state, order.qty, price, order.created_at)
        return ack

    def restore(self, order: Order, last: OrderEvent, *, notional: Decimal, fees: Decimal, fills: int) -> None:
        """Take back a live order after a restart, as its recorded events left it
        (filled qty, cost and fees so far), without emitting anything: the paper
        book lives in the adapter's process, a real broker keeps its own."""
        state = _State(order=order, last=last, broker_order_id=last.broker_order_id, filled=last.filled_qty,
                       notional=notional, fees=fees, fills=fills,
                       tradable_from=_ceil_minute(order.created_at), triggered=last.filled_qty > 0)
        if order.time_in_force is TimeInForce.DAY:
            state.expires_at = self._session_close(order)
        self._orders[order.client_order_id] = state
        if not last.status.terminal:
            self._live[order.client_order_id] = state

    def cancel(self, client_order_id: str) -> OrderEvent:
        state = self._orders.get(client_order_id)
        if state is None:
            raise BrokerError(f"unknown client_order_id {client_order_id}", retryable=False)
        if state.last.status.terminal:
            return state.last
        return self._emit(state, OrderStatus.CANCELLED, self._clock(), reason="cancelled on request")

    @property
    def has_live_orders(self) -> bool:
        """Whether a bar can change anything: with no live order, on_bar is a no-op."""
        return bool(self._live)

    @property
    def live_symbols(self) -> set[str]:
        """The symbols whose bars can trade a live order."""
        return {state.order.symbol for state in self._live.values()}

    @property
    def open_orders(self) -> int:
        """Orders in the book that can still trade."""
        return len(self._live)

    def poll_events(self) -> list[OrderEvent]:
        events, self._events = self._events, []
        return events

    def poll_malformed(self) -> list[MalformedReport]:
        """None: the book builds its reports itself."""
        return []

    def order_history(self, client_order_ids: list[str]) -> list[OrderEvent]:
        """Every event of these orders since this book opened (a restored order's
        history starts at its restore), oldest first."""
        numbered = sorted(item for coid in set(client_order_ids) for item in self._history.get(coid, ()))
        return [event for _, event in numbered]

    def on_bar(self, symbol: str, ts: datetime, open: Decimal, high: Decimal, low: Decimal, close: Decimal,
               volume: Decimal) -> None:
        """Trade the live orders against one bar; the events wait for poll_events."""
        if ts.tzinfo is None:
            raise ValueError(f"bar ts {ts} has no time zone")
        bar = _Bar(ts, open, high, low, close)
        share = _step(self.config.max_participation * volume, self._lot_size(symbol), ROUND_FLOOR)
        capacity = {False: share, True: share}  # real accounts, shadow accounts
        for state in list(self._live.values()):
            order = state.order
            if state.expires_at is not None and ts >= state.expires_at:
                self._emit(state, OrderStatus.EXPIRED, state.expires_at, reason="DAY order: session end")
            elif order.symbol == symbol and ts >= state.tradable_from:
                pool = is_shadow(order.account_id)
                capacity[pool] -= self._trade(state, bar, capacity[pool])
                if order.time_in_force is TimeInForce.IOC and not state.last.status.terminal:
                    self._emit(state, OrderStatus.CANCELLED, ts + BAR, reason="IOC: remainder cancelled")

    def _session_close(self, order: Order) -> datetime:
        created_at = order.created_at
        if self.config.session_end == "calendar":
            return self.calendars.of(order.symbol).session_close(created_at)
        day = created_at.astimezone(UTC).date()
        if self.config.session_end is None:
            return datetime.combine(day + timedelta(days=1), time(0), UTC)
        return datetime.combine(day, self.config.session_end, UTC)

    def _fills_at_submit(self, order: Order) -> bool:
        return self.config.fill_at == "signal_close" and order.order_type is OrderType.MARKET

    def _refusal(self, state: _State) -> str:
        order = state.order
        for name in ("limit_price", "stop_price"):
            price = getattr(order, name)
            tick = self._tick_size(order.symbol)
            if price is not None and (price <= 0 or price % tick):
                return f"{ReasonCode.PRICE_OFF_TICK}: {name} {price} is not a positive multiple of tick_size {tick}"
        fills_at_submit = self._fills_at_submit(order)
        if fills_at_submit and order.ref_price is None:
            return f"{ReasonCode.NO_REFERENCE_PRICE}: fill_at=signal_close needs the order's ref_price"
        if state.expires_at is not None and state.tradable_from >= state.expires_at and not fills_at_submit:
            return (f"{ReasonCode.SESSION_CLOSED}: DAY order created at {order.created_at} cannot trade before the"
                    f" session end {state.expires_at}")
        return ""

    def _trade(self, state: _State, bar: _Bar, capacity: Decimal) -> Decimal:
        """Fill what the bar allows; returns the quantity filled."""
        priced = self._price(state, bar)
        qty = min(state.order.qty - state.filled, capacity)
        if priced is None or qty <= 0:
            return Decimal(0)
        self._fill(state, qty, *priced)
        return qty

    def _fill(self, state: _State, qty: Decimal, price: Decimal, at: datetime) -> None:
        state.filled += qty
        state.notional += qty * price
        fee = self._fee(state.filled, state.notional) - state.fees
        state.fees += fee
        state.fills += 1
        status = OrderStatus.FILLED if state.filled == state.order.qty else OrderStatus.PARTIAL
        self._emit(state, status, at, last_fill_qty=qty, last_fill_price=price, fee=fee,
                   fill_id=f"{state.order.client_order_id}-{state.fills}")

    def _price(self, state: _State, bar: _Bar) -> tuple[Decimal, datetime] | None:
        """The fill price and time in this bar, or None if the order does not trade in it."""
        order = state.order
        buy = order.side is Side.BUY
        if order.order_type is OrderType.LIMIT:
            limit = order.limit_price
            if not (bar.low <= limit if buy else bar.high >= limit):
                return None
            return self._tick(order.symbol, min(limit, bar.open) if buy else max(limit, bar.open), buy), bar.ts
        if order.order_type is OrderType.STOP and not state.triggered:
            stop = order.stop_price
            if not (bar.high >= stop if buy else bar.low <= stop):
                return None
            state.triggered = True
            return self._slipped(order.symbol, max(stop, bar.open) if buy else min(stop, bar.open), buy), bar.ts
        if self.config.fill_at == "open":
            return self._slipped(order.symbol, bar.open, buy), bar.ts
        return self._slipped(order.symbol, bar.close, buy), bar.ts + BAR

    def _slipped(self, symbol: str, price: Decimal, buy: bool) -> Decimal:
        slip = self.config.slippage_bps / BPS
        return self._tick(symbol, price * (1 + slip if buy else 1 - slip), buy)

    def _tick(self, symbol: str, price: Decimal, buy: bool) -> Decimal:
        return _step(price, self._tick_size(symbol), ROUND_CEILING if buy else ROUND_FLOOR)

    def _fee(self, qty: Decimal, notional: Decimal) -> Decimal:
        """The whole order's fee so far: min_fee applies once per order, not per fill."""
        c = self.config
        return _step(max(c.min_fee, c.fee_per_share * qty + c.fee_bps * notional / BPS), c.fee_step,
                     ROUND_CEILING if c.fee_rounding == "up" else ROUND_HALF_UP)

    def _emit(self, state: _State, status: OrderStatus, at: datetime, **details: object) -> OrderEvent:
        event = OrderEvent(client_order_id=state.order.client_order_id, status=status, event_ts=at,
                           filled_qty=state.filled, broker_order_id=state.broker_order_id, **details)
        state.last = event
        self._events.append(event)
        self._emitted += 1
        if status.terminal:
            self._live.pop(event.client_order_id, None)
            if not self._retain_finished:
                self._orders.pop(event.client_order_id, None)
                self._history.pop(event.client_order_id, None)
                self._finished.add(event.client_order_id)
                return event
        self._history.setdefault(event.client_order_id, []).append((self._emitted, event))
        return event
