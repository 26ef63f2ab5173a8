"""What every real broker adapter shares: a thread-safe event log that emits
each of an order's steps once, however often the venue reports it.

A venue's stream and its REST history overlap: a report re-sent after a
reconnect, a fill seen on the stream and again in the reconciliation query.
An event is new only if its (status, cumulative filled qty) has not been
emitted for that order, and a fill only if its venue execution id has not
been seen; the copies are dropped here (and the exec ingester would drop a
fill_id it knows anyway), so no fill is ever recorded twice.

A report that cannot be read is set aside (malformed) with its payload, once
per process (by its content), for the adapter to dead-letter; the order's
other reports go on.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

from adapters.broker import MalformedReport
from adapters.orders import Order, OrderEvent, OrderStatus

log = logging.getLogger("tradeflow.venue")


@dataclass(slots=True)
class _Known:
    order: Order | None
    broker_order_id: str | None = None
    keys: set[tuple[OrderStatus, Decimal]] = field(default_factory=set)
    fill_ids: set[str] = field(default_factory=set)
    last: OrderEvent | None = None
    held: bool = False  # done at the venue, but a malformed report keeps it from adding up here


class VenueEventLog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._orders: dict[str, _Known] = {}
        self._pending: list[OrderEvent] = []
        self._malformed: list[MalformedReport] = []
        self._malformed_seen: set[str] = set()
        self.duplicates = 0

    def know(self, order: Order, broker_order_id: str | None = None) -> None:
        with self._lock:
            known = self._orders.setdefault(order.client_order_id, _Known(order))
            known.order = known.order or order
            known.broker_order_id = broker_order_id or known.broker_order_id

    def claim(self, client_order_id: str) -> None:
        """Take reports of this order from now on (one placed before a restart)."""
        with self._lock:
            self._orders.setdefault(client_order_id, _Known(None))

    def is_ours(self, client_order_id: str) -> bool:
        with self._lock:
            return client_order_id in self._orders

    def order(self, client_order_id: str) -> Order | None:
        with self._lock:
            known = self._orders.get(client_order_id)
            return known.order if known else None

    def broker_order_id(self, client_order_id: str) -> str | None:
        with self._lock:
            known = self._orders.get(client_order_id)
            return known.broker_order_id if known else None

    def last(self, client_order_id: str) -> OrderEvent | None:
        with self._lock:
            known = self._orders.get(client_order_id)
            return known.last if known else None

    def open_orders(self) -> list[str]:
        with self._lock:
            return [coid for coid, known in self._orders.items()
                    if not known.held and (known.last is None or not known.last.status.terminal)]

    def hold(self, client_order_id: str) -> None:
        """Stop asking the venue about an order it has finished but whose reports do not add up
        (one was malformed and dead-lettered): asking again would read the same reports forever.
        A restart's reconciliation asks once more."""
        with self._lock:
            known = self._orders.setdefault(client_order_id, _Known(None))
            if not known.held:
                known.held = True
                log.warning("order %s is done at the venue but a report of it was malformed (dead-lettered): not"
                            " polled again; it stays open here until an operator settles it", client_order_id)

    def malformed(self, report: MalformedReport) -> None:
        """Set aside a report that cannot be read, unless the same one was set aside before."""
        key = json.dumps([report.venue, report.payload], sort_keys=True, default=str)
        with self._lock:
            if key in self._malformed_seen:
                return
            self._malformed_seen.add(key)
            self._malformed.append(report)
        log.warning("malformed %s report (%s: %s): set aside for the dead-letter table, the order's other reports"
                    " go on", report.venue, report.field, report.reason)

    def drain_malformed(self) -> list[MalformedReport]:
        with self._lock:
            reports, self._malformed = self._malformed, []
            return reports

    def emit(self, event: OrderEvent) -> bool:
        """Queue the event for poll_events unless it is a copy; True if it was new."""
        with self._lock:
            known = self._orders.setdefault(event.client_order_id, _Known(None))
            key = (event.status, event.filled_qty)
            copy = key in known.keys or (event.fill_id is not None and event.fill_id in known.fill_ids)
            # a venue that reports a step twice or late must not move the order back (a CANCELLED after FILLED)
            if copy or (known.last is not None and known.last.status.terminal):
                self.duplicates += 1
                return False
            known.keys.add(key)
            if event.fill_id is not None:
                known.fill_ids.add(event.fill_id)
            known.broker_order_id = event.broker_order_id or known.broker_order_id
            known.last = event
            self._pending.append(event)
            self._lock.notify_all()
            return True

    def drain(self) -> list[OrderEvent]:
        with self._lock:
            events, self._pending = self._pending, []
            return events

    def wait_terminal(self, client_order_id: str, timeout: float) -> OrderEvent | None:
        """The order's latest event once it is terminal, or its latest after timeout seconds."""
        with self._lock:
            self._lock.wait_for(lambda: (last := self.last(client_order_id)) is not None and last.status.terminal,
                                timeout)
            return self.last(client_order_id)


class UnreadableReport(ValueError):
    """A venue report that cannot be read as an order event: the field at fault (as the venue names it) and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def report_field(data: Mapping[str, Any], key: str, where: str = "") -> Any:
    """data[key], or UnreadableReport naming where.key when it is missing or null."""
    value = data.get(key) if isinstance(data, Mapping) else None
    if value is None:
        raise UnreadableReport(f"{where}{key}", "missing")
    return value


def report_decimal(data: Mapping[str, Any], key: str, where: str = "", *, positive: bool = False) -> Decimal:
    """data[key] as a Decimal from its text (never through a float), positive if asked."""
    value = report_field(data, key, where)
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise UnreadableReport(f"{where}{key}", f"not a number: {str(value)[:40]!r}") from None
    if not number.is_finite() or (positive and number <= 0):
        raise UnreadableReport(f"{where}{key}", f"must be {'positive' if positive else 'finite'}, got {number}")
    return number


class VenueRefused(Exception):
    """A venue refused a request for good (not retryable): its message, without keys or signed URLs."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class VenueNotFound(VenueRefused):
    """The venue does not know the order asked for."""


class NotifiesConnect:
    """Mixin for an alpaca-py stream (TradingStream, StockDataStream): calls on_connected
    each time its websocket (re)connects, since what was sent while it was away is not replayed."""

    def __init__(self, *args: Any, on_connected: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_connected = on_connected

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[misc]
        self._on_connected()
