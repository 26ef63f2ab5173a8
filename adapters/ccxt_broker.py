"""A ccxt spot exchange (Binance first) behind the broker port (adapters/broker.py).

submit   GET /api/v3/order?origClientOrderId first: Binance takes a newClientOrderId
         again once the earlier order with it is FILLED, so a resend is recognised
         by asking, not by a duplicate error. Unknown -> POST /api/v3/order with
         newClientOrderId = our deterministic id; "Duplicate order sent." (a resend
         racing the first) -> the existing order.
cancel   DELETE /api/v3/order, then the order and its trades are read back: the
         CANCELLED, or the fill that won the race ("Unknown order sent." on an
         order already done), is what comes back. Nothing is invented.
reports  polled: every poll_interval, each open order's GET /api/v3/order and its
         GET /api/v3/myTrades?orderId (Binance's spot user-data stream needs the
         signed websocket API, not built). Trades are the fills (fill_id =
         "<symbol id>:<trade id>", cumulative quantity summed in trade-id order,
         a trade listed twice counted once); the order's status gives the end
         (CANCELED, EXPIRED, EXPIRED_IN_MATCH, REJECTED), emitted only once the
         trades add up to its executedQty so that no fill can arrive after it.
history  the same read, for orders placed before a restart; Binance needs the
         symbol, from symbol_of (the daemon reads it from the accepted orders).

Quantities and prices go as decimal strings and come back from the raw
responses ("info"), never through floats. Errors: ccxt's NetworkError (429/418,
timeouts, dropped connections) and OperationFailed are BrokerError(retryable)
for ResilientBroker; bad keys are permanent; any other refusal of an order is a
REJECTED event with Binance's msg. A poll that fails is logged and tried again
at the next poll (the reports are still at the venue).
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
from adapters.ccxt_exchanges import is_retryable, venue_message
from adapters.orders import Order, OrderEvent, OrderStatus, OrderType, TimeInForce
from adapters.venue_events import VenueEventLog, VenueNotFound, VenueRefused
from tradeflow.clock import utc_now

log = logging.getLogger("tradeflow.venue.ccxt")

# Binance spot order status -> our terminal status (NEW, PARTIALLY_FILLED, FILLED come from the trades)
END_STATUS = {"CANCELED": OrderStatus.CANCELLED, "EXPIRED": OrderStatus.EXPIRED,
              "EXPIRED_IN_MATCH": OrderStatus.EXPIRED, "REJECTED": OrderStatus.REJECTED}
# time in force on a resting order: Binance spot has GTC, IOC and FOK, no DAY
TIME_IN_FORCE = {TimeInForce.GTC: "GTC", TimeInForce.IOC: "IOC"}


def _ts(ms: Any) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc)


class CcxtBroker:
    def __init__(self, exchange: ccxt.Exchange, *, poll_interval: float = 1.0,
                 symbol_of: Callable[[str], str | None] | None = None, clock: Callable[[], datetime] = utc_now,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.exchange = exchange
        self.name = exchange.id
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
        existing = self._fetch_order(coid)
        if existing is None:
            try:
                body = self._call(self.exchange.create_order, *_order_args(order))["info"]
            except VenueRefused as refusal:
                if "Duplicate order" not in refusal.message:
                    return self._reject(order, refusal.message)
                existing = self._fetch_order(coid)
                if existing is None:
                    raise BrokerError(f"{self.name} says {coid} exists but cannot find it", retryable=True) from None
            else:
                self._log.know(order, str(body["orderId"]))
                self._emit(OrderEvent(client_order_id=coid, status=OrderStatus.ACK,
                                      event_ts=_ts(body.get("transactTime") or body.get("workingTime")),
                                      broker_order_id=str(body["orderId"])))
                self._polled_at = float("-inf")  # look for its fills at the next poll
                return self._log.last(coid)
        if not _same_order(order, existing, self.exchange):
            raise BrokerError(f"client_order_id {coid} is already used by a different order", retryable=False)
        self._log.know(order, str(existing["orderId"]))
        for event in self._history(coid, existing):
            self._emit(event)
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
        for event in self._history(client_order_id):
            self._emit(event)
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
                    continue  # claimed at start-up without a symbol: Binance cannot be asked (logged there)
                try:
                    for event in self._history(coid):
                        self._emit(event)
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
            body = self._fetch_order(client_order_id)
            if body is None:
                raise BrokerError(f"unknown client_order_id {client_order_id}", retryable=False)
            broker_id = str(body["orderId"])
            self._log.claim(client_order_id)
            for event in self._history(client_order_id, body):
                self._emit(event)
        return broker_id

    def _fetch_order(self, client_order_id: str) -> dict | None:
        try:
            return self._call(self.exchange.fetch_order, None, self._symbol(client_order_id),
                              {"origClientOrderId": client_order_id})["info"]
        except VenueNotFound:
            return None

    def _history(self, client_order_id: str, body: dict | None = None) -> list[OrderEvent]:
        """The order's steps as the venue has them now: ACK, a PARTIAL/FILLED per trade, its end."""
        body = body or self._fetch_order(client_order_id)
        if body is None:
            return []
        broker_id = str(body["orderId"])
        status = body["status"]
        base = {"client_order_id": client_order_id, "broker_order_id": broker_id}
        if status == "REJECTED":
            return [OrderEvent(**base, status=OrderStatus.REJECTED, event_ts=_ts(body["updateTime"]),
                               reason=f"{self.name}: rejected")]
        events = [OrderEvent(**base, status=OrderStatus.ACK, event_ts=_ts(body.get("time") or body["updateTime"]))]
        qty = Decimal(body["origQty"])
        executed = Decimal(body["executedQty"])
        cum = Decimal(0)
        if executed > 0:
            trades = self._call(self.exchange.fetch_my_trades, self._symbol(client_order_id), None, None,
                                {"orderId": body["orderId"]})
            unique = {int(t["info"]["id"]): t["info"] for t in trades}  # a trade listed twice is one trade
            for trade_id in sorted(unique):
                trade = unique[trade_id]
                fill_qty, price = Decimal(trade["qty"]), Decimal(trade["price"])
                if fill_qty <= 0 or price <= 0:
                    raise BrokerError(f"{self.name} trade {trade_id}: qty and price must be positive", retryable=False)
                cum += fill_qty
                events.append(OrderEvent(
                    **base, status=OrderStatus.FILLED if cum == qty else OrderStatus.PARTIAL,
                    event_ts=_ts(trade["time"]), filled_qty=cum, last_fill_qty=fill_qty, last_fill_price=price,
                    fee=self._fee(trade, body["symbol"], price), fill_id=f"{trade['symbol']}:{trade_id}"))
        end = END_STATUS.get(status)
        if end is not None and cum == executed:
            reason = f"{self.name}: {status.lower()}"
            if body.get("expiryReason"):
                reason += f" ({body['expiryReason']})"
            events.append(OrderEvent(**base, status=end, event_ts=_ts(body["updateTime"]), filled_qty=cum,
                                     reason=reason))
        return events

    def _fee(self, trade: dict, symbol_id: str, price: Decimal) -> Decimal:
        """The commission in the quote currency: as paid in quote, times the price if paid in base;
        a third asset (BNB) has no price here and counts as 0 (docs/venues.md)."""
        market = self.exchange.markets_by_id[symbol_id][0]
        commission = Decimal(trade["commission"])
        if trade["commissionAsset"] == market["quote"]:
            return commission
        if trade["commissionAsset"] == market["base"]:
            return commission * price
        return Decimal(0)

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


def _unsupported(order: Order) -> str | None:
    if order.order_type is not OrderType.MARKET and order.time_in_force not in TIME_IN_FORCE:
        return f"time in force {order.time_in_force} is not supported on spot (GTC or IOC)"
    return None


def _order_args(order: Order) -> tuple:
    """create_order's arguments: MARKET; LIMIT with its time in force; STOP as STOP_LOSS (a market order once
    the stop price trades). Decimals as strings."""
    params: dict[str, Any] = {"clientOrderId": order.client_order_id}
    price = None
    if order.order_type is OrderType.LIMIT:
        price = str(order.limit_price)
        params["timeInForce"] = TIME_IN_FORCE[order.time_in_force]
    kind = "limit" if order.order_type is OrderType.LIMIT else "market"
    if order.order_type is OrderType.STOP:
        params["triggerPrice"] = str(order.stop_price)
    return order.symbol, kind, order.side.lower(), str(order.qty), price, params


def _same_order(order: Order, body: dict, exchange: ccxt.Exchange) -> bool:
    return (body.get("symbol") == exchange.market(order.symbol)["id"] and body.get("side") == order.side.value
            and Decimal(body["origQty"]) == order.qty)
