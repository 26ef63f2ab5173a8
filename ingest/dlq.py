"""The dead-letter table: every refused record with its original payload,
the field at fault and a reason code, so nothing is lost and a fixed record
can be replayed."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

import psycopg

from tradeflow.reasons import ReasonCode
from tradeflow.writer import insert_rows

DLQ_COLUMNS = ("dlq_id", "kind", "payload", "field", "reason_code", "reason", "source", "batch_id", "received_at")


@dataclass(frozen=True, slots=True)
class Rejection:
    payload: Mapping[str, Any]   # the record as received, JSON-serialisable
    field: str
    code: ReasonCode
    reason: str

    def describe(self) -> str:
        return f"{self.code} on {self.field}: {self.reason}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    dlq_id: str
    kind: str
    payload: dict[str, Any]
    field: str
    reason_code: str
    reason: str
    source: str
    received_at: datetime


def payload_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, default=str)


def dlq_id(kind: str, rejection: Rejection) -> str:
    """Deterministic: re-ingesting the same bad file does not grow the list."""
    digest = hashlib.sha256(f"{kind}|{payload_json(rejection.payload)}|{rejection.code}".encode())
    return digest.hexdigest()[:24]


def write_rejections(conn: psycopg.Connection, kind: str, rejections: Iterable[Rejection], *,
                     source: str, batch_id: str, received_at: datetime, batch_rows: int) -> int:
    rows = (
        (dlq_id(kind, r), kind, payload_json(r.payload), r.field, str(r.code), r.reason, source, batch_id, received_at)
        for r in rejections
    )
    return insert_rows(conn, "dead_letter", DLQ_COLUMNS, rows, batch_rows)


def pending(conn: psycopg.Connection, *, kind: str | None = None, ids: Iterable[str] = (),
            limit: int | None = None) -> list[DeadLetter]:
    """Dead letters not yet replayed successfully, oldest first (stg_dead_letter)."""
    ids = list(ids)
    query = (
        "SELECT dlq_id, kind, payload, field, reason_code, reason, source, received_at"
        " FROM stg_dead_letter WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)"
        " AND (cardinality(%(ids)s::text[]) = 0 OR dlq_id = ANY(%(ids)s::text[]))"
        " ORDER BY received_at, dlq_id"
    )
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    rows = conn.execute(query, {"kind": kind, "ids": ids}).fetchall()
    return [DeadLetter(*row) for row in rows]


def record_replay(conn: psycopg.Connection, outcomes: Iterable[tuple[str, str, str]], *,
                  replayed_at: datetime, batch_rows: int) -> int:
    rows = ((dlq, outcome, detail, replayed_at) for dlq, outcome, detail in outcomes)
    return insert_rows(conn, "dead_letter_replay", ("dlq_id", "outcome", "detail", "replayed_at"), rows, batch_rows)
