"""Price ingest: validate 1-minute bars, drop exact re-sends, refuse
conflicting ones, batch-insert the rest into price_1m_history.

Timestamps: ISO 8601 strings (a missing offset means UTC) or datetime values.
Each record is checked in this order and refused on the first failure:
missing field, unparseable/off-minute/future timestamp, non-numeric or
non-finite value, non-positive price, negative volume, high < low,
open or close outside [low, high].
"""
from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import psycopg

from ingest.dlq import Rejection, write_rejections
from ingest.writer import insert_rows
from tradeflow.config import Settings
from tradeflow.reasons import ReasonCode

BAR_FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close")
NUMERIC_FIELDS = PRICE_FIELDS + ("volume",)
KIND = "price"


@dataclass
class IngestReport:
    read: int = 0
    inserted: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    rejections: list[Rejection] = field(default_factory=list, repr=False)

    def add(self, other: "IngestReport") -> None:
        self.read += other.read
        self.inserted += other.inserted
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, object]:
        return {"read": self.read, "inserted": self.inserted, "duplicates": self.duplicates,
                "rejected": self.rejected, "rejected_by_reason": dict(self.reasons)}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _is_missing(values: pd.Series) -> pd.Series:
    if values.dtype != object:
        return values.isna()
    return values.isna() | values.str.strip().eq("").fillna(False).astype(bool)


def validate_bars(raw: pd.DataFrame, *, now: datetime, settings: Settings) -> tuple[pd.DataFrame, list[Rejection]]:
    """Split a chunk into typed valid bars and rejections (first failing rule wins)."""
    raw = raw.reset_index(drop=True)
    for name in BAR_FIELDS:
        if name not in raw.columns:
            raw[name] = None
    code = pd.Series(None, index=raw.index, dtype=object)
    bad_field = pd.Series(None, index=raw.index, dtype=object)

    def flag(mask: pd.Series, name: str, reason: ReasonCode) -> None:
        hit = mask & code.isna()
        code[hit] = reason
        bad_field[hit] = name

    for name in BAR_FIELDS:
        flag(_is_missing(raw[name]), name, ReasonCode.MISSING_FIELD)

    ts = pd.to_datetime(raw["ts"], utc=True, errors="coerce", format="ISO8601") \
        if raw["ts"].dtype == object else pd.to_datetime(raw["ts"], utc=True, errors="coerce")
    flag(ts.isna(), "ts", ReasonCode.UNPARSEABLE_TIMESTAMP)
    flag(ts.notna() & (ts != ts.dt.floor("min")), "ts", ReasonCode.NOT_ON_MINUTE)
    flag(ts > pd.Timestamp(now + settings.max_future_skew), "ts", ReasonCode.FUTURE_TIMESTAMP)

    numbers = {}
    for name in NUMERIC_FIELDS:
        parsed = pd.to_numeric(raw[name], errors="coerce").astype("float64")
        numbers[name] = parsed
        unparsed = parsed.isna()
        spelled_non_finite = raw.loc[unparsed, name].astype(str).str.strip().str.lower().isin(
            {"nan", "inf", "-inf", "+inf", "infinity", "-infinity"})
        flag(spelled_non_finite.reindex(raw.index, fill_value=False), name, ReasonCode.NON_FINITE)
        flag(parsed.isna(), name, ReasonCode.NOT_A_NUMBER)
        flag(np.isinf(parsed), name, ReasonCode.NON_FINITE)
    for name in PRICE_FIELDS:
        flag(numbers[name] <= 0, name, ReasonCode.NON_POSITIVE_PRICE)
    flag(numbers["volume"] < 0, "volume", ReasonCode.NEGATIVE_VOLUME)
    flag(numbers["high"] < numbers["low"], "high", ReasonCode.HIGH_BELOW_LOW)
    for name, reason in (("open", ReasonCode.OPEN_OUTSIDE_RANGE), ("close", ReasonCode.CLOSE_OUTSIDE_RANGE)):
        flag((numbers[name] < numbers["low"]) | (numbers[name] > numbers["high"]), name, reason)

    rejected = code.notna()
    rejections = [
        Rejection(payload=_payload(raw.loc[i]), field=bad_field[i], code=code[i],
                  reason=_explain(code[i], bad_field[i], raw.loc[i], settings))
        for i in np.flatnonzero(rejected.to_numpy())
    ]
    ok = ~rejected
    valid = pd.DataFrame({
        "symbol": raw.loc[ok, "symbol"].astype(str).str.strip(),
        "ts": ts[ok],
        **{name: numbers[name][ok] for name in NUMERIC_FIELDS},
    })
    valid["payload_index"] = np.flatnonzero(ok.to_numpy())
    return valid, rejections


def _payload(row: pd.Series) -> dict[str, object]:
    return {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                v.isoformat() if isinstance(v, (pd.Timestamp, datetime)) else v)
            for k, v in row.items()}


def _explain(code: ReasonCode, name: str, row: pd.Series, settings: Settings) -> str:
    value = row.get(name)
    if code is ReasonCode.HIGH_BELOW_LOW:
        return f"high {row['high']} is below low {row['low']}"
    if code in (ReasonCode.OPEN_OUTSIDE_RANGE, ReasonCode.CLOSE_OUTSIDE_RANGE):
        return f"{name} {value} is outside [low {row['low']}, high {row['high']}]"
    if code is ReasonCode.FUTURE_TIMESTAMP:
        return f"ts {value} is more than {int(settings.max_future_skew.total_seconds())} s ahead of the clock"
    if code is ReasonCode.MISSING_FIELD:
        return f"{name} is missing"
    return f"{name} {value!r}: {code.description}"


class PriceIngester:
    """Writes validated bars; one instance per source (file, synthetic feed, connector)."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, *, source: str,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.conn = conn
        self.settings = settings
        self.source = source
        self.clock = clock
        self.batch_id = uuid.uuid4().hex[:16]

    def ingest(self, batches: Iterable[pd.DataFrame], on_progress: Callable[[int], None] | None = None) -> IngestReport:
        total = IngestReport()
        for raw in batches:
            total.add(self.ingest_frame(raw))
            if on_progress:
                on_progress(len(raw))
        return total

    def ingest_frame(self, raw: pd.DataFrame, *, dead_letters: bool = True) -> IngestReport:
        """Ingest one chunk. With dead_letters=False (replays) rejections are
        only reported, in report.rejections, not written again."""
        now = self.clock()
        report = IngestReport(read=len(raw))
        valid, rejections = validate_bars(raw, now=now, settings=self.settings)
        fresh, duplicates, conflicts = self._split_known(valid, raw)
        rejections += conflicts
        report.duplicates = duplicates
        if len(fresh):
            rows = zip(fresh["symbol"].tolist(), fresh["ts"].dt.to_pydatetime().tolist(),
                       *(fresh[name].tolist() for name in NUMERIC_FIELDS))
            report.inserted = insert_rows(
                self.conn, "price_1m_history", BAR_FIELDS, rows, self.settings.ingest_batch_rows,
                constants={"source": self.source, "batch_id": self.batch_id, "received_at": now})
        if rejections and dead_letters:
            write_rejections(self.conn, KIND, rejections, source=self.source, batch_id=self.batch_id,
                             received_at=now, batch_rows=self.settings.ingest_batch_rows)
        report.rejected = len(rejections)
        report.reasons.update(str(r.code) for r in rejections)
        report.rejections = rejections
        return report

    def _split_known(self, valid: pd.DataFrame, raw: pd.DataFrame) -> tuple[pd.DataFrame, int, list[Rejection]]:
        """Drop exact re-sends (within the chunk and against stored bars);
        refuse a bar whose (symbol, ts) is known with other values."""
        if valid.empty:
            return valid, 0, []
        stored = self._stored_bars(valid)
        candidates = pd.concat([stored.assign(stored=True), valid.assign(stored=False)], ignore_index=True)
        first = candidates.drop_duplicates(["symbol", "ts"], keep="first").set_index(["symbol", "ts"])
        incoming = valid.set_index(["symbol", "ts"])
        reference = first.loc[incoming.index]
        same = np.ones(len(incoming), dtype=bool)
        for name in NUMERIC_FIELDS:
            same &= np.isclose(incoming[name].to_numpy(float), reference[name].to_numpy(float), rtol=1e-12, atol=0)
        is_first_copy = ~reference["stored"].to_numpy(bool) & ~incoming.index.duplicated(keep="first")
        fresh = valid[is_first_copy]
        duplicates = int((same & ~is_first_copy).sum())
        conflicting = valid[~same]
        conflicts = [
            Rejection(payload=_payload(raw.loc[int(row.payload_index)]), field="ts",
                      code=ReasonCode.CONFLICTING_DUPLICATE,
                      reason=f"{row.symbol} {row.ts.isoformat()} already stored with different values")
            for row in conflicting.itertuples()
        ]
        return fresh, duplicates, conflicts

    def _stored_bars(self, valid: pd.DataFrame) -> pd.DataFrame:
        rows = self.conn.execute(
            "SELECT symbol, ts, open::float8, high::float8, low::float8, close::float8, volume::float8"
            " FROM price_1m_history WHERE symbol = ANY(%s) AND ts BETWEEN %s AND %s ORDER BY received_at",
            (sorted(valid["symbol"].unique()), valid["ts"].min().to_pydatetime(), valid["ts"].max().to_pydatetime()),
        ).fetchall()
        stored = pd.DataFrame(rows, columns=list(BAR_FIELDS))
        stored["ts"] = pd.to_datetime(stored["ts"], utc=True)
        return stored

