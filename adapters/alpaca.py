"""Alpaca (paper and live) behind the broker port (adapters/broker.py), with the
official SDK alpaca-py: its TradingClient for REST and its TradingStream for
the trade_updates websocket.

submit   POST /v2/orders with client_order_id = our deterministic id; a 422
         naming a duplicate client order id is the resend of an order Alpaca
         has: its state comes from GET /v2/orders:by_client_order_id.
cancel   DELETE /v2/orders/{id}. Alpaca cancels asynchronously: the
         CANCELLED (or the fill that won the race) arrives on the stream;
         cancel waits for it up to cancel_wait seconds and otherwise returns
         the latest event it knows (never an invented one).
stream   trade_updates -> OrderEvents (see EVENT_STATUS); the execution_id is
         the fill_id, the order's filled_qty the cumulative quantity.
history  the order (by client order id) and its FILL account activities.
malformed  a trade update (or FILL activity) that cannot be read as an event
         is set aside with the message as received (poll_malformed) for the
         adapter to dead-letter; the order's other reports go on.

After the stream reconnects, reports sent meanwhile are not replayed by
Alpaca: the next poll_events re-reads every open order's history over REST
first (VenueEventLog drops what was already seen). Errors: 429 and 5xx,
timeouts and dropped connections are BrokerError(retryable=True) for
ResilientBroker's backoff (the SDK's own silent 429 retries are turned off so
the breaker sees them); 401/403 on credentials and unknown orders are
permanent; any other refusal of an order (422, 403 buying power) is a
REJECTED event with Alpaca's message. No message ever carries a key.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.stream import TradingStream

from adapters.broker import BrokerError, MalformedReport
from adapters.orders import Order, OrderEvent, OrderStatus, OrderType
from adapters.venue_events import (
    NotifiesConnect,
    UnreadableReport,
    VenueEventLog,
    VenueNotFound,
    VenueRefused,
    report_decimal,
    report_field,
)
from tradeflow.clock import utc_now
from tradeflow.ops.venue_keys import Secret

log = logging.getLogger("tradeflow.venue.alpaca")

# trade_updates event -> our status; the others (pending_new, pending_cancel, pending_replace, replaced,
# calculated, done_for_day, order_cancel_rejected, ...) have no equivalent and are not emitted
EVENT_STATUS = {
    "new": OrderStatus.ACK, "accepted": OrderStatus.ACK,
    "partial_fill": OrderStatus.PARTIAL, "fill": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELLED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED,
}
# an order's status (REST) -> ours, for the order's terminal step in its history
ORDER_STATUS = {"canceled": OrderStatus.CANCELLED, "expired": OrderStatus.EXPIRED, "rejected": OrderStatus.REJECTED}
ORDER_TYPES = {OrderType.MARKET: "market", OrderType.LIMIT: "limit", OrderType.STOP: "stop"}
KEY_VARS = ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY")


def parse_ts(text: str) -> datetime:
    # Alpaca stamps with nanoseconds ("...:01.942282123Z"); Python keeps microseconds
    head, dot, frac = text.rstrip("Z").partition(".")
    frac = "".join(ch for ch in frac if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}{'.' + frac if dot and frac else ''}+00:00")


class _Stream(NotifiesConnect, TradingStream):
    """TradingStream that says when it (re)connects: reports sent while it was away are not replayed."""


class AlpacaBroker:
    def __init__(self, api_key: Secret, secret_key: Secret, *, paper: bool = True, url_override: str | None = None,
                 stream_url_override: str | None = None, cancel_wait: float = 2.0,
                 clock: Callable[[], datetime] = utc_now, reconnect_min_backoff: float = 1.0) -> None:
        self.paper = paper
        self.cancel_wait = cancel_wait
        self._clock = clock
        self._client = TradingClient(api_key.reveal(), secret_key.reveal(), paper=paper, raw_data=True,
                                     url_override=url_override)
        # ResilientBroker backs off and counts failures; the SDK would sleep 3 s per 429 unseen by the breaker
        self._client._retry = 0
        self._log = VenueEventLog()
        self._connections = 0
        self._resync = threading.Event()
        self._stream = _Stream(api_key.reveal(), secret_key.reveal(), paper=paper, raw_data=True,
                               url_override=stream_url_override, on_connected=self._connected)
        self._stream._reconnect_min_backoff = reconnect_min_backoff
        self._stream.subscribe_trade_updates(self._on_update)
        self._thread = threading.Thread(target=self._stream.run, name="alpaca-trade-updates", daemon=True)
        self._thread.start()

    @property
    def reconnects(self) -> int:
        return max(0, self._connections - 1)

    @property
    def connected(self) -> bool:
        return self._connections > 0

    def close(self) -> None:
        loop = self._stream._loop
        if loop is not None and loop.is_running():
            self._stream.stop()
            # the SDK looks at its stop flag between 5 s receive timeouts: closing the socket wakes it now
            asyncio.run_coroutine_threadsafe(self._stream.close(), loop).result(5)
        self._thread.join(timeout=10)

    # -- the port -----------------------------------------------------------------
    def submit(self, order: Order) -> OrderEvent:
        known = self._log.order(order.client_order_id)
        if known is not None and known != order:
            raise BrokerError(f"client_order_id {order.client_order_id} is already used by a different order",
                              retryable=False)
        self._log.know(order)
        try:
            body = self._call(self._client.post, "/orders", _order_body(order))
        except VenueRefused as refusal:
            if "client_order_id" in refusal.message and "unique" in refusal.message:
                return self._existing(order)
            event = OrderEvent(client_order_id=order.client_order_id, status=OrderStatus.REJECTED,
                               event_ts=self._clock(), reason=f"alpaca: {refusal.message}")
            self._log.emit(event)
            return event
        self._log.know(order, body.get("id"))
        event = self._answer(order, body)
        self._log.emit(event)
        return self._log.last(order.client_order_id) or event

    def cancel(self, client_order_id: str) -> OrderEvent:
        broker_id = self._log.broker_order_id(client_order_id)
        if broker_id is None:  # placed before a restart: learn the order and its history first
            body = self._by_client_id(client_order_id)
            if body is None:
                raise BrokerError(f"unknown client_order_id {client_order_id}", retryable=False)
            broker_id = body["id"]
            self._emit_history(client_order_id, body)
        last = self._log.last(client_order_id)
        if last is not None and last.status.terminal:
            return last
        try:
            self._call(self._client.delete, f"/orders/{broker_id}")
        except VenueRefused as refusal:  # 422: not cancelable any more (filled, or done meanwhile)
            log.info("cancel of %s refused: %s", client_order_id, refusal.message)
            self._emit_history(client_order_id)
        settled = self._log.wait_terminal(client_order_id, self.cancel_wait)
        if settled is None:
            raise BrokerError(f"cancel of {client_order_id}: no report from alpaca yet", retryable=True)
        return settled

    def poll_events(self) -> list[OrderEvent]:
        if self._resync.is_set():
            self._resync.clear()
            # the stream was away: what it missed comes from the orders' histories, once, before new reports
            for coid in self._log.open_orders():
                self._emit_history(coid)
        return self._log.drain()

    def poll_malformed(self) -> list[MalformedReport]:
        return self._log.drain_malformed()

    def order_history(self, client_order_ids: list[str]) -> list[OrderEvent]:
        events: list[OrderEvent] = []
        for coid in client_order_ids:
            self._log.claim(coid)
            events += self._history(coid)
        return events

    # -- stream ---------------------------------------------------------------------
    def _connected(self) -> None:
        self._connections += 1
        if self._connections > 1:
            log.warning("alpaca trade stream reconnected (%d); re-reading open orders", self.reconnects)
            self._resync.set()

    async def _on_update(self, message: dict) -> None:
        try:
            event = _from_update(report_field(message, "data"))
        except UnreadableReport as err:
            self._log.malformed(MalformedReport("alpaca", _as_mapping(message), err.field, err.reason))
            return
        # reports of orders placed by someone else on the same account are not ours to record
        if event is not None and self._log.is_ours(event.client_order_id):
            self._log.emit(event)

    # -- REST -------------------------------------------------------------------------
    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except APIError as err:
            status = err.status_code
            message = _message(err)
            if status == 429 or (status is not None and status >= 500):
                raise BrokerError(f"alpaca busy (HTTP {status}): {message}", retryable=True) from None
            if status == 401 or (status == 403 and "forbidden" in message.lower() and "buying" not in message.lower()):
                raise BrokerError(f"alpaca refused the credentials (HTTP {status})", retryable=False) from None
            if status == 404:
                raise VenueNotFound(message) from None
            raise VenueRefused(message) from None
        except (requests.ConnectionError, requests.Timeout) as err:
            raise BrokerError(f"alpaca unreachable: {type(err).__name__}", retryable=True) from None

    def _by_client_id(self, client_order_id: str) -> dict | None:
        try:
            return self._call(self._client.get, "/orders:by_client_order_id", {"client_order_id": client_order_id})
        except VenueNotFound:
            return None

    def _existing(self, order: Order) -> OrderEvent:
        body = self._by_client_id(order.client_order_id)
        if body is None:
            raise BrokerError(f"alpaca says {order.client_order_id} exists but cannot find it", retryable=True)
        if not _same_order(order, body):
            raise BrokerError(f"client_order_id {order.client_order_id} is already used by a different order",
                              retryable=False)
        self._log.know(order, body["id"])
        self._emit_history(order.client_order_id, body)
        return self._log.last(order.client_order_id)

    def _emit_history(self, client_order_id: str, body: dict | None = None) -> None:
        for event in self._history(client_order_id, body):
            self._log.emit(event)

    def _history(self, client_order_id: str, body: dict | None = None) -> list[OrderEvent]:
        body = body or self._by_client_id(client_order_id)
        if body is None:
            return []
        broker_id = body["id"]
        status = body["status"]
        if status == "rejected":
            return [OrderEvent(client_order_id=client_order_id, status=OrderStatus.REJECTED,
                               event_ts=parse_ts(body.get("failed_at") or body["updated_at"]), broker_order_id=broker_id,
                               reason="alpaca: rejected")]
        events = [OrderEvent(client_order_id=client_order_id, status=OrderStatus.ACK,
                             event_ts=parse_ts(body.get("submitted_at") or body["created_at"]), broker_order_id=broker_id)]
        qty = Decimal(str(body["qty"]))
        fills = self._call(self._client.get, "/account/activities/FILL",
                           {"after": body["created_at"], "direction": "asc"}) or []
        for fill in fills:
            if fill.get("order_id") != broker_id:
                continue
            try:
                cum = report_decimal(fill, "cum_qty", positive=True)
                events.append(OrderEvent(
                    client_order_id=client_order_id, status=OrderStatus.FILLED if cum == qty else OrderStatus.PARTIAL,
                    event_ts=_report_ts(fill, "transaction_time"), filled_qty=cum,
                    last_fill_qty=report_decimal(fill, "qty", positive=True),
                    last_fill_price=report_decimal(fill, "price", positive=True),
                    fill_id=str(report_field(fill, "id")), broker_order_id=broker_id))
            except UnreadableReport as err:
                self._log.malformed(MalformedReport("alpaca", fill, err.field, err.reason))
        if status in ORDER_STATUS:
            at = body.get(f"{'canceled' if status == 'canceled' else status}_at") or body["updated_at"]
            events.append(OrderEvent(client_order_id=client_order_id, status=ORDER_STATUS[status], event_ts=parse_ts(at),
                                     filled_qty=Decimal(str(body["filled_qty"])), broker_order_id=broker_id,
                                     reason=f"alpaca: {status}"))
        return events

    def _answer(self, order: Order, body: dict) -> OrderEvent:
        status = OrderStatus.REJECTED if body.get("status") == "rejected" else OrderStatus.ACK
        return OrderEvent(client_order_id=order.client_order_id, status=status,
                          event_ts=parse_ts(body.get("submitted_at") or body["created_at"]),
                          broker_order_id=body.get("id"), reason="alpaca: rejected" if status is OrderStatus.REJECTED else "")


def _message(err: APIError) -> str:
    try:
        return str(json.loads(str(err)).get("message", str(err)))
    except (ValueError, AttributeError):
        return str(err)[:200]


def _order_body(order: Order) -> dict[str, str]:
    # Decimals as strings: Alpaca takes them exactly, a float would not be
    body = {"symbol": order.symbol, "qty": str(order.qty), "side": order.side.lower(),
            "type": ORDER_TYPES[order.order_type], "time_in_force": order.time_in_force.lower(),
            "client_order_id": order.client_order_id}
    if order.limit_price is not None:
        body["limit_price"] = str(order.limit_price)
    if order.stop_price is not None:
        body["stop_price"] = str(order.stop_price)
    return body


def _same_order(order: Order, body: dict) -> bool:
    return (body.get("symbol") == order.symbol and Decimal(str(body.get("qty"))) == order.qty
            and body.get("side") == order.side.lower())


def _from_update(data: Any) -> OrderEvent | None:
    """One trade_updates message's data as an event, None for a step we do not record;
    UnreadableReport (field named as in the message) for one that cannot be read."""
    status = EVENT_STATUS.get(report_field(data, "event", "data."))
    if status is None:
        return None
    order = report_field(data, "order", "data.")
    coid = report_field(order, "client_order_id", "data.order.")
    if not isinstance(coid, str) or not coid:
        raise UnreadableReport("data.order.client_order_id", "not a string")
    filled = report_decimal(order, "filled_qty", "data.order.") if order.get("filled_qty") else Decimal(0)
    at = _report_ts(data, "timestamp", "data.")
    fill: dict[str, Any] = {}
    if status in (OrderStatus.PARTIAL, OrderStatus.FILLED):
        fill = {"last_fill_qty": report_decimal(data, "qty", "data.", positive=True),
                "last_fill_price": report_decimal(data, "price", "data.", positive=True),
                "fill_id": str(report_field(data, "execution_id", "data."))}
    reason = f"alpaca: {data['event']}" if status.terminal and status is not OrderStatus.FILLED else ""
    return OrderEvent(client_order_id=coid, status=status, event_ts=at, filled_qty=filled,
                      broker_order_id=str(report_field(order, "id", "data.order.")), reason=reason, **fill)


def _report_ts(data: Any, key: str, where: str = "") -> datetime:
    value = report_field(data, key, where)
    try:
        return parse_ts(str(value))
    except ValueError:
        raise UnreadableReport(f"{where}{key}", f"not an ISO 8601 time: {str(value)[:40]!r}") from None


def _as_mapping(message: Any) -> dict[str, Any]:
    """The payload of a dead letter is an object: a message that is not one is kept under "message"."""
    return message if isinstance(message, dict) else {"message": message}
