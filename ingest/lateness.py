"""Event time with bounded out-of-orderness (the seed's watermarks).

A key's watermark is the newest event time stored for it, minus the
configured lateness: per symbol for bars (Settings.price_lateness), per
(account, strategy, symbol) for fills (Settings.exec_lateness), the key the
book and the views apply fills in. A record stamped before its key's
watermark when it arrives (records earlier in the same batch count) is late.
Nothing is dropped: a late record is stored like any other, and also
flagged in late_arrivals (one row per record), counted in
ingest_late_records_total{kind} and raised as a WARNING risk event
(LATE_PRICE / LATE_FILL), one per key and batch. What each view does with
it is in docs/risk.md (event time).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Hashable, Sequence

import psycopg

from tradeflow.ops.metrics import PROCESS_METRICS
from tradeflow.reasons import ReasonCode
from tradeflow.writer import insert_rows

LATE_COLUMNS = ("kind", "record_key", "account_id", "symbol", "event_ts", "watermark_ts", "lateness_seconds",
                "source", "batch_id", "received_at")
RISK_COLUMNS = ("event_id", "account_id", "symbol", "rule", "severity", "message", "ts", "source")
RULES = {"price": ReasonCode.LATE_PRICE, "exec": ReasonCode.LATE_FILL}


@dataclass(frozen=True, slots=True)
class Arrival:
    """One record about to be stored: its watermark key, identity and event time."""
    key: Hashable
    record_key: str
    account_id: str | None
    symbol: str
    event_ts: datetime


@dataclass(frozen=True, slots=True)
class Late:
    arrival: Arrival
    watermark: datetime


def find_late(arrivals: Sequence[Arrival], newest: dict[Hashable, datetime], lateness: timedelta) -> list[Late]:
    """The late records of a batch, in its order; `newest` holds each key's newest stored event time."""
    newest = dict(newest)
    late = []
    for arrival in arrivals:
        seen = newest.get(arrival.key)
        if seen is not None and arrival.event_ts < seen - lateness:
            late.append(Late(arrival, seen - lateness))
        if seen is None or arrival.event_ts > seen:
            newest[arrival.key] = arrival.event_ts
    return late


def newest_bars(conn: psycopg.Connection, symbols: Sequence[str]) -> dict[Hashable, datetime]:
    """Each symbol's newest stored bar time: one (symbol, ts) index probe per symbol."""
    rows = conn.execute("SELECT s.symbol, (SELECT max(p.ts) FROM price_1m_history p WHERE p.symbol = s.symbol)"
                        " FROM unnest(%s::text[]) AS s(symbol)", (sorted(set(symbols)),)).fetchall()
    return {symbol: ts for symbol, ts in rows if ts is not None}


def newest_fills(conn: psycopg.Connection, keys: Sequence[tuple[str, str, str]]) -> dict[Hashable, datetime]:
    """Each (account, strategy, symbol)'s newest stored exec_ts: one index probe per key."""
    keys = sorted(set(keys))
    rows = conn.execute(
        "SELECT k.account_id, k.strategy_id, k.symbol, (SELECT max(e.exec_ts) FROM exec_report_history e"
        " WHERE e.account_id = k.account_id AND e.strategy_id = k.strategy_id AND e.symbol = k.symbol)"
        " FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(account_id, strategy_id, symbol)",
        ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])).fetchall()
    return {(a, s, y): ts for a, s, y, ts in rows if ts is not None}


def record_late(conn: psycopg.Connection, kind: str, late: Sequence[Late], *, lateness: timedelta, source: str,
                batch_id: str, received_at: datetime, batch_rows: int) -> None:
    """Flag, count and raise the late records of one stored batch."""
    if not late:
        return
    insert_rows(conn, "late_arrivals", LATE_COLUMNS, [
        (kind, item.arrival.record_key, item.arrival.account_id, item.arrival.symbol, item.arrival.event_ts,
         item.watermark, lateness.total_seconds(), source, batch_id, received_at) for item in late], batch_rows)
    PROCESS_METRICS["ingest_late_records_total"].labels(kind).inc(len(late))
    by_key: dict[Hashable, list[Late]] = {}
    for item in late:
        by_key.setdefault(item.arrival.key, []).append(item)
    rule = RULES[kind]
    events = []
    for key, items in by_key.items():
        first = items[0].arrival
        stamps = [item.arrival.event_ts for item in items]
        behind = max(item.watermark - item.arrival.event_ts for item in items) + lateness
        events.append((f"late:{kind}:{batch_id}:{'/'.join(key) if isinstance(key, tuple) else key}",
                       first.account_id, first.symbol, str(rule), "WARNING",
                       f"{len(items)} {kind} record(s) stamped {min(stamps).isoformat()}..{max(stamps).isoformat()}"
                       f" arrived up to {behind.total_seconds():.0f} s behind the newest of their key"
                       f" (lateness {lateness.total_seconds():.0f} s): stored and flagged in late_arrivals",
                       received_at, source))
    insert_rows(conn, "risk_events", RISK_COLUMNS, events, batch_rows)
