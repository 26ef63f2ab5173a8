"""Operator actions on orders, each appended with who and when and left in
the audit trail. A cancel goes to order_commands: the execution adapter
carries it out and the broker's answer lands in order_events like any other.
A manual order goes to manual_order_requests: the decision gate decides it
once, with the same routing limits and risk checks as a signal, so an
operator's order can never jointly break a limit with the strategies'."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

import psycopg

from adapters.orders import OrderType, TimeInForce
from tradeflow.clock import utc_now
from tradeflow.ops import audit
from tradeflow.trading import accounts
from tradeflow.writer import insert_rows


class OrderCommandError(ValueError):
    """A refused request; the message names the field."""


def request_cancel(conn: psycopg.Connection, client_order_id: str, *, reason: str = "",
                   requested_by: str | None = None) -> None:
    row = conn.execute("SELECT status FROM orders WHERE client_order_id = %s", (client_order_id,)).fetchone()
    if row is None:
        raise OrderCommandError(f"client_order_id: {client_order_id} is not a known order")
    if row[0] in {"FILLED", "CANCELLED", "REJECTED", "EXPIRED"}:
        raise OrderCommandError(f"client_order_id: {client_order_id} is already {row[0]}")
    requested_at, requested_by = utc_now(), requested_by or accounts.operator()
    insert_rows(conn, "order_commands", ("client_order_id", "command", "reason", "requested_at", "requested_by"),
                [(client_order_id, "CANCEL", reason, requested_at, requested_by)], batch_rows=1)
    audit.record(conn, requested_by, "ORDER_CANCEL", client_order_id, {"reason": reason, "status": row[0]},
                 at=requested_at)


MANUAL_PREFIX = "manual:"  # a manual order's decision_id is MANUAL_PREFIX + request_id
MANUAL_REQUEST_COLUMNS = ("request_id", "account_id", "strategy_id", "symbol", "side", "qty", "order_type",
                          "time_in_force", "limit_price", "stop_price", "reason", "requested_at", "requested_by")


@dataclass(frozen=True, slots=True)
class ManualOrder:
    request_id: str
    account_id: str
    strategy_id: str
    symbol: str
    side: str
    qty: Decimal
    order_type: OrderType
    time_in_force: TimeInForce
    limit_price: Decimal | None
    stop_price: Decimal | None
    reason: str
    requested_at: datetime
    requested_by: str

    @property
    def decision_id(self) -> str:
        return MANUAL_PREFIX + self.request_id


def _decimal(field: str, value: object) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise OrderCommandError(f"{field}: {value!r} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise OrderCommandError(f"{field}: must be a positive number, got {value}")
    return number


def request_manual_order(conn: psycopg.Connection, account_id: str, symbol: str, side: str, qty: object, *,
                         order_type: str = "MARKET", time_in_force: str = "DAY", limit_price: object = None,
                         stop_price: object = None, strategy_id: str = "manual", reason: str = "",
                         requested_by: str | None = None, at: datetime | None = None) -> ManualOrder:
    """Queue an operator's order for the gate; returns the request (see ManualOrder.decision_id)."""
    side = side.strip().upper()
    if side not in ("BUY", "SELL"):
        raise OrderCommandError(f"side: must be BUY or SELL, got {side!r}")
    if not symbol.strip():
        raise OrderCommandError("symbol: must not be empty")
    if accounts.get(conn, account_id) is None:
        raise OrderCommandError(f"account_id: {account_id} does not exist")
    for field, value, allowed in (("order_type", order_type, OrderType), ("time_in_force", time_in_force, TimeInForce)):
        if value.upper() not in allowed.__members__:
            raise OrderCommandError(f"{field}: one of {', '.join(allowed.__members__)}, got {value!r}")
    kind, tif = OrderType(order_type.upper()), TimeInForce(time_in_force.upper())
    limit, stop = _decimal("limit_price", limit_price), _decimal("stop_price", stop_price)
    if (kind is OrderType.LIMIT) != (limit is not None) or (kind is OrderType.STOP) != (stop is not None):
        raise OrderCommandError(f"order_type: a {kind} order takes "
                                + {"MARKET": "no price", "LIMIT": "limit_price only", "STOP": "stop_price only"}[kind])
    order = ManualOrder(uuid.uuid4().hex[:16], account_id, strategy_id, symbol.strip(), side,
                        _decimal("qty", qty), kind, tif, limit, stop, reason, at or utc_now(),
                        requested_by or accounts.operator())
    insert_rows(conn, "manual_order_requests", MANUAL_REQUEST_COLUMNS,
                [tuple(str(v) if isinstance(v, (OrderType, TimeInForce)) else v
                       for v in (getattr(order, c) for c in MANUAL_REQUEST_COLUMNS))], batch_rows=1)
    audit.record(conn, order.requested_by, "MANUAL_ORDER", account_id,
                 {"request_id": order.request_id, "symbol": order.symbol, "side": side, "qty": order.qty,
                  "order_type": str(kind), "time_in_force": str(tif), "limit_price": limit, "stop_price": stop,
                  "strategy_id": strategy_id, "reason": reason}, at=order.requested_at)
    return order


def pending_manual_orders(conn: psycopg.Connection) -> list[ManualOrder]:
    """Requests the gate has not decided yet, oldest first."""
    cur = conn.execute(
        "SELECT r.* FROM manual_order_requests r LEFT JOIN trade_decisions d"
        " ON d.decision_id = %s || r.request_id WHERE d.decision_id IS NULL"
        " ORDER BY r.requested_at, r.request_id", (MANUAL_PREFIX,))
    names = [c.name for c in cur.description]
    return [ManualOrder(**{**row, "order_type": OrderType(row["order_type"]),
                           "time_in_force": TimeInForce(row["time_in_force"])})
            for row in (dict(zip(names, values)) for values in cur.fetchall())]
