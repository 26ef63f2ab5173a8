"""The audit trail: one append-only audit_log row per action that changes how
the engine trades (policy, kill switch, accounts, order cancels), saying who
did what to which target, when, and the before/after.

The row is written right after the change it records, in its own statement:
RisingWave has no multi-statement write transactions and Materialize allows
one table per write transaction, so the pair cannot be atomic on every engine
(docs/security.md). No role may UPDATE or DELETE audit_log.
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime

import psycopg

from tradeflow.clock import utc_now
from tradeflow.writer import insert_rows

COLUMNS = ("audit_id", "actor", "action", "target", "details", "ts")
ACTIONS = ("POLICY_CHANGE", "KILL_SWITCH", "ACCOUNT_ADD", "ACCOUNT_STATUS", "ORDER_CANCEL", "MANUAL_ORDER")


def record(conn: psycopg.Connection, actor: str, action: str, target: str, details: dict[str, object], *,
           at: datetime | None = None) -> str:
    """Append one audit row; returns its audit_id. `at` is the change's own
    timestamp (a version's updated_at) so the row and the change agree."""
    if action not in ACTIONS:
        raise ValueError(f"action: {action!r} is not one of {', '.join(ACTIONS)}")
    audit_id = uuid.uuid4().hex
    # Decimals and datetimes as their exact text: no float rounding in the record
    insert_rows(conn, "audit_log", COLUMNS, [(audit_id, actor, action, target,
                                              json.dumps(details, default=str, sort_keys=True), at or utc_now())],
                batch_rows=1)
    return audit_id
