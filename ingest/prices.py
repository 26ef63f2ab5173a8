"""Price ingest: validate 1-minute bars, drop exact re-sends, refuse
conflicting ones, batch-insert the rest into price_1m_history.

Timestamps: ISO 8601 strings (a missing offset means UTC) or datetime values.
Each record is checked in this order and refused on the first failure:
malformed record, missing field, symbol not storable as text,
unparseable/out-of-range/off-minute/future timestamp, per number non-numeric,
non-finite, out of range, non-positive or too small a price, negative volume,
high < low, open or close outside [low, high] (limits: ingest/validation.py).

A live batch (a few bars, all valid, each newer than its symbol's stored
bars) takes a short way (plain_valid_bars): the same rules row by row, with
no pandas call per rule, whose cost dominates ten rows. Any record that is not
plainly typed and valid, a re-send or a late bar sends the whole batch the
full way (validate_bars, then re-sends and conflicts), so rejections, dead
letters and duplicate counts come from one place.
"""
from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

from ingest.dlq import Rejection, encodable
from ingest.lateness import Arrival, find_late, newest_bars, record_late
from ingest.validation import (
    EARLIEST_TS,
    LATEST_TS,
    MALFORMED,
    MAX_MAGNITUDE,
    MAX_SCALE,
    MIN_PRICE,
    NON_FINITE_SPELLINGS,
    FirstFailure,
    Ingester,
    IngestReport,
    all_strings,
    as_text,
    each,
    explain_row,
    flag_malformed,
    flag_text,
    is_missing,
    parse_timestamps,
    payload,
    text_problem,
    timestamp_out_of_range,
    with_fields,
)
from tradeflow.config import Settings
from tradeflow.reasons import ReasonCode

BAR_FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close")
NUMERIC_FIELDS = PRICE_FIELDS + ("volume",)
KIND = "price"
# Up to this many records a batch may take the short way (a live minute's bars)
PLAIN_BATCH_ROWS = 256


def validate_bars(raw: pd.DataFrame, *, now: datetime, settings: Settings) -> tuple[pd.DataFrame, list[Rejection]]:
    """Split a chunk into typed valid bars and rejections (first failing rule wins)."""
    raw = with_fields(raw, BAR_FIELDS)
    checks = FirstFailure(raw.index)
    flag = checks.flag

    flag_malformed(checks, raw)
    for name in BAR_FIELDS:
        flag(is_missing(raw[name]), name, ReasonCode.MISSING_FIELD)
    flag_text(checks, raw["symbol"], "symbol")

    ts = parse_timestamps(raw["ts"])
    flag(ts.isna(), "ts", ReasonCode.UNPARSEABLE_TIMESTAMP)
    flag(timestamp_out_of_range(ts), "ts", ReasonCode.TIMESTAMP_OUT_OF_RANGE)
    flag(ts.notna() & (ts != ts.dt.floor("min")), "ts", ReasonCode.NOT_ON_MINUTE)
    flag(ts > pd.Timestamp(now + settings.max_future_skew), "ts", ReasonCode.FUTURE_TIMESTAMP)

    numbers = {name: _check_number(raw[name], name, checks) for name in NUMERIC_FIELDS}
    flag(numbers["volume"] < 0, "volume", ReasonCode.NEGATIVE_VOLUME)
    flag(numbers["high"] < numbers["low"], "high", ReasonCode.HIGH_BELOW_LOW)
    for name, reason in (("open", ReasonCode.OPEN_OUTSIDE_RANGE), ("close", ReasonCode.CLOSE_OUTSIDE_RANGE)):
        flag((numbers[name] < numbers["low"]) | (numbers[name] > numbers["high"]), name, reason)

    rejections = checks.rejections(raw, lambda code, name, row: _explain(code, name, row, settings))
    ok = ~checks.failed
    valid = pd.DataFrame({
        # as objects: a symbol column of integers keeps its dtype when no record is valid (no .str)
        "symbol": raw.loc[ok, "symbol"].map(as_text).astype(object).str.strip(),
        "ts": ts[ok],
        **{name: numbers[name][ok] for name in NUMERIC_FIELDS},
    })
    valid["payload_index"] = np.flatnonzero(ok.to_numpy())
    return valid, rejections


def plain_valid_bars(raw: pd.DataFrame, *, now: datetime, settings: Settings) -> list[tuple] | None:
    """The typed rows (BAR_FIELDS' order) of a small chunk whose every record passes
    every rule of validate_bars, checked row by row; None as soon as one record fails
    a rule or holds a value of a type not checked here (text timestamps or numbers,
    Decimals, ...): validate_bars then decides the chunk. Only ever stricter than
    validate_bars, never looser (tests/test_price_ingest.py compares the two)."""
    if len(raw) > PLAIN_BATCH_ROWS or MALFORMED in raw.columns or not set(BAR_FIELDS) <= set(raw.columns):
        return None
    latest = pd.Timestamp(now + settings.max_future_skew)
    magnitude, min_price, min_scale = float(MAX_MAGNITUDE), float(MIN_PRICE), 10.0 ** -MAX_SCALE
    rows = []
    for symbol, ts, *values in zip(*(raw[name].tolist() for name in BAR_FIELDS)):
        if type(symbol) is not str or not symbol.strip() or text_problem(symbol) is not None:
            return None
        if not isinstance(ts, datetime) or ts is pd.NaT:
            return None
        try:
            stamp = pd.Timestamp(ts)
            stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        except (ValueError, OverflowError):  # outside pandas' range: the full rules say why
            return None
        if (not EARLIEST_TS <= stamp < LATEST_TS or stamp.second or stamp.microsecond or stamp.nanosecond
                or stamp > latest):
            return None
        numbers = []
        for value in values:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (float, int, np.float32, np.integer)):
                return None
            number = float(value) if abs(value) < magnitude else math.inf  # an int too large for a float
            if not math.isfinite(number) or abs(number) >= magnitude or (number != 0 and abs(number) < min_scale):
                return None
            numbers.append(number)
        open_, high, low, close, volume = numbers
        if (min(open_, high, low, close) < min_price or volume < 0 or high < low
                or not low <= open_ <= high or not low <= close <= high):
            return None
        rows.append((symbol.strip(), stamp, *numbers))
    return rows


def _check_number(values: pd.Series, name: str, checks: FirstFailure) -> pd.Series:
    """One numeric field as float64, flagging what NUMERIC (or a price) cannot take."""
    if values.dtype == object and not all_strings(values):
        # A boolean or an object is not a number, whatever pandas makes of it.
        values = each(values, lambda v: None if isinstance(v, (bool, np.bool_, dict, list))
                      or (isinstance(v, str) and not encodable(v)) else v)
    parsed = pd.to_numeric(values, errors="coerce").astype("float64")
    spelled_non_finite = np.zeros(len(values), dtype=bool)
    for i in np.flatnonzero((parsed.isna() | np.isinf(parsed)).to_numpy()):
        value = values.iloc[i]
        spelled_non_finite[i] = isinstance(value, (str, float)) and str(value).strip().lower() in NON_FINITE_SPELLINGS
    checks.flag(spelled_non_finite, name, ReasonCode.NON_FINITE)
    checks.flag(parsed.isna(), name, ReasonCode.NOT_A_NUMBER)
    # Infinite without being spelled so: a finite text too large for a float (1e400).
    checks.flag(np.isinf(parsed) | (parsed.abs() >= float(MAX_MAGNITUDE)), name, ReasonCode.OUT_OF_RANGE)
    zero = (parsed == 0).to_numpy()
    underflowed = np.zeros(len(values), dtype=bool)
    for i in np.flatnonzero(zero):  # a non-zero text that parsed as 0.0 (1e-20000)
        underflowed[i] = _decimal_or_zero(values.iloc[i]) != 0
    checks.flag(underflowed, name, ReasonCode.OUT_OF_RANGE)
    if name in PRICE_FIELDS:
        checks.flag(parsed <= 0, name, ReasonCode.NON_POSITIVE_PRICE)
        checks.flag(parsed < float(MIN_PRICE), name, ReasonCode.PRICE_TOO_SMALL)
    # More decimal places than RisingWave's NUMERIC keeps (a subnormal float, say).
    checks.flag(~zero & (parsed.abs() < 10.0 ** -MAX_SCALE), name, ReasonCode.OUT_OF_RANGE)
    return parsed


def _decimal_or_zero(value: object) -> Decimal:
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return Decimal(0)


def _explain(code: ReasonCode, name: str, row: pd.Series, settings: Settings) -> str:
    if code is ReasonCode.HIGH_BELOW_LOW:
        return f"high {row['high']} is below low {row['low']}"
    if code in (ReasonCode.OPEN_OUTSIDE_RANGE, ReasonCode.CLOSE_OUTSIDE_RANGE):
        return f"{name} {row[name]} is outside [low {row['low']}, high {row['high']}]"
    return explain_row(code, name, row, settings)


class PriceIngester(Ingester):
    """Writes validated bars to price_1m_history."""

    kind = KIND

    def ingest_frame(self, raw: pd.DataFrame, *, dead_letters: bool = True) -> IngestReport:
        now = self.clock()
        report = IngestReport(read=len(raw))
        plain = self._plain_new_bars(raw, now)
        if plain is not None:
            rows, newest = plain
            report.inserted, refused = self._store_bars(rows, newest, now)
            rejections = self._refused(refused, raw, list(range(len(rows))))
            return self._reject(report, rejections, now=now, dead_letters=dead_letters)
        valid, rejections = validate_bars(raw, now=now, settings=self.settings)
        fresh, duplicates, conflicts = self._split_known(valid, raw)
        rejections += conflicts
        report.duplicates = duplicates
        if len(fresh):
            rows = list(zip(fresh["symbol"].tolist(), list(fresh["ts"].array.to_pydatetime()),
                            *(fresh[name].tolist() for name in NUMERIC_FIELDS)))
            report.inserted, refused = self._store_bars(rows, newest_bars(self.conn, [row[0] for row in rows]), now)
            rejections += self._refused(refused, raw, fresh["payload_index"].tolist())
        return self._reject(report, rejections, now=now, dead_letters=dead_letters)

    def _plain_new_bars(self, raw: pd.DataFrame, now: datetime) -> tuple[list[tuple], dict] | None:
        """A live batch the short way: plainly valid records (plain_valid_bars), at most
        one per (symbol, ts), each newer than its symbol's newest stored bar (so no
        re-send, no conflict); with the symbols' newest bars, for lateness."""
        rows = plain_valid_bars(raw, now=now, settings=self.settings)
        if not rows or len({(row[0], row[1]) for row in rows}) < len(rows):
            return None
        newest = newest_bars(self.conn, [row[0] for row in rows])
        if any(row[0] in newest and row[1] <= newest[row[0]] for row in rows):
            return None
        return [(symbol, ts.to_pydatetime(), *numbers) for symbol, ts, *numbers in rows], newest

    def _store_bars(self, rows: list[tuple], newest: dict, now: datetime) -> tuple[int, list[tuple[int, str]]]:
        """Insert new bars (BAR_FIELDS' order) and record the late ones among those stored."""
        arrivals = [Arrival(row[0], row[0], None, row[0], row[1]) for row in rows]
        late = find_late(arrivals, newest, self.settings.price_lateness)
        inserted, refused = self._store("price_1m_history", BAR_FIELDS, rows, key=("symbol", "ts"),
                                        narrow="symbol", now=now)
        not_stored = {arrivals[i] for i, _ in refused}
        record_late(self.conn, KIND, [x for x in late if x.arrival not in not_stored],
                    lateness=self.settings.price_lateness, source=self.source, batch_id=self.batch_id,
                    received_at=now, batch_rows=self.settings.ingest_batch_rows)
        return inserted, refused

    @staticmethod
    def _refused(refused: list[tuple[int, str]], raw: pd.DataFrame, positions: list[int]) -> list[Rejection]:
        """Rows the database refused, as rejections of their records (row i came from raw's row positions[i])."""
        return [Rejection(payload=payload(raw.iloc[positions[i]]), field="record", code=ReasonCode.DATABASE_REFUSED,
                          reason=message) for i, message in refused]

    def _split_known(self, valid: pd.DataFrame, raw: pd.DataFrame) -> tuple[pd.DataFrame, int, list[Rejection]]:
        """Drop exact re-sends (within the chunk and against stored bars);
        refuse a bar whose (symbol, ts) is known with other values."""
        if valid.empty:
            return valid, 0, []
        stored = self._stored_bars(valid)
        # nothing stored yet: the concatenation would take its column types from an empty frame
        candidates = (pd.concat([stored.assign(stored=True), valid.assign(stored=False)], ignore_index=True)
                      if len(stored) else valid.assign(stored=False))
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
            Rejection(payload=payload(raw.loc[int(row.payload_index)]), field="ts",
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

