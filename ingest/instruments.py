"""Instrument reference data: validate rows (symbol, asset class, sector,
industry, currency, lot size, tick size, calendar, shortable, margin class),
drop exact re-sends of the current version, refuse a symbol given twice in one
batch with other values, append the rest to `instruments` (append-only
versions: stg_instruments keeps the newest per symbol).

Each record is checked in this order and refused on the first failure:
malformed record, missing field (industry and calendar are optional: '';
shortable defaults to true), a text field not storable as text, lot_size /
tick_size non-numeric, non-finite, out of range or not positive, shortable
not a yes/no value, margin_class not one of margin_rates' classes (the
margin_classes dbt var).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ingest.dlq import Rejection
from ingest.execs import _decimal, _in_range
from ingest.feeds import _CSV_SUFFIXES, FeedError, _csv_chunks, _csv_header, _malformed_columns
from ingest.validation import (
    FirstFailure,
    Ingester,
    IngestReport,
    as_text,
    explain_row,
    flag_malformed,
    flag_text,
    is_missing,
    payload,
    with_fields,
)
from tradeflow.reasons import ReasonCode

KIND = "instrument"
INSTRUMENT_FIELDS = ("symbol", "asset_class", "sector", "industry", "currency", "lot_size", "tick_size", "calendar",
                     "shortable", "margin_class")
OPTIONAL = {"industry": "", "calendar": "", "shortable": True}
REQUIRED = tuple(name for name in INSTRUMENT_FIELDS if name not in OPTIONAL)
TEXT_FIELDS = ("symbol", "asset_class", "sector", "industry", "currency", "calendar", "margin_class")
STEP_FIELDS = ("lot_size", "tick_size")
YES = frozenset({"true", "t", "yes", "y", "1"})
NO = frozenset({"false", "f", "no", "n", "0"})


def _yes_no(value: object) -> bool | None:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().lower()
    return True if text in YES else False if text in NO else None


class InstrumentIngester(Ingester):
    """Writes validated instrument rows to `instruments`."""

    kind = KIND

    def ingest_frame(self, raw: pd.DataFrame, *, dead_letters: bool = True) -> IngestReport:
        now = self.clock()
        report = IngestReport(read=len(raw))
        raw = with_fields(raw, INSTRUMENT_FIELDS)
        valid, rejections = self._validate(raw)
        fresh, report.duplicates, conflicts = self._split_known(valid, raw)
        if fresh:
            report.inserted, refused = self._store("instruments", INSTRUMENT_FIELDS, [row for _, row in fresh],
                                                   key=("symbol",), narrow="symbol", now=now)
            rejections += [Rejection(payload=payload(raw.iloc[fresh[i][0]]), field="record",
                                     code=ReasonCode.DATABASE_REFUSED, reason=message) for i, message in refused]
        return self._reject(report, rejections + conflicts, now=now, dead_letters=dead_letters)

    def _validate(self, raw: pd.DataFrame) -> tuple[dict[int, tuple], list[Rejection]]:
        checks = FirstFailure(raw.index)

        def mask(values) -> pd.Series:
            return pd.Series(list(values), index=raw.index, dtype=bool)

        flag_malformed(checks, raw)
        for name in REQUIRED:
            checks.flag(is_missing(raw[name]), name, ReasonCode.MISSING_FIELD)
        for name in TEXT_FIELDS:
            flag_text(checks, raw[name], name)
        values: dict[str, list[object]] = {}
        for name in TEXT_FIELDS:
            absent = is_missing(raw[name])
            values[name] = [OPTIONAL.get(name, "") if gone else as_text(v).strip()
                            for v, gone in zip(raw[name], absent)]
        for name in STEP_FIELDS:
            numbers = values[name] = [_decimal(v) for v in raw[name]]
            checks.flag(mask(n is None for n in numbers), name, ReasonCode.NOT_A_NUMBER)
            checks.flag(mask(n is not None and not n.is_finite() for n in numbers), name, ReasonCode.NON_FINITE)
            checks.flag(mask(n is not None and n.is_finite() and not _in_range(n) for n in numbers), name,
                        ReasonCode.OUT_OF_RANGE)
            checks.flag(mask(n is not None and n.is_finite() and n <= 0 for n in numbers), name,
                        ReasonCode.NON_POSITIVE_STEP)
        absent = is_missing(raw["shortable"])
        values["shortable"] = [OPTIONAL["shortable"] if gone else _yes_no(v)
                               for v, gone in zip(raw["shortable"], absent)]
        checks.flag(mask(v is None for v in values["shortable"]), "shortable", ReasonCode.NOT_A_BOOLEAN)
        classes = {row[0] for row in self.conn.execute("SELECT margin_class FROM margin_rates")}
        checks.flag(mask(c not in classes for c in values["margin_class"]), "margin_class",
                    ReasonCode.UNKNOWN_MARGIN_CLASS)
        valid = {int(i): tuple(values[name][i] for name in INSTRUMENT_FIELDS)
                 for i in np.flatnonzero((~checks.failed).to_numpy())}
        return valid, checks.rejections(raw, lambda code, name, row: self._explain(code, name, row, classes))

    def _explain(self, code: ReasonCode, name: str, row: pd.Series, classes: set[str]) -> str:
        if code is ReasonCode.UNKNOWN_MARGIN_CLASS:
            return f"margin_class {row[name]!r} is not one of {sorted(classes)}"
        return explain_row(code, name, row, self.settings)

    def _split_known(self, valid: dict[int, tuple], raw: pd.DataFrame
                     ) -> tuple[list[tuple[int, tuple]], int, list[Rejection]]:
        """Drop a row equal to the symbol's current version (stored or earlier in the batch);
        refuse a symbol that comes twice in one batch with other values."""
        current = {row[0]: tuple(row) for row in self.conn.execute(
            f"SELECT {', '.join(INSTRUMENT_FIELDS)} FROM stg_instruments WHERE symbol = ANY(%s)",
            (sorted({row[0] for row in valid.values()}),))} if valid else {}
        in_batch: dict[str, tuple] = {}
        fresh: list[tuple[int, tuple]] = []
        duplicates = 0
        conflicts: list[Rejection] = []
        for i, row in valid.items():
            symbol = row[0]
            earlier = in_batch.get(symbol)
            if earlier is not None:
                if earlier == row:
                    duplicates += 1
                else:
                    differ = [name for name, a, b in zip(INSTRUMENT_FIELDS, earlier, row) if a != b]
                    conflicts.append(Rejection(
                        payload=payload(raw.loc[i]), field="symbol", code=ReasonCode.CONFLICTING_DUPLICATE,
                        reason=f"{symbol} came earlier in this batch with other {', '.join(differ)}"))
                continue
            in_batch[symbol] = row
            if current.get(symbol) == row:
                duplicates += 1
            else:
                fresh.append((i, row))
        return fresh, duplicates, conflicts


class InstrumentFileFeed:
    """Instrument rows from a CSV file, values as received."""

    def __init__(self, path: str | Path, chunk_rows: int = 50_000) -> None:
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        if not self.path.name.lower().endswith(_CSV_SUFFIXES):
            raise FeedError(f"{self.path}: not a {' / '.join(_CSV_SUFFIXES)} file")
        found = _csv_header(self.path)
        missing = [name for name in REQUIRED if name not in found]
        if missing:
            raise FeedError(f"{self.path}: missing required columns: {', '.join(missing)}; columns found: {found}")
        self._columns = [name for name in INSTRUMENT_FIELDS if name in found]

    def batches(self) -> Iterator[pd.DataFrame]:
        for chunk in _csv_chunks(self.path, self._columns, self.chunk_rows):
            if not chunk.empty:
                yield chunk[[name for name in INSTRUMENT_FIELDS if name in chunk.columns] + _malformed_columns(chunk)]


__all__ = ["INSTRUMENT_FIELDS", "InstrumentFileFeed", "InstrumentIngester"]
