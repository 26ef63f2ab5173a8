"""A ccxt spot exchange behind the broker port (adapters/broker.py), through ccxt's
unified methods and structures; tested against a fake Binance (docs/venues.md).

submit   the order is looked up by our client order id first (Binance takes a
         newClientOrderId again once the earlier order with it is FILLED, so a
         resend is recognised by asking, not by a duplicate error): fetch_order
         with ccxt's clientOrderId param where the exchange takes it, else its
         orders listed and matched (adapters.ccxt_exchanges.finds_by_client_order_id).
         Unknown -> create_order with params clientOrderId = our deterministic id
         (Binance: newClientOrderId); "Duplicate order sent." (a resend racing the
         first) -> the existing order.
cancel   cancel_order, then the order and its trades are read back: the
         CANCELLED, or the fill that won the race ("Unknown order sent." on an
         order already done), is what comes back. Nothing is invented.
reports  polled: every poll_interval, each open order's fetch_order and its
         trades (fetch_order_trades, else fetch_my_trades matched by order id).
         Trades are the fills (fill_id = "<market id>:<trade id>", cumulative
         quantity summed in trade order, a trade listed twice counted once); the
         order's status gives the end (canceled, expired, rejected), emitted only
         once the trades add up to its filled quantity so that no fill can arrive
         after it.
history  the same read, for orders placed before a restart; the symbol comes
         from symbol_of (the daemon reads it from the accepted orders).
malformed  a trade (or order) that cannot be read as an event (no quantity, a
         quantity or price not positive, ...) is set aside with the venue's raw
         record (poll_malformed) for the adapter to dead-letter; the order's
         other trades go on. An order the venue has finished whose trades then
         cannot add up is no longer polled (VenueEventLog.hold).

Quantities and prices are the venue's text (the exchange parses numbers with
str, not float) made Decimals. Errors: ccxt's NetworkError (429/418, timeouts,
dropped connections) and OperationFailed are BrokerError(retryable) for
ResilientBroker; bad keys are permanent; any other refusal of an order is a
REJECTED event with the venue's msg. A poll that fails is logged and tried
again at the next poll (the reports are still at the venue).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import ccxt

from adapters.broker import BrokerError, MalformedReport
from adapters.ccxt_exchanges import check_broker, finds_by_client_order_id, is_retryable, venue_message
from adapters.orders import Order, OrderEvent, OrderStatus, OrderType, TimeInForce
from adapters.venue_events import (
    UnreadableReport,
    VenueEventLog,
    VenueNotFound,
    VenueRefused,
    report_decimal,
    report_field,
)
from tradeflow.clock import utc_now

log = logging.getLogger("tradeflow.venue.ccxt")

# ccxt's unified order status -> our terminal status (open and closed come from the trades)
END_STATUS = {"canceled": OrderStatus.CANCELLED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}
DONE = {"closed", *END_STATUS}
# time in force on a resting order: spot has GTC and IOC, no DAY
TIME_IN_FORCE = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC"}


def _ts(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc)


class CcxtBroker:
    def __init__(self, exchange: ccxt.Exchange, *, poll_interval: float = 1.0,
                 symbol_of: Callable[[str], str | None] | None = None, clock: Callable[[], datetime] = utc_now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        check_broker(exchange)
        exchange.number = str  # amounts and prices as the venue wrote them: Decimals, never through a float
        self.exchange = exchange
        self.name = exchange.id
        self.venue = f"ccxt:{exchange.id}"
        self.finds_by = finds_by_client_order_id(exchange)
        self.poll_interval = poll_interval
        self.symbol_of = symbol_of
        self._clock = clock
        self._monotonic = monotonic
        self._log = VenueEventLog()
        self._symbols: dict[str, str] = {}   # client order id -> symbol, for orders placed before a restart
        self._polled_at = float("-inf")
        self.poll_failures = 0

    def close(self) -> None:
        """Nothing to stop: reports are polled on the caller's thread."""

    # -- the port -----------------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent:
        coid = order.client_order_id
        known = self._log.order(coid)
        if known is not None and known != order:
            raise BrokerError(f"client_order_id {coid} is already used by a different order", retryable=False)
        if (last := self._log.last(coid)) is not None:
            return last  # answered already: a resend creates nothing
        self._log.know(order)
        self._symbols[coid] = order.symbol
        if (refusal := _unsupported(order)) is not None:
            return self._reject(order, refusal)
        existing = self._find(coid)
        if existing is None:
            try:
                created = self._call(self.exchange.create_order, *_order_args(order))
            except VenueRefused as refusal:
                if "Duplicate order" not in refusal.message:
                    return self._reject(order, refusal.message)
                existing = self._find(coid)
                if existing is None:
                    raise BrokerError(f"{self.name} says {coid} exists but cannot find it", retryable=True) from None
            else:
                self._log.know(order, str(created["id"]))
                stamp = created.get("timestamp")
                self._emit(OrderEvent(client_order_id=coid, status=OrderStatus.ACK,
                                      event_ts=_ts(stamp) if stamp else self._clock(),
                                      broker_order_id=str(created["id"])))
                self._polled_at = float("-inf")  # look for its fills at the next poll
                return self._log.last(coid)
        if not _same_order(order, existing):
            raise BrokerError(f"client_order_id {coid} is already used by a different order", retryable=False)
        self._log.know(order, str(existing["id"]))
        self._emit_history(coid, existing)
        return self._log.last(coid)

    def cancel(self, client_order_id: str) -> OrderEvent:
        broker_id = self._broker_id(client_order_id)
        last = self._log.last(client_order_id)
        if last is not None and last.status.terminal:
            return last
        try:
            self._call(self.exchange.cancel_order, broker_id, self._symbol(client_order_id))
        except VenueRefused as refusal:  # "Unknown order sent.": done at the venue meanwhile (filled, expired)
            log.info("cancel of %s refused by %s: %s", client_order_id, self.name, refusal.message)
        self._emit_history(client_order_id)
        settled = self._log.last(client_order_id)
        if settled is None or not settled.status.terminal:
            raise BrokerError(f"cancel of {client_order_id}: {self.name} has not reported the end yet", retryable=True)
        return settled

    def poll_events(self) -> list[OrderEvent]:
        now = self._monotonic()
        if now - self._polled_at >= self.poll_interval:
            self._polled_at = now
            for coid in self._log.open_orders():
                if self._log.broker_order_id(coid) is None and self._log.order(coid) is not None:
                    continue  # submit has not had an answer yet
                if self._symbol(coid, required=False) is None:
                    continue  # claimed at start-up without a symbol: the venue cannot be asked (logged there)
                try:
                    self._emit_history(coid)
                except BrokerError as err:
                    # the venue keeps the reports: the next poll reads them
                    self.poll_failures += 1
                    log.warning("polling %s for %s failed (%s); trying again at the next poll",
                                self.name, coid, err)
                    if err.retryable:
                        break
        return self._log.drain()

    def poll_malformed(self) -> list[MalformedReport]:
        return self._log.drain_malformed()

    def order_history(self, client_order_ids: list[str]) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for coid in client_order_ids:
            self._log.claim(coid)
            if self._symbol(coid, required=False) is None:
                log.warning("order %s: its symbol is unknown, %s cannot be asked for it", coid, self.name)
                continue
            events += self._history(coid)
        return events

    # -- reading the venue ------------------------------------------------------------------
    def _symbol(self, client_order_id: str, required: bool = True) -> str | None:
        symbol = self._symbols.get(client_order_id)
        if symbol is None and self.symbol_of is not None:
            symbol = self.symbol_of(client_order_id)
            if symbol is not None:
                self._symbols[client_order_id] = symbol
        if symbol is None and required:
            raise BrokerError(f"unknown client_order_id {client_order_id}", retryable=False)
        return symbol

    def _broker_id(self, client_order_id: str) -> str:
        broker_id = self._log.broker_order_id(client_order_id)
        if broker_id is None:  # placed before a restart: learn the order and its history first
            body = self._find(client_order_id)
            if body is None:
                raise BrokerError(f"unknown client_order_id {client_order_id}", retryable=False)
            broker_id = str(body["id"])
            self._log.claim(client_order_id)
            self._emit_history(client_order_id, body)
        return broker_id

    def _find(self, client_order_id: str) -> dict | None:
        """The order with our client order id, as the venue has it now; None if it has none."""
        symbol = self._symbol(client_order_id)
        if self.finds_by == "fetchOrder":
            try:
                return self._call(self.exchange.fetch_order, None, symbol, {"clientOrderId": client_order_id})
            except VenueNotFound:
                return None
        if self.finds_by == "fetchOrders":
            orders = self._call(self.exchange.fetch_orders, symbol)
        else:
            orders = (self._call(self.exchange.fetch_open_orders, symbol)
                      + self._call(self.exchange.fetch_closed_orders, symbol))
        found = [o for o in orders if o.get("clientOrderId") == client_order_id]
        return found[-1] if found else None

    def _fetch(self, client_order_id: str) -> dict | None:
        broker_id = self._log.broker_order_id(client_order_id)
        if broker_id is None:
            return self._find(client_order_id)
        return self._call(self.exchange.fetch_order, broker_id, self._symbol(client_order_id))

    def _emit_history(self, client_order_id: str, body: dict | None = None) -> None:
        for event in self._history(client_order_id, body):
            self._emit(event)

    def _history(self, client_order_id: str, body: dict | None = None) -> list[OrderEvent]:
        """The order's steps as the venue has them now: ACK, a PARTIAL/FILLED per trade, its end."""
        body = body or self._fetch(client_order_id)
        if body is None:
            return []
        try:
            broker_id = str(report_field(body, "id"))
            status = report_field(body, "status")
            qty = report_decimal(body, "amount", positive=True)
            executed = report_decimal(body, "filled")
        except UnreadableReport as err:
            self._log.malformed(MalformedReport(self.venue, _raw(body), err.field, err.reason))
            self._log.hold(client_order_id)
            return []
        base = {"client_order_id": client_order_id, "broker_order_id": broker_id}
        if status == "rejected":
            return [OrderEvent(**base, status=OrderStatus.REJECTED, event_ts=self._stamp(body, "lastUpdateTimestamp"),
                               reason=f"{self.name}: rejected")]
        events = [OrderEvent(**base, status=OrderStatus.ACK, event_ts=self._stamp(body, "timestamp"))]
        cum = Decimal(0)
        malformed = False
        market = self.exchange.market(self._symbol(client_order_id))
        for trade in self._trades(broker_id, client_order_id, body) if executed > 0 else []:
            try:
                fill_qty = report_decimal(trade, "amount", positive=True)
                price = report_decimal(trade, "price", positive=True)
                fill = OrderEvent(**base, status=OrderStatus.FILLED if cum + fill_qty == qty else OrderStatus.PARTIAL,
                                  event_ts=_report_ts(trade, "timestamp"), filled_qty=cum + fill_qty,
                                  last_fill_qty=fill_qty, last_fill_price=price, fee=_fee(trade, market, price),
                                  fill_id=f"{market['id']}:{report_field(trade, 'id')}")
            except UnreadableReport as err:
                self._log.malformed(MalformedReport(self.venue, _raw(trade), err.field, err.reason))
                malformed = True
                continue
            cum += fill_qty
            events.append(fill)
        end = END_STATUS.get(status)
        if end is not None and cum == executed:
            events.append(OrderEvent(**base, status=end, event_ts=self._stamp(body, "lastUpdateTimestamp"),
                                     filled_qty=cum, reason=f"{self.name}: {status}"))
        elif malformed and status in DONE and cum != executed:
            self._log.hold(client_order_id)  # its trades will never add up: asking again reads the same ones
        return events

    def _trades(self, broker_id: str, client_order_id: str, body: dict) -> list[dict]:
        """The order's trades, each once, in the order they happened."""
        symbol = self._symbol(client_order_id)
        if self.exchange.has.get("fetchOrderTrades"):
            trades = self._call(self.exchange.fetch_order_trades, broker_id, symbol)
        else:
            trades = [t for t in self._call(self.exchange.fetch_my_trades, symbol, body.get("timestamp"))
                      if str(t.get("order")) == broker_id]
        unique = {str(t.get("id")): t for t in trades}  # a trade listed twice is one trade
        return sorted(unique.values(), key=lambda t: (t.get("timestamp") or 0, len(str(t.get("id"))), str(t.get("id"))))

    def _stamp(self, body: dict, key: str) -> datetime:
        ms = body.get(key) or body.get("timestamp")
        return _ts(ms) if ms else self._clock()

    def _emit(self, event: OrderEvent) -> None:
        self._log.emit(event)

    def _reject(self, order: Order, message: str) -> OrderEvent:
        event = OrderEvent(client_order_id=order.client_order_id, status=OrderStatus.REJECTED, event_ts=self._clock(),
                           reason=f"{self.name}: {message}")
        self._emit(event)
        return event

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except ccxt.AuthenticationError:
            raise BrokerError(f"{self.name} refused the credentials", retryable=False) from None
        except ccxt.OrderNotFound as err:
            raise VenueNotFound(venue_message(err)) from None
        except ccxt.BaseError as err:
            if is_retryable(err):
                raise BrokerError(f"{self.name} busy or unreachable: {venue_message(err)}", retryable=True) from None
            raise VenueRefused(venue_message(err)) from None


def _fee(trade: dict, market: dict, price: Decimal) -> Decimal:
    """The fee in the quote currency: as paid in quote, times the price if paid in base;
    a third asset (BNB) has no price here and counts as 0 (docs/venues.md)."""
    fee = trade.get("fee") or {}
    if fee.get("cost") is None:
        return Decimal(0)
    cost = report_decimal(fee, "cost", "fee.")
    if fee.get("currency") == market["quote"]:
        return cost
    if fee.get("currency") == market["base"]:
        return cost * price
    return Decimal(0)


def _report_ts(record: dict, key: str) -> datetime:
    value = report_field(record, key)
    try:
        return _ts(value)
    except (TypeError, ValueError, OverflowError, OSError):
        raise UnreadableReport(key, f"not a time in milliseconds: {str(value)[:40]!r}") from None


def _raw(record: dict) -> dict:
    """The venue's own record behind a ccxt structure (its "info"), the payload of a dead letter."""
    info = record.get("info")
    return info if isinstance(info, dict) else record


def _unsupported(order: Order) -> str | None:
    if order.order_type is not OrderType.MARKET and order.time_in_force not in TIME_IN_FORCE:
        return f"time in force {order.time_in_force} is not supported on spot (GTC or IOC)"
    return None


def _order_args(order: Order) -> tuple:
    """create_order's arguments: MARKET; LIMIT with its time in force; STOP with ccxt's triggerPrice (Binance:
    STOP_LOSS, a market order once the stop price trades). Decimals as strings."""
    params: dict[str, Any] = {"clientOrderId": order.client_order_id}
    price = None
    if order.order_type is OrderType.LIMIT:
        price = str(order.limit_price)
        params["timeInForce"] = TIME_IN_FORCE[order.time_in_force]
    kind = "limit" if order.order_type is OrderType.LIMIT else "market"
    if order.order_type is OrderType.STOP:
        params["triggerPrice"] = str(order.stop_price)
    return order.symbol, kind, order.side.lower(), str(order.qty), price, params


def _same_order(order: Order, body: dict) -> bool:
    return (body.get("symbol") == order.symbol and body.get("side") == order.side.lower()
            and body.get("amount") is not None and Decimal(str(body["amount"])) == order.qty)
