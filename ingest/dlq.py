"""The dead-letter table: every refused record with its original payload,
the field at fault and a reason code, so nothing is lost and a fixed record
can be replayed."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
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


def storable(value: object) -> object:
    """A received value as JSON that PostgreSQL's jsonb accepts, keeping what was
    received: NaN as missing (pandas' null), other non-finite numbers as strings
    ('inf'), Decimals and big integers as their text, and text PostgreSQL cannot
    store (a NUL, bytes that are not UTF-8) as {"escaped": ...}: an object, so a
    replay refuses it until the field is fixed with --set."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        number = int(value)
        return number if abs(number) < 2 ** 53 else integer_text(number)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return None if math.isnan(number) else number if math.isfinite(number) else str(number)
    if isinstance(value, (pd.Timestamp, datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    if isinstance(value, str):
        return value if encodable(value) and "\x00" not in value else {"escaped": escape(value)}
    if isinstance(value, Mapping):
        return {storable_text(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [storable(v) for v in value]
    return storable(str(value))  # Decimal and anything else: its text


def integer_text(number: int) -> str:
    try:
        return str(number)
    except ValueError:  # more digits than Python converts to decimal
        return f"<integer of {number.bit_length()} bits>"


def escape(text: str) -> str:
    """Backslash escapes for what PostgreSQL text cannot hold: a byte that was
    not UTF-8 as \\xNN, a NUL as \\x00, a lone surrogate as \\uDNNN; a backslash
    doubles, so the escaped text reads back unambiguously."""
    out = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif code == 0:
            out.append("\\x00")
        elif 0xDC80 <= code <= 0xDCFF:  # surrogateescape's stand-in for an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def storable_text(text: str) -> str:
    return text if encodable(text) and "\x00" not in text else escape(text)


def encodable(text: str) -> bool:
    """False for lone surrogates: undecodable bytes (decoded with surrogateescape) or bad JSON escapes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def payload_json(payload: Mapping[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, default=str)


def dlq_id(kind: str, rejection: Rejection) -> str:
    """Deterministic: re-ingesting the same bad file does not grow the list."""
    digest = hashlib.sha256(f"{kind}|{payload_json(rejection.payload)}|{rejection.code}".encode())
    return digest.hexdigest()[:24]


def write_rejections(conn: psycopg.Connection, kind: str, rejections: Iterable[Rejection], *,
                     source: str, batch_id: str, received_at: datetime, batch_rows: int) -> int:
    rows = (
        (dlq_id(kind, r), kind, payload_json(r.payload), storable_text(r.field), str(r.code), storable_text(r.reason),
         source, batch_id, received_at)
        for r in rejections
    )
    return insert_rows(conn, "dead_letter", DLQ_COLUMNS, rows, batch_rows)


def write_new_rejections(conn: psycopg.Connection, kind: str, rejections: Iterable[Rejection], *,
                         source: str, batch_id: str, received_at: datetime, batch_rows: int) -> int:
    """write_rejections of the letters not listed yet (by dlq_id): for a source that
    reads the same records again after a restart (a venue's order history), so that
    each is written once. Returns how many were written."""
    letters = {dlq_id(kind, r): r for r in rejections}
    if not letters:
        return 0
    listed = {row[0] for row in conn.execute(
        "SELECT dlq_id FROM stg_dead_letter WHERE kind = %s AND dlq_id = ANY(%s)", (kind, sorted(letters)))}
    return write_rejections(conn, kind, (r for i, r in letters.items() if i not in listed), source=source,
                            batch_id=batch_id, received_at=received_at, batch_rows=batch_rows)


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
