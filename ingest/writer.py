"""Batched multi-row INSERTs, one table per statement: the write shape all
three engines accept (RisingWave has no COPY FROM STDIN, Materialize allows
one table per write transaction)."""
from __future__ import annotations

from typing import Iterable, Sequence

import psycopg
from psycopg import sql


def insert_rows(conn: psycopg.Connection, table: str, columns: Sequence[str],
                rows: Iterable[Sequence[object]], batch_rows: int) -> int:
    """Insert rows in statements of at most batch_rows rows; returns the count."""
    total = 0
    batch: list[Sequence[object]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_rows:
            total += _insert_batch(conn, table, columns, batch)
            batch = []
    if batch:
        total += _insert_batch(conn, table, columns, batch)
    return total


def _insert_batch(conn: psycopg.Connection, table: str, columns: Sequence[str],
                  batch: list[Sequence[object]]) -> int:
    row_sql = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(columns)))
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join([row_sql] * len(batch)),
    )
    params = [value for row in batch for value in row]
    # Full-size batches share one statement text: prepare it once per connection.
    conn.execute(stmt, params, prepare=True)
    return len(batch)
