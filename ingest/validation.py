"""What the ingesters share: the base class and the counts it reports, the
first-failing-rule bookkeeping, missing values, timestamps and payloads."""
from __future__ import annotations

import functools
import math
import time
import uuid
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Callable, ContextManager, Iterable, Sequence

import numpy as np
import pandas as pd
import psycopg
from pandas.api.types import infer_dtype
from psycopg.pq import TransactionStatus

from ingest.dlq import Rejection, encodable, integer_text, storable, storable_text, write_rejections
from tradeflow.clock import utc_now
from tradeflow.config import Settings
from tradeflow.ops.metrics import observe_ingest
from tradeflow.reasons import ReasonCode
from tradeflow.writer import insert_rows

# Largest magnitude, precision and scale a number may have to fit every
# engine's NUMERIC (RisingWave's decimal keeps 28 significant digits and at
# most 28 decimal places; PostgreSQL's overflows below about 1e-16383).
MAX_MAGNITUDE = Decimal("1e15")
MAX_DIGITS = 28
MAX_SCALE = 28
# Below any traded instrument's tick (the cheapest crypto tokens quote around
# 1e-9): a smaller price is a unit error or a corrupt value such as a
# subnormal float, and would make a mark whose products underflow.
MIN_PRICE = Decimal("1e-12")
# Ids, symbols and venues: 128 characters are at most 512 bytes of UTF-8, so
# the widest index over text columns (exec_report_history's account_id,
# strategy_id, symbol, exec_ts) stays far below PostgreSQL's btree limit of
# 2704 bytes per index row; real ids (UUIDs, broker ids) are under 64.
MAX_TEXT_LENGTH = 128
# Plausible timestamps. Minute bars and electronic fills do not predate the
# Unix epoch, so an earlier stamp is a zero, negative or misread epoch (year
# 0001 is a zeroed date). The upper bound keeps clear of pandas' nanosecond
# limit (2262-04-11) while any clock or backtest date is far below it; the
# future-skew check then bounds stamps near the present.
EARLIEST_TS = pd.Timestamp("1970-01-01", tz="UTC")
LATEST_TS = pd.Timestamp("2200-01-01", tz="UTC")
# A feed that cannot split a record into fields (a line that is not JSON, a CSV
# row with more or fewer cells than the header, a Parquet row group that cannot
# be decoded) sends a row with the error under MALFORMED and the raw text (empty
# for Parquet) under RAW_TEXT; the validators refuse it as MALFORMED_RECORD.
MALFORMED = "_malformed"
RAW_TEXT = "_raw"
# How feeds spell a non-finite number (the payload keeps Python's 'inf', 'nan').
NON_FINITE_SPELLINGS = frozenset({"nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"})


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

    def _store(self, table: str, columns: Sequence[str], rows: list[tuple], *, key: Sequence[str],
               narrow: str, now: datetime) -> tuple[int, list[tuple[int, str]]]:
        """Insert validated rows; returns the count stored and (row position,
        database message) for each row the database refused.

        Rows are validated before they get here, so a refusal is unexpected;
        when one happens, the batch's other rows must not go with it. The
        statements before the failing one are committed (autocommit, or on
        RisingWave no write transactions at all), so the rows of this call
        already stored are looked up by batch_id and received_at (narrowed by
        the indexed column `narrow`), and the rest inserted one by one.
        """
        constants = {"source": self.source, "batch_id": self.batch_id, "received_at": now}
        try:
            with self._savepoint():
                return insert_rows(self.conn, table, columns, rows, self.settings.ingest_batch_rows,
                                   constants=constants), []
        except (psycopg.Error, UnicodeEncodeError) as err:
            if not _refused_row(err):
                raise
        positions = [columns.index(name) for name in key]
        narrow_at = columns.index(narrow)
        stored = {tuple(found) for found in self.conn.execute(
            f"SELECT {', '.join(key)} FROM {table} WHERE {narrow} = ANY(%s) AND batch_id = %s AND received_at = %s",
            (sorted({row[narrow_at] for row in rows}), self.batch_id, now))}
        inserted, refused = 0, []
        for position, row in enumerate(rows):
            if tuple(row[i] for i in positions) in stored:
                inserted += 1
                continue
            try:
                with self._savepoint():
                    inserted += insert_rows(self.conn, table, columns, [row], 1, constants=constants)
            except (psycopg.Error, UnicodeEncodeError) as err:
                if not _refused_row(err):
                    raise
                refused.append((position, str(err).splitlines()[0] if str(err) else type(err).__name__))
        return inserted, refused

    def _savepoint(self) -> ContextManager[object]:
        """Inside a caller's transaction (a replay), a failed insert rolls back to here, not the whole transaction."""
        if self.conn.info.transaction_status == TransactionStatus.INTRANS:
            return self.conn.transaction()
        return nullcontext()

    def _reject(self, report: IngestReport, rejections: list[Rejection], *, now: datetime,
                dead_letters: bool) -> IngestReport:
        if rejections and dead_letters:
            write_rejections(self.conn, self.kind, rejections, source=self.source, batch_id=self.batch_id,
                             received_at=now, batch_rows=self.settings.ingest_batch_rows)
        report.rejected = len(rejections)
        report.reasons.update(str(r.code) for r in rejections)
        report.rejections = rejections
        return report


# SQLSTATE classes that blame the row, not the connection or the schema: data
# exception (22), integrity violation (23), program limit exceeded (54: an
# index row too large). A client-side encoding error blames the row too.
_ROW_ERROR_CLASSES = ("22", "23", "54")


def _refused_row(err: Exception) -> bool:
    if isinstance(err, UnicodeEncodeError):
        return True
    return (getattr(err, "sqlstate", None) or "")[:2] in _ROW_ERROR_CLASSES


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
    if values.dtype == object:
        if all_strings(values):  # a CSV column: the fast path, unless some text is undecodable
            try:
                return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
            except UnicodeEncodeError:  # pandas' parse cache turns the strings into Arrow strings
                pass
        # Anything but a string or a datetime (an object or a number from JSON, say) is unparseable,
        # and so is undecodable text.
        values = each(values, lambda v: v if isinstance(v, (datetime, np.datetime64))
                      or (isinstance(v, str) and encodable(v)) else None)
        if any(isinstance(v, str) for v in values):
            return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        return pd.to_datetime(values, utc=True, errors="coerce")
    if _is_text(values):
        return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    return pd.to_datetime(values, utc=True, errors="coerce")


def each(values: pd.Series, convert: Callable[[object], object]) -> pd.Series:
    """convert applied to every value, kept as Python objects: Series.map may infer
    an Arrow string dtype, which cannot hold undecodable bytes (lone surrogates)."""
    return pd.Series([convert(v) for v in values], index=values.index, dtype=object)


def all_strings(values: pd.Series) -> bool:
    return infer_dtype(values, skipna=False) == "string"


def timestamp_out_of_range(stamps: pd.Series) -> pd.Series:
    return stamps.notna() & ((stamps < EARLIEST_TS) | (stamps >= LATEST_TS))


def as_text(value: object) -> str:
    """An id's text: bytes (a Parquet binary column) decoded as UTF-8, integers in decimal."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, (int, np.integer)):
        return integer_text(int(value))
    return str(value)


def text_problem(value: object) -> ReasonCode | None:
    """Why an id, symbol or venue cannot be stored as text, if it cannot."""
    if _absent(value):
        return None  # missing fields are their own rule
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, bytes, int, np.integer)):
        return ReasonCode.NOT_TEXT
    text = as_text(value)
    if not encodable(text):
        return ReasonCode.INVALID_ENCODING
    if "\x00" in text:
        return ReasonCode.NUL_CHARACTER
    if len(text.strip()) > MAX_TEXT_LENGTH:
        return ReasonCode.TEXT_TOO_LONG
    return None


def flag_text(checks: "FirstFailure", values: pd.Series, name: str) -> None:
    known: dict[tuple[type, object], ReasonCode | None] = {}

    def problem(value: object) -> ReasonCode | None:
        # Symbols and account ids repeat: each distinct value is checked once.
        try:
            key = (type(value), value)
            if key not in known:
                known[key] = text_problem(value)
            return known[key]
        except TypeError:  # unhashable: a dict or a list
            return text_problem(value)

    problems = each(values, problem)
    for code in (ReasonCode.NOT_TEXT, ReasonCode.INVALID_ENCODING, ReasonCode.NUL_CHARACTER,
                 ReasonCode.TEXT_TOO_LONG):
        checks.flag(problems == code, name, code)


def flag_malformed(checks: "FirstFailure", raw: pd.DataFrame) -> None:
    if MALFORMED in raw.columns:
        checks.flag(raw[MALFORMED].notna(), "record", ReasonCode.MALFORMED_RECORD)


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
    """The record as received, in a form jsonb stores (see storable)."""
    return {storable_text(str(k)): storable(v) for k, v in row.items()
            if not (k in (MALFORMED, RAW_TEXT) and _absent(v))}


def _shown(value: object, limit: int = 80) -> str:
    """A value's repr for a reason text, shortened (an over-long id is kept in the payload)."""
    try:
        shown = repr(value)
    except ValueError:  # an integer too long to print
        shown = f"<integer of {value.bit_length()} bits>"
    return shown if len(shown) <= limit else f"{shown[:limit - 3]}... ({len(shown)} characters)"


def explain_row(code: ReasonCode, name: str, row: pd.Series, settings: Settings) -> str:
    return explain(code, name, row.get(MALFORMED if code is ReasonCode.MALFORMED_RECORD else name), settings)


def explain(code: ReasonCode, name: str, value: object, settings: Settings) -> str:
    """The reason text for the rules every ingester has."""
    if code is ReasonCode.FUTURE_TIMESTAMP:
        return f"{name} {value} is more than {int(settings.max_future_skew.total_seconds())} s ahead of the clock"
    if code is ReasonCode.MISSING_FIELD:
        return f"{name} is missing"
    if code is ReasonCode.MALFORMED_RECORD:
        return f"record: {value}"
    return f"{name} {_shown(value)}: {code.description}"
