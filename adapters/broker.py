"""The broker port: what the execution adapter needs from any broker, paper or real.

    submit(order) -> OrderEvent      ACK or REJECTED, returned once the broker has answered
    cancel(client_order_id) -> OrderEvent
    poll_events() -> list[OrderEvent]
    poll_malformed() -> list[MalformedReport]
    order_history(client_order_ids) -> list[OrderEvent]

submit is idempotent on client_order_id: sending an order whose id the broker
already knows creates nothing and returns that order's latest event. That is
what makes resending after a timeout safe (client_order_id is derived from the
decision, so a resend carries the same id). Reusing an id for a different
order is a bug and raises BrokerError(retryable=False).

A broker's refusal of an order is a REJECTED event, not an exception: it is
part of the order's life. BrokerError is for a request that got no answer
(retryable=True: timeout, dropped connection, rate limit, venue busy) or that
cannot be made at all (retryable=False: unknown order, id reused, bad
credentials). Retrying a retryable error may succeed; retrying a permanent one
never will.

cancel of a live order returns CANCELLED (with the cumulative filled_qty); of
a terminal order, its terminal event unchanged; of an unknown id, raises
BrokerError(retryable=False).

poll_events returns, without blocking, every event since the previous call, in
the order they happened: the ACK/REJECTED/CANCELLED that submit and cancel
returned as well as the execution reports nobody asked for (PARTIAL and
FILLED with last_fill_qty/last_fill_price/fee/fill_id and cumulative
filled_qty; CANCELLED of an IOC remainder; EXPIRED). The stream alone is the
order's complete history; an idempotent resubmit or a cancel of a terminal
order adds nothing to it. fill_id is stable: a broker that re-sends a fill
re-sends the same fill_id, and the exec ingester drops the copy.

poll_malformed returns, without blocking, the venue's reports since the
previous call that could not be read as an order event (a trade update
without its order, a trade of zero quantity): each with the payload as
received, once per process however often the venue sends it again. The
adapter dead-letters them (ingest.dlq, kind venue_report), once: a restart
that reads the same report again writes no second letter. The order's other
reports go on as usual; a broker whose reports are built in-process (paper)
has none.

order_history returns, for the given orders, every event the broker holds,
in the order they happened (a real broker's order-status and executions
queries); an id the broker never received has no events (not an error). The
adapter reconciles with it at start-up, for every order it holds open (NEW
included: submitted, maybe, before a crash): events it polled but did not
write before it stopped are not lost. It also takes an order's history when
a resubmit finds the order already there.

docs/brokers.md has the paper broker's fill model and what a real (FIX/REST)
adapter must do.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

from adapters.orders import Order, OrderEvent


class BrokerError(Exception):
    """A request the broker did not answer (retryable) or cannot take (permanent)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class MalformedReport:
    """A venue report that could not be read as an order event, kept as received."""
    venue: str                    # the broker's name: alpaca, ccxt:binance, ...
    payload: Mapping[str, Any]    # the message or record as the venue sent it (decoded JSON)
    field: str                    # the field at fault, as the venue names it
    reason: str


@runtime_checkable
class Broker(Protocol):
    def submit(self, order: Order) -> OrderEvent: ...

    def cancel(self, client_order_id: str) -> OrderEvent: ...

    def poll_events(self) -> list[OrderEvent]: ...

    def poll_malformed(self) -> list[MalformedReport]: ...

    def order_history(self, client_order_ids: list[str]) -> list[OrderEvent]: ...
