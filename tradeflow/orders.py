"""Operator actions on orders. A request is appended to order_commands (who
and when) and leaves an audit row; the execution adapter carries it out and
the broker's answer lands in order_events like any other."""
from __future__ import annotations

import psycopg

from ingest.validation import utc_now
from ingest.writer import insert_rows
from tradeflow import accounts, audit


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
