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
empty strings); bytes that are not UTF-8 are kept (decoded with
``surrogateescape``) for the validator to refuse the record they are in, and a
row with more or fewer cells than the header is passed on as one malformed
record with its raw text. Parquet values keep their Parquet types (integer
columns with nulls stay integers, a NaN in a float column arrives as the text
``nan``, distinct from a null); a row group that cannot be decoded is passed on
as one malformed record naming it and the rows lost, and the other row groups
are read as usual. A file that cannot be opened at all, or lacks a required
column, raises ``FeedError`` naming the file and the columns expected. Source
columns are
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
parse exactly as Decimals. A line that is not a JSON object (or not UTF-8
outside its strings) is passed on as one malformed record with its raw text;
the rest of the file is read as usual.

Malformed records carry the error under ``validation.MALFORMED`` and the raw
text under ``validation.RAW_TEXT``; the validators dead-letter them as
``MALFORMED_RECORD``.
"""
from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.execs import EXEC_FIELDS, REQUIRED as REQUIRED_EXEC_FIELDS
from ingest.synthetic import generate_bars
from ingest.validation import MALFORMED, RAW_TEXT, parse_timestamps

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
# An over-long id must reach the validator (refused as TEXT_TOO_LONG, its text
# kept) instead of failing the csv module's default 128 KiB field limit; a
# process-wide setting, as the csv module has no other.
csv.field_size_limit(max(csv.field_size_limit(), 64 << 20))
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
        raise FeedError(f"missing required columns: {', '.join(missing)}; expected {', '.join(CANONICAL_COLUMNS)}"
                        f" (or an alias: docs/ingest.md, or --map canonical=source); columns found: {found}")
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
            found = _csv_header(self.path)
        elif lower.endswith(_PARQUET_SUFFIXES):
            self._parquet = True
            found = _parquet_columns(self.path)
        else:
            raise FeedError(f"{self.path}: not a {' / '.join(_CSV_SUFFIXES + _PARQUET_SUFFIXES)} file")
        # Resolved up front so a bad file fails when the feed is built, not mid-ingest.
        try:
            self._renames = _resolve_columns(found, column_map)
        except FeedError as err:
            raise FeedError(f"{self.path}: {err}") from None

    def batches(self) -> Iterator[pd.DataFrame]:
        columns = list(self._renames)
        if self._parquet:
            chunks = _parquet_chunks(self.path, columns, self.chunk_rows)
        else:
            chunks = _csv_chunks(self.path, columns, self.chunk_rows)
        for chunk in chunks:
            if not chunk.empty:
                yield chunk.rename(columns=self._renames)[list(CANONICAL_COLUMNS) + _malformed_columns(chunk)]


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
            found = _csv_header(self.path)
        elif lower.endswith(_PARQUET_SUFFIXES):
            self._format = "parquet"
            found = _parquet_columns(self.path)
        else:
            suffixes = _CSV_SUFFIXES + _PARQUET_SUFFIXES + _JSONL_SUFFIXES
            raise FeedError(f"{self.path}: not a {' / '.join(suffixes)} file")
        missing = [name for name in REQUIRED_EXEC_FIELDS if name not in found]
        if missing:
            raise FeedError(f"{self.path}: missing required columns: {', '.join(missing)}; expected"
                            f" {', '.join(REQUIRED_EXEC_FIELDS)} (see docs/ingest.md); columns found: {found}")
        self._columns = [name for name in EXEC_FIELDS if name in found]

    def batches(self) -> Iterator[pd.DataFrame]:
        if self._format == "jsonl":
            chunks = self._json_chunks()
        elif self._format == "parquet":
            chunks = _parquet_chunks(self.path, self._columns, self.chunk_rows)
        else:
            chunks = _csv_chunks(self.path, self._columns, self.chunk_rows)
        for chunk in chunks:
            if not chunk.empty:
                yield chunk[[name for name in EXEC_FIELDS if name in chunk.columns] + _malformed_columns(chunk)]

    def _json_chunks(self) -> Iterator[pd.DataFrame]:
        records: list[dict] = []
        # utf-8-sig: a leading byte-order mark is not part of the first record.
        with self.path.open(encoding="utf-8-sig", errors="surrogateescape") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    # Numbers (and NaN/Infinity) as their text: Decimal parsing stays exact.
                    record = json.loads(line, parse_float=str, parse_int=str, parse_constant=str)
                    problem = None if isinstance(record, dict) else "not a JSON object"
                except json.JSONDecodeError as err:
                    problem = f"not JSON ({err.msg} at column {err.colno})"
                except RecursionError:
                    problem = "not JSON (nested too deeply)"
                if problem is not None:
                    record = {MALFORMED: f"{self.path.name}:{number}: {problem}", RAW_TEXT: line.rstrip("\r\n")}
                records.append(record)
                if len(records) == self.chunk_rows:
                    yield pd.DataFrame(records, dtype=object)
                    records = []
        if records:
            yield pd.DataFrame(records, dtype=object)


def _malformed_columns(chunk: pd.DataFrame) -> list[str]:
    return [name for name in (MALFORMED, RAW_TEXT) if name in chunk.columns]


def _open_csv(path: Path) -> IO[str]:
    # utf-8-sig drops a byte-order mark; surrogateescape keeps bytes that are not UTF-8 for the validator.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="surrogateescape", newline="")
    return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")


def _csv_header(path: Path) -> list[str]:
    try:
        with _open_csv(path) as handle:
            return next(csv.reader(handle), [])
    except (OSError, EOFError, csv.Error) as err:  # unreadable, or a .gz that is not gzip
        raise FeedError(f"{path}: cannot read the CSV header ({err})") from None


def _parquet_columns(path: Path) -> list[str]:
    try:
        return pq.ParquetFile(path).schema_arrow.names
    except (OSError, pa.ArrowException) as err:
        raise FeedError(f"{path}: not a readable Parquet file ({err})") from None


def _csv_chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The named columns as strings, exactly as written. Read with the csv
    module rather than pandas: a NUL, a byte that is not UTF-8 or a row with too
    many cells must cost that row only, not the file."""
    with _open_csv(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        width = len(header)
        positions = [header.index(name) for name in columns]
        rows: list[list[str]] = []
        malformed: dict[int, tuple[str, str]] = {}  # row in chunk -> (error, raw text)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as err:  # the reader goes on with the next line
                cells, problem = [], (f"{path.name}:{reader.line_num}: {err}", "")
            else:
                problem = (f"{path.name}:{reader.line_num}: {len(cells)} cells, the header has {width}",
                           ",".join(cells)) if cells and len(cells) != width else None
            if problem is not None:
                malformed[len(rows)] = problem
                rows.append([""] * len(columns))
            elif cells:  # not a blank line
                rows.append([cells[i] for i in positions])
            if len(rows) == chunk_rows:
                yield _csv_frame(rows, columns, malformed)
                rows, malformed = [], {}
        if rows:
            yield _csv_frame(rows, columns, malformed)


def _csv_frame(rows: list[list[str]], columns: list[str], malformed: dict[int, tuple[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    if malformed:
        for name, part in ((MALFORMED, 0), (RAW_TEXT, 1)):
            frame[name] = pd.Series({row: problem[part] for row, problem in malformed.items()},
                                    index=frame.index, dtype=object)
    return frame


def _parquet_chunks(path: Path, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Row group by row group: one that cannot be decoded costs its own rows only."""
    reader = pq.ParquetFile(path)
    for group in range(reader.num_row_groups):
        batches = reader.iter_batches(batch_size=chunk_rows, row_groups=[group], columns=columns)
        read = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (OSError, pa.ArrowException) as err:
                lost = reader.metadata.row_group(group).num_rows - read
                detail = " ".join("".join(c if c.isprintable() else " " for c in str(err)).split())
                problem = f"{path.name}: row group {group}: {lost} row(s) from row {read} unreadable ({detail})"
                yield pd.DataFrame([{**dict.fromkeys(columns), MALFORMED: problem, RAW_TEXT: ""}], dtype=object)
                break
            read += batch.num_rows
            yield _parquet_frame(batch)


def _parquet_frame(batch: pa.RecordBatch) -> pd.DataFrame:
    # An integer column with nulls stays integers (object), not floats: 7 must not become the id '7.0'.
    frame = batch.to_pandas(integer_object_nulls=True)
    for name, column in zip(batch.schema.names, batch.columns):
        if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
            # pandas reads a null as NaN too: a real NaN goes on as its text, to be refused as non-finite.
            frame[name] = pd.Series(["nan" if isinstance(v, float) and v != v else v for v in column.to_pylist()],
                                    index=frame.index, dtype=object)
    return frame


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
            parsed = parse_timestamps(chunk["ts"]).to_numpy(dtype="datetime64[us]")
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
