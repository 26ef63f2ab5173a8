"""Batched multi-row INSERTs, one table per statement: the write shape all
three engines accept (RisingWave has no COPY FROM STDIN, Materialize allows
one table per write transaction)."""
from __future__ import annotations

import io
import queue
import threading
from functools import lru_cache
from types import TracebackType
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv


def insert_rows(conn: psycopg.Connection, table: str, columns: Sequence[str],
                rows: Iterable[Sequence[object]], batch_rows: int,
                constants: Mapping[str, object] | None = None) -> int:
    """Insert rows in statements of at most batch_rows rows; returns the count.

    `constants` are columns with one value for every row (ingest metadata):
    sent once per statement instead of once per row.
    """
    constants = dict(constants or {})
    # RawCursor takes $n placeholders as they are: psycopg would otherwise
    # re-parse the long statement text on every batch.
    cursor = psycopg.RawCursor(conn)
    shape = (table, tuple(columns), tuple(constants))
    total = 0
    batch: list[object] = list(constants.values())
    full = len(batch) + batch_rows * len(columns)
    # Pipeline mode: the server inserts one batch while we build the next.
    with conn.pipeline():
        for row in rows:
            batch.extend(row)
            if len(batch) == full:
                cursor.execute(_statement(*shape, batch_rows), batch, prepare=True, binary=False)
                total += batch_rows
                batch = list(constants.values())
        count = (len(batch) - len(constants)) // len(columns)
        if count:
            cursor.execute(_statement(*shape, count), batch, binary=False)
            total += count
    return total


@lru_cache(maxsize=64)
def _statement(table: str, columns: tuple[str, ...], constants: tuple[str, ...], rows: int) -> str:
    shared = [f"${i + 1}" for i in range(len(constants))]
    first, width = len(constants) + 1, len(columns)
    values = ", ".join(
        "(" + ", ".join([f"${first + r * width + c}" for c in range(width)] + shared) + ")" for r in range(rows)
    )
    return f'INSERT INTO "{table}" ({", ".join(columns + constants)}) VALUES {values}'


def copy_rows(conn: psycopg.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """COPY rows into a table in one stream; returns the count. The bulk path of
    the embedded engine (backtests), which RisingWave has no COPY FROM STDIN for."""
    count = 0
    with conn.cursor() as cur, cur.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    return count


COPY_CHUNK_ROWS = 250_000


def copy_frames(conn: psycopg.Connection, table: str, columns: Sequence[str], frames: Iterable[pd.DataFrame]) -> int:
    """COPY DataFrames (these columns, named as the table's) as CSV written by Arrow:
    millions of rows without a Python call per row, a chunk (COPY_CHUNK_ROWS) in
    memory at a time when `frames` is a generator. Floats are written as their
    shortest round-trip text, the number Decimal(repr(x)) holds."""
    options = pacsv.WriteOptions(include_header=False)
    listed = ", ".join(f'"{c}"' for c in columns)
    rows = 0
    # times go as UTC wall clock read in a UTC session: Arrow writes a zoned time about 25x
    # slower than a naive one (0.9 s a million), and a bar has two
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL TimeZone TO 'UTC'")
        with cur.copy(f'COPY "{table}" ({listed}) FROM STDIN (FORMAT csv)') as copy:
            for frame in frames:
                buffer = io.BytesIO()
                pacsv.write_csv(_utc_wall_clock(pa.Table.from_pandas(frame[list(columns)], preserve_index=False)),
                                buffer, write_options=options)
                copy.write(buffer.getbuffer())
                rows += len(frame)
    return rows


def _utc_wall_clock(table: pa.Table) -> pa.Table:
    """Zoned timestamp columns as naive ones holding their UTC wall clock (Arrow keeps zoned
    times as UTC instants: dropping the zone keeps the values)."""
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            table = table.set_column(i, field.name, table.column(i).cast(pa.timestamp(field.type.unit)))
    return table


class BackgroundCopy:
    """COPYs batches of rows (table -> rows) on a connection and a thread of its
    own, so the producer (a backtest's replay) keeps computing while the engine
    writes. At most `depth` batches wait: memory stays bounded. Leaving the
    block waits for the last batch and raises what the writer raised."""

    def __init__(self, connect: Callable[[], psycopg.Connection], columns: Mapping[str, Sequence[str]],
                 depth: int = 2) -> None:
        self._connect, self._columns = connect, columns
        self._queue: queue.Queue[dict[str, list[tuple]] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="background-copy", daemon=True)

    def __enter__(self) -> "BackgroundCopy":
        self._thread.start()
        return self

    def put(self, rows: dict[str, list[tuple]]) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(rows)

    def _run(self) -> None:
        try:
            with self._connect() as conn:
                while (rows := self._queue.get()) is not None:
                    for table, table_rows in rows.items():
                        if table_rows:
                            copy_rows(conn, table, self._columns[table], table_rows)
        except BaseException as exc:  # handed to the producer
            self._error = exc
            while self._queue.get() is not None:  # keep the producer from blocking on a full queue
                pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and exc is None:
            raise self._error
