"""Bar feeds: the interface every price source implements, and the file reader.

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
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

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


def resolve_columns(found: Iterable[str], column_map: dict[str, str] | None = None) -> dict[str, str]:
    """Source column name -> canonical name, for renaming."""
    found = list(found)
    by_lower: dict[str, str] = {}
    for column in found:
        by_lower.setdefault(column.strip().lower(), column)
    overrides = column_map or {}
    unknown = sorted(set(overrides) - set(CANONICAL_COLUMNS))
    if unknown:
        raise FeedError(f"column_map has non-canonical keys {unknown}; expected {list(CANONICAL_COLUMNS)}")

    renames: dict[str, str] = {}
    missing: list[str] = []
    for canonical in CANONICAL_COLUMNS:
        candidates = (overrides[canonical],) if canonical in overrides else DEFAULT_ALIASES[canonical]
        source = next((by_lower[c.strip().lower()] for c in candidates if c.strip().lower() in by_lower), None)
        if source is None:
            missing.append(canonical if canonical not in overrides else f"{canonical} (mapped to {overrides[canonical]!r})")
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
            found = pd.read_csv(self.path, nrows=0).columns
        elif lower.endswith(_PARQUET_SUFFIXES):
            self._parquet = True
            found = pq.ParquetFile(self.path).schema_arrow.names
        else:
            raise FeedError(f"{self.path}: unsupported file type; expected one of {_CSV_SUFFIXES + _PARQUET_SUFFIXES}")
        # Resolved up front so a bad file fails when the feed is built, not mid-ingest.
        self._renames = resolve_columns(found, column_map)

    def batches(self) -> Iterator[pd.DataFrame]:
        columns = list(self._renames)
        if self._parquet:
            chunks = (b.to_pandas() for b in pq.ParquetFile(self.path).iter_batches(self.chunk_rows, columns=columns))
        else:
            chunks = pd.read_csv(
                self.path, dtype=str, keep_default_na=False, usecols=columns, chunksize=self.chunk_rows
            )
        for chunk in chunks:
            if not chunk.empty:
                yield chunk.rename(columns=self._renames)[list(CANONICAL_COLUMNS)]


def _ts_groups(batches: Iterable[pd.DataFrame]) -> Iterator[tuple[np.datetime64, pd.DataFrame]]:
    """(bar ts, rows) per distinct ts. Rows within a chunk are regrouped by ts;
    the last group of a chunk is held back because the next chunk may continue
    it. A row whose ts does not parse joins the group of the row before it (the
    first group if it leads the feed)."""
    held: pd.DataFrame | None = None
    held_key: pd.Series | None = None
    for chunk in batches:
        with warnings.catch_warnings():
            # A leading unparseable value makes pandas warn that it falls back to per-element parsing.
            warnings.simplefilter("ignore", UserWarning)
            key = pd.to_datetime(chunk["ts"], utc=True, errors="coerce").reset_index(drop=True)
        chunk = chunk.reset_index(drop=True)
        if held is not None:
            chunk = pd.concat([held, chunk], ignore_index=True)
            key = pd.concat([held_key, key], ignore_index=True)
        key = key.ffill().bfill()
        if key.isna().all():  # nothing parseable yet: wait for a ts to attach these rows to
            held, held_key = chunk, key
            continue
        order = np.argsort(key.to_numpy(dtype="datetime64[ns]"), kind="stable")
        chunk, key = chunk.take(order).reset_index(drop=True), key.take(order).reset_index(drop=True)
        stamps = key.to_numpy(dtype="datetime64[ns]")
        starts = np.flatnonzero(np.r_[True, stamps[1:] != stamps[:-1]])
        for begin, end in zip(starts[:-1], starts[1:]):
            yield stamps[begin], chunk.iloc[begin:end].reset_index(drop=True)
        held, held_key = chunk.iloc[starts[-1]:], key.iloc[starts[-1]:]
    if held is not None:
        yield held_key.to_numpy(dtype="datetime64[ns]")[0], held.reset_index(drop=True)


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
    if not speed or speed <= 0:
        yield from feed_batches
        return
    origin: tuple[np.datetime64, float] | None = None
    for stamp, group in _ts_groups(feed_batches):
        if np.isnat(stamp):  # the whole feed had no parseable ts
            yield group
            continue
        if origin is None:
            # Scheduled against the first bar, not the previous one, so time the consumer spends does not accumulate as drift.
            origin = (stamp, clock())
        else:
            delay = origin[1] + (stamp - origin[0]) / np.timedelta64(1, "s") / speed - clock()
            if delay > 0:
                sleep(delay)
        yield group
