"""What the ingesters share: the base class and the counts it reports, the
first-failing-rule bookkeeping, missing values, timestamps and payloads."""
from __future__ import annotations

import functools
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import psycopg

from ingest.dlq import Rejection, write_rejections
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.ops.metrics import observe_ingest
from tradeflow.reasons import ReasonCode

# Largest magnitude and precision a number may have to fit every engine's
# NUMERIC (RisingWave keeps about 28 significant digits).
MAX_MAGNITUDE = Decimal("1e15")
MAX_DIGITS = 28


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


class Ingester:
    """Base of the ingesters; one instance per source (file, feed, connector, replay).
    Subclasses set `kind` (dead_letter.kind) and implement ingest_frame."""

    kind: str

    def __init__(self, conn: psycopg.Connection, settings: Settings, *, source: str,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.conn = conn
        self.settings = settings
        self.source = source
        self.clock = clock
        self.batch_id = uuid.uuid4().hex[:16]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Every batch is counted and timed here, whichever entry point the caller
        # uses: ingest, ingest_frame directly (live sessions) or a replay.
        if "ingest_frame" in cls.__dict__:
            cls.ingest_frame = _observed(cls.ingest_frame)

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
        raise NotImplementedError

    def _reject(self, report: IngestReport, rejections: list[Rejection], *, now: datetime,
                dead_letters: bool) -> IngestReport:
        if rejections and dead_letters:
            write_rejections(self.conn, self.kind, rejections, source=self.source, batch_id=self.batch_id,
                             received_at=now, batch_rows=self.settings.ingest_batch_rows)
        report.rejected = len(rejections)
        report.reasons.update(str(r.code) for r in rejections)
        report.rejections = rejections
        return report


def _observed(ingest_frame: Callable[..., IngestReport]) -> Callable[..., IngestReport]:
    @functools.wraps(ingest_frame)
    def observed(self: Ingester, raw: pd.DataFrame, **kwargs: object) -> IngestReport:
        started = time.perf_counter()
        report = ingest_frame(self, raw, **kwargs)
        observe_ingest(self.kind, inserted=report.inserted, duplicates=report.duplicates, rejected=report.rejected,
                       seconds=time.perf_counter() - started)
        return report
    return observed


def with_fields(raw: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """The chunk on a 0..n-1 index with every expected column (absent ones as None)."""
    raw = raw.reset_index(drop=True)
    for name in names:
        if name not in raw.columns:
            raw[name] = None
    return raw


def _is_text(values: pd.Series) -> bool:
    # pandas 3 reads CSV strings as StringDtype, earlier versions as object.
    return values.dtype == object or isinstance(values.dtype, pd.StringDtype)


def _absent(value: object) -> bool:
    # Not pd.isna: it counts Decimal('NaN') as missing, but that is a value (refused as NON_FINITE).
    return (value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value))
            or (isinstance(value, str) and not value.strip()))


def is_missing(values: pd.Series) -> pd.Series:
    """None, NaN or a blank string."""
    if values.dtype == object:  # any mix of Python values (record dicts, JSON, Fill messages)
        return values.map(_absent).astype(bool)
    if isinstance(values.dtype, pd.StringDtype):
        return values.isna() | values.str.strip().eq("").fillna(False).astype(bool)
    return values.isna()


def parse_timestamps(values: pd.Series) -> pd.Series:
    """UTC timestamps; NaT where a value does not parse. Strings must be ISO 8601
    (no offset means UTC); datetime values pass as they are."""
    if _is_text(values):
        return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return pd.to_datetime(values, utc=True, errors="coerce")


class FirstFailure:
    """Per record, the first rule that failed: later rules never overwrite it.
    Kept in numpy arrays: a live fill arrives alone, and pandas' per-call
    overhead on one-row Series would dominate its validation."""

    def __init__(self, index: pd.Index) -> None:
        self.index = index
        self._code = np.full(len(index), None, dtype=object)
        self._field = np.full(len(index), None, dtype=object)
        self._failed = np.zeros(len(index), dtype=bool)

    def flag(self, mask: pd.Series, name: str, reason: ReasonCode) -> None:
        hit = np.asarray(mask.to_numpy(dtype=bool, na_value=False) if isinstance(mask, pd.Series) else mask,
                         dtype=bool) & ~self._failed
        if hit.any():
            self._code[hit] = reason
            self._field[hit] = name
            self._failed |= hit

    @property
    def failed(self) -> pd.Series:
        return pd.Series(self._failed, index=self.index)

    def rejections(self, raw: pd.DataFrame,
                   explain: Callable[[ReasonCode, str, pd.Series], str]) -> list[Rejection]:
        return [
            Rejection(payload=payload(raw.iloc[i]), field=self._field[i], code=self._code[i],
                      reason=explain(self._code[i], self._field[i], raw.iloc[i]))
            for i in np.flatnonzero(self._failed)
        ]


def payload(row: pd.Series) -> dict[str, object]:
    return {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                v.isoformat() if isinstance(v, (pd.Timestamp, datetime)) else v)
            for k, v in row.items()}


def explain(code: ReasonCode, name: str, value: object, settings: Settings) -> str:
    """The reason text for the rules every ingester has."""
    if code is ReasonCode.FUTURE_TIMESTAMP:
        return f"{name} {value} is more than {int(settings.max_future_skew.total_seconds())} s ahead of the clock"
    if code is ReasonCode.MISSING_FIELD:
        return f"{name} is missing"
    return f"{name} {value!r}: {code.description}"
