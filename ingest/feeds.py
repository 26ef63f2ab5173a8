"""Feeds: the interface every price source implements, the bar file reader and
the execution-report file reader.

A feed yields DataFrame chunks with the canonical columns
``symbol, ts, open, high, low, close, volume``. Values are passed on as the
source delivered them, without validation or coercion: the validator needs the
original values to store rejected rows in the dead-letter table.

File columns (``FileFeed``)
---------------------------
CSV (``.csv``, ``.csv.gz``) and Parquet (``.parquet``, ``.pq``) files are
supported. CSV values are read as strings exactly as written (empty cells stay
empty strings); Parquet values keep their Parquet types. Source columns are
matched to canonical ones case-insensitively, by the first alias present:

=========  ==============================================
canonical  accepted source column names, in priority order
=========  ==============================================
ts         ts, timestamp, time, datetime, date, bar_ts
symbol     symbol, ticker, instrument
open       open, o
high       high, h
low        low, l
close      close, c, price
volume     volume, vol, v
=========  ==============================================

``column_map`` (canonical name -> source column name) overrides the aliases
for the columns it names. Other source columns are dropped; a canonical column
with no match raises ``FeedError``.

Execution files (``ExecFileFeed``)
----------------------------------
CSV, Parquet and JSON lines (``.jsonl``, ``.ndjson``) with columns (keys)
named as the ``ingest.execs.Fill`` fields; other columns are dropped. A CSV or
Parquet file without a required column raises ``FeedError``; a JSON record
without a key is refused by the validator like any record with a missing
field. JSON numbers are passed on as their text, so quantities and prices
parse exactly as Decimals.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ingest.execs import EXEC_FIELDS, REQUIRED as REQUIRED_EXEC_FIELDS
from ingest.synthetic import generate_bars

CANONICAL_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")

DEFAULT_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "timestamp", "time", "datetime", "date", "bar_ts"),
    "symbol": ("symbol", "ticker", "instrument"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "price"),
    "volume": ("volume", "vol", "v"),
}

_CSV_SUFFIXES = (".csv", ".csv.gz")
_PARQUET_SUFFIXES = (".parquet", ".pq")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


class FeedError(Exception):
    """A feed cannot be read as bars (unknown format, missing columns)."""


@runtime_checkable
class BarFeed(Protocol):
    name: str

    def batches(self) -> Iterator[pd.DataFrame]:
        """Chunks with the canonical columns, in source order."""
        ...


@dataclass(frozen=True)
class SyntheticFeed:
    symbols: int
    days: int
    seed: int
    start: dt.date | None = None
    name = "synthetic"

    def batches(self) -> Iterator[pd.DataFrame]:
        return generate_bars(self.symbols, self.days, self.seed, self.start)


def _fold(column: str) -> str:
    return column.strip().lower()


def _resolve_columns(found: list[str], column_map: dict[str, str] | None) -> dict[str, str]:
    """Source column name -> canonical name, for renaming."""
    overrides = column_map or {}
    unknown = sorted(set(overrides) - set(CANONICAL_COLUMNS))
    if unknown:
        raise FeedError(f"column_map keys {unknown} are not canonical columns {list(CANONICAL_COLUMNS)}")
    by_folded: dict[str, str] = {}
    for column in found:
        by_folded.setdefault(_fold(column), column)

    renames: dict[str, str] = {}
    missing: list[str] = []
    for canonical in CANONICAL_COLUMNS:
        candidates = [overrides[canonical]] if canonical in overrides else DEFAULT_ALIASES[canonical]
        source = next((by_folded[_fold(c)] for c in candidates if _fold(c) in by_folded), None)
        if source is None:
            missing.append(f"{canonical} (mapped to {overrides[canonical]!r})" if canonical in overrides else canonical)
        elif source in renames:
            raise FeedError(f"column {source!r} matches both {renames[source]} and {canonical}; set column_map")
        else:
            renames[source] = canonical
    if missing:
        raise FeedError(f"missing required columns: {', '.join(missing)}; columns found: {found}")
    return renames


class FileFeed:
    """Bars from a CSV or Parquet file, read in chunks of ``chunk_rows`` rows."""

    def __init__(self, path: str | Path, column_map: dict[str, str] | None = None, chunk_rows: int = 50_000):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.name = f"file:{self.path.name}"
        lower = self.path.name.lower()
        if lower.endswith(_CSV_SUFFIXES):
            self._parquet = False
            try:
                found = list(pd.read_csv(self.path, nrows=0).columns)
            except pd.errors.EmptyDataError:
                found = []
        elif lower.endswith(_PARQUET_SUFFIXES):
            self._parquet = True
            found = pq.ParquetFile(self.path).schema_arrow.names
        else:
            raise FeedError(f"{self.path}: not a {' / '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)} file")
        # Resolved up front so a bad file fails when the feed is built, not mid-ingest.
        self._renames = _resolve_columns(found, column_map)

    def batches(self) -> Iterator[pd.DataFrame]:
        columns = list(self._renames)
        if self._parquet:
            parquet = pq.ParquetFile(self.path)
            chunks = (b.to_pandas() for b in parquet.iter_batches(batch_size=self.chunk_rows, columns=columns))
        else:
            chunks = pd.read_csv(
                self.path, dtype=str, keep_default_na=False, usecols=columns, chunksize=self.chunk_rows
            )
        for chunk in chunks:
            if not chunk.empty:
                yield chunk.rename(columns=self._renames)[list(CANONICAL_COLUMNS)]


class ExecFileFeed:
    """Execution reports from a CSV, Parquet or JSON-lines file, values as received."""

    def __init__(self, path: str | Path, chunk_rows: int = 50_000):
        self.path = Path(path)
        self.chunk_rows = chunk_rows
        self.name = f"file:{self.path.name}"
        lower = self.path.name.lower()
        if lower.endswith(_JSONL_SUFFIXES):
            self._format = "jsonl"
            return
        if lower.endswith(_CSV_SUFFIXES):
            self._format = "csv"
            try:
                found = list(pd.read_csv(self.path, nrows=0).columns)
            except pd.errors.EmptyDataError:
                found = []
        elif lower.endswith(_PARQUET_SUFFIXES):
            self._format = "parquet"
            found = pq.ParquetFile(self.path).schema_arrow.names
        else:
            suffixes = _CSV_SUFFIXES + _PARQUET_SUFFIXES + _JSONL_SUFFIXES
            raise FeedError(f"{self.path}: not a {' / '.join(suffixes)} file")
        missing = [name for name in REQUIRED_EXEC_FIELDS if name not in found]
        if missing:
            raise FeedError(f"{self.path}: missing required columns: {', '.join(missing)}; columns found: {found}")
        self._columns = [name for name in EXEC_FIELDS if name in found]

    def batches(self) -> Iterator[pd.DataFrame]:
        if self._format == "jsonl":
            chunks = self._json_chunks()
        elif self._format == "parquet":
            parquet = pq.ParquetFile(self.path)
            chunks = (b.to_pandas() for b in parquet.iter_batches(batch_size=self.chunk_rows, columns=self._columns))
        else:
            chunks = pd.read_csv(self.path, dtype=str, keep_default_na=False, usecols=self._columns,
                                 chunksize=self.chunk_rows)
        for chunk in chunks:
            if not chunk.empty:
                yield chunk[[name for name in EXEC_FIELDS if name in chunk.columns]]

    def _json_chunks(self) -> Iterator[pd.DataFrame]:
        records: list[dict] = []
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    # Numbers (and NaN/Infinity) as their text: Decimal parsing stays exact.
                    record = json.loads(line, parse_float=str, parse_int=str, parse_constant=str)
                except json.JSONDecodeError as err:
                    raise FeedError(f"{self.path}:{number}: not JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise FeedError(f"{self.path}:{number}: not a JSON object")
                records.append(record)
                if len(records) == self.chunk_rows:
                    yield pd.DataFrame(records, dtype=object)
                    records = []
        if records:
            yield pd.DataFrame(records, dtype=object)


def _ts_groups(batches: Iterable[pd.DataFrame]) -> Iterator[tuple[np.datetime64, pd.DataFrame]]:
    """(bar ts, rows) per distinct ts. Rows within a chunk are regrouped by ts;
    the last group of a chunk is held back because the next chunk may continue
    it. A row whose ts does not parse joins the group of the row before it (the
    first group if it leads the feed)."""
    held: pd.DataFrame | None = None
    held_stamps = np.array([], dtype="datetime64[us]")
    for chunk in batches:
        if chunk.empty:
            continue
        with warnings.catch_warnings():
            # A leading unparseable value makes pandas warn that it parses element by element.
            warnings.simplefilter("ignore", UserWarning)
            parsed = pd.to_datetime(chunk["ts"], utc=True, errors="coerce").to_numpy(dtype="datetime64[us]")
        if held is not None:
            chunk = pd.concat([held, chunk], ignore_index=True)
            parsed = np.concatenate([held_stamps, parsed])
        stamps = pd.Series(parsed).ffill().bfill().to_numpy()
        if np.isnat(stamps).all():  # nothing parseable yet: hold the rows until a ts turns up
            held, held_stamps = chunk, stamps
            continue
        order = np.argsort(stamps, kind="stable")
        chunk, stamps = chunk.take(order), stamps[order]
        starts = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
        for begin, end in zip(starts[:-1], starts[1:]):
            yield stamps[begin], chunk.iloc[begin:end].reset_index(drop=True)
        held, held_stamps = chunk.iloc[starts[-1]:], stamps[starts[-1]:]
    if held is not None:
        yield held_stamps[0], held.reset_index(drop=True)


def paced(
    feed_batches: Iterable[pd.DataFrame],
    speed: float | None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[pd.DataFrame]:
    """Replay bars as a live feed: one frame per bar timestamp, released when
    ``(ts - first ts) / speed`` seconds have passed since the first (speed=60
    plays one minute of bars per second). ``speed`` None or <= 0 passes the
    chunks through unchanged.

    Input should be in time order, as a live feed would deliver it: a ts earlier
    than one already released is yielded at once. Gaps (overnight, weekends) are
    waited out at the same rate.
    """
    if speed is None or speed <= 0:
        yield from feed_batches
        return
    origin: tuple[np.datetime64, float] | None = None
    for stamp, group in _ts_groups(feed_batches):
        if np.isnat(stamp):  # the whole feed had no parseable ts
            yield group
            continue
        if origin is None:
            # Every bar is due relative to the first, so time the consumer spends between bars does not add up as drift.
            origin = (stamp, clock())
        else:
            delay = origin[1] + (stamp - origin[0]) / np.timedelta64(1, "s") / speed - clock()
            if delay > 0:
                sleep(delay)
        yield group
