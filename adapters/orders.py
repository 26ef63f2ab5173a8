"""Order messages shared by the gate, the execution adapter and the brokers.

Immutable: a change of state is a new OrderEvent, never an edit.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache

# order_events as the gate and the adapter append to it
ORDER_EVENT_COLUMNS = ("client_order_id", "account_id", "strategy_id", "symbol", "side", "order_type",
                       "time_in_force", "qty", "limit_price", "stop_price", "status", "filled_qty",
                       "broker_order_id", "reason", "event_ts", "source")


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"


class TimeInForce(StrEnum):
    DAY = "DAY"
    GTC = "GTC"
    IOC = "IOC"


class OrderStatus(StrEnum):
    NEW = "NEW"
    ACK = "ACK"
    PARTIAL = "PARTIAL"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})


# Shadow (paper) accounts, one per strategy (account_id "paper:<strategy_id>"):
# they score strategies and must never change what happens to real accounts.
SHADOW_PREFIX = "paper:"


def is_shadow(account_id: str) -> bool:
    return account_id.startswith(SHADOW_PREFIX)


@lru_cache(maxsize=65_536)  # a decision's id is asked for several times on its way: hash it once
def client_order_id(decision_id: str) -> str:
    """Deterministic: the same decision always maps to the same order id, so a
    resend is recognised by the broker and by us, never duplicated."""
    return "tf-" + hashlib.sha256(decision_id.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    client_order_id: str
    account_id: str
    strategy_id: str
    symbol: str
    side: Side
    qty: Decimal
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    ref_price: Decimal | None = None  # the close of the bar whose signal the order comes from
    created_at: datetime

    def __post_init__(self) -> None:
        if self.qty <= 0:
            raise ValueError(f"qty: must be positive, got {self.qty}")
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("limit_price: required for a LIMIT order")
        if self.order_type is OrderType.STOP and self.stop_price is None:
            raise ValueError("stop_price: required for a STOP order")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderEvent:
    """One step of an order's life, as the broker reports it."""
    client_order_id: str
    status: OrderStatus
    event_ts: datetime
    filled_qty: Decimal = Decimal(0)        # cumulative
    last_fill_qty: Decimal = Decimal(0)     # this event's fill, if any
    last_fill_price: Decimal | None = None
    fee: Decimal = Decimal(0)
    fill_id: str | None = None
    broker_order_id: str | None = None
    reason: str = ""
