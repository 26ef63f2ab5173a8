"""Change feeds: the one place in Python where the engines' change interfaces differ.

The execution adapter follows a relation (signals, orders to send) through a
`ChangeFeed`, whatever the target:

* embedded PostgreSQL: `PostgresPollingFeed` polls by a unique, monotonic key,
  woken early by LISTEN/NOTIFY from a trigger on the raw table under the view;
* RisingWave: `RisingWaveSubscriptionFeed` reads a subscription cursor;
* Materialize: `MaterializeSubscribeFeed` reads SUBSCRIBE through DECLARE/FETCH.

Delivery is at least once: process a batch, then persist `feed.position` with
`FeedPositionStore.save`, and reopen from `load()`. docs/changefeed.md has what
each engine guarantees and what was verified where.
"""
from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from typing import Any, Callable, Protocol, Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from tradeflow import engine
from tradeflow.config import Settings

ConnFactory = Callable[[], psycopg.Connection]

# Position of a change inside an initial snapshot. Neither engine can resume in
# the middle of one, so reopening from it takes the whole snapshot again.
SNAPSHOT_POSITION = json.dumps({"snapshot": True})


@dataclass(frozen=True)
class Change:
    position: str             # opaque; reopening a feed from it delivers what came after this change
    op: str                   # 'insert' | 'delete' | 'update_insert' | 'update_delete'
    row: dict[str, object]


class ChangeFeed(Protocol):
    @property
    def position(self) -> str | None:
        """Where a reopened feed resumes after everything returned so far (None: from the start)."""

    def fetch(self, max_rows: int, timeout: float) -> list[Change]:
        """Up to max_rows changes after the current position, waiting up to `timeout` s for the first."""

    def close(self) -> None: ...


class _Closing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _identifier(dotted: str) -> sql.Identifier:
    return sql.Identifier(*dotted.split("."))


def _interval(seconds: float) -> sql.Literal:
    # Whole seconds: the only form both engines document for FETCH timeouts
    # (RisingWave's interval parser has no sub-second unit).
    return sql.Literal(f"{math.ceil(seconds)}s")


# --------------------------------------------------------------------------
# Position persistence
# --------------------------------------------------------------------------


class FeedPositionStore:
    """A consumer's last persisted position in the raw table adapter_feed_position.

    Append-only, no key and no upsert, so the table is the same on the three
    engines: the consumer's row with the latest updated_at wins. The table is
    found through the connection's search_path (engine.connect sets it).
    save() runs in the caller's transaction when the connection is not in
    autocommit, so a consumer can commit its own writes and the position together.
    """

    def __init__(self, conn: psycopg.Connection, consumer: str, *, flush: bool = False) -> None:
        self._conn = conn
        self.consumer = consumer
        self._flush = flush
        self._last_saved: datetime | None = None

    def load(self) -> str | None:
        row = self._conn.execute(
            'SELECT feed_position FROM adapter_feed_position WHERE consumer = %s ORDER BY updated_at DESC LIMIT 1',
            (self.consumer,)).fetchone()
        return row[0] if row else None

    def save(self, position: str) -> None:
        now = datetime.now(timezone.utc)
        # Two saves within one clock tick must still be told apart by updated_at.
        if self._last_saved is not None and now <= self._last_saved:
            now = self._last_saved + timedelta(microseconds=1)
        self._conn.execute(
            'INSERT INTO adapter_feed_position (consumer, feed_position, updated_at) VALUES (%s, %s, %s)',
            (self.consumer, position, now))
        if self._flush:
            # RisingWave: make the row durable and readable now, not at the next barrier.
            self._conn.execute("FLUSH")
        self._last_saved = now


def position_store(settings: Settings, conn: psycopg.Connection, consumer: str) -> FeedPositionStore:
    return FeedPositionStore(conn, consumer, flush=settings.target == "risingwave")


# --------------------------------------------------------------------------
# PostgreSQL (embedded): poll by key, woken by NOTIFY
# --------------------------------------------------------------------------
def notify_channel(relation: str) -> str:
    return f"tradeflow_{relation}"


def install_notify_trigger(conn: psycopg.Connection, schema: str, table: str, channel: str) -> None:
    """NOTIFY `channel` after each INSERT statement into a raw table (idempotent).

    Once per statement, not per row: the notification only wakes feeds, which
    then read the rows themselves."""
    function = sql.Identifier(schema, "tradeflow_feed_notify")
    conn.execute(sql.SQL(
        "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_notify(TG_ARGV[0], ''); RETURN NULL; END $$").format(function))
    conn.execute(sql.SQL(
        "CREATE OR REPLACE TRIGGER {} AFTER INSERT ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}({})").format(
        sql.Identifier(f"{channel}_notify"), sql.Identifier(schema, table), function, sql.Literal(channel)))


def _json_value(value: object) -> object:
    # Rendered as text, a position value goes back to the server as an
    # untyped parameter, which takes the order column's type.
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"order column value {value!r} ({type(value).__name__}) cannot be part of a position")


class PostgresPollingFeed(_Closing):
    """Rows of an append-only relation in `order_by` order; every change is an 'insert'.

    `order_by` must be unique and NOT NULL, and rows must become visible in
    that order: a row committed after a larger key was read is never
    delivered (see docs/changefeed.md). The position is the JSON list of the
    last row's order-column values; the next read is `WHERE (keys) > (position)`.
    """

    def __init__(self, conn_factory: ConnFactory, schema: str, relation: str, order_by: Sequence[str], *,
                 consumer: str, start_position: str | None = None, channel: str | None = None,
                 poll_interval: float = 1.0, from_now: bool = False) -> None:
        if not order_by:
            raise ValueError("order_by: at least one column")
        self._poll_interval = poll_interval
        self._position = start_position
        self._after = json.loads(start_position) if start_position else None
        self._order_by = tuple(order_by)
        keys = sql.SQL(", ").join(map(sql.Identifier, self._order_by))
        source = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(relation))
        tail = sql.SQL(" ORDER BY {} LIMIT %s").format(keys)
        self._first_query = source + tail
        self._next_query = source + sql.SQL(" WHERE ({}) > ({})").format(
            keys, sql.SQL(", ").join([sql.Placeholder()] * len(self._order_by))) + tail
        self._conn = conn_factory()
        # Notifications arrive between transactions, and each poll needs a fresh snapshot.
        self._conn.autocommit = True
        # Names the session in pg_stat_activity.
        self._conn.execute(sql.SQL("SET application_name = {}").format(sql.Literal(f"tradeflow-feed-{consumer}")))
        self._conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel or notify_channel(relation))))
        if from_now and start_position is None:  # skip the rows already there: begin after the last one
            last = self._conn.execute(sql.SQL("SELECT {} FROM {}.{} ORDER BY {} LIMIT 1").format(
                keys, sql.Identifier(schema), sql.Identifier(relation),
                sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in self._order_by))).fetchone()
            if last is not None:
                self._after = list(last)
                self._position = json.dumps(self._after, default=_json_value)

    @property
    def position(self) -> str | None:
        return self._position

    def fetch(self, max_rows: int, timeout: float) -> list[Change]:
        deadline = time.monotonic() + timeout
        while True:
            # A notification is sent after its commit: whatever it announces is
            # visible to the query below, so pending ones can be dropped.
            self._wait_for_notify(0)
            rows = self._read(max_rows)
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return self._changes(rows)
            self._wait_for_notify(min(self._poll_interval, remaining))

    def close(self) -> None:
        self._conn.close()

    def _wait_for_notify(self, timeout: float) -> None:
        for _ in self._conn.notifies(timeout=timeout, stop_after=1 if timeout else None):
            pass

    def _read(self, max_rows: int) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cur:
            if self._after is None:
                cur.execute(self._first_query, (max_rows,))
            else:
                cur.execute(self._next_query, (*self._after, max_rows))
            return cur.fetchall()

    def _changes(self, rows: list[dict[str, Any]]) -> list[Change]:
        changes = []
        for row in rows:
            self._after = [row[c] for c in self._order_by]
            self._position = json.dumps(self._after, default=_json_value)
            changes.append(Change(self._position, "insert", row))
        return changes


# --------------------------------------------------------------------------
# RisingWave: subscription cursor
# --------------------------------------------------------------------------
_RISINGWAVE_OPS = {
    # Current releases name the op; the first ones (PR #15180) numbered it.
    "insert": "insert", "delete": "delete", "updateinsert": "update_insert", "updatedelete": "update_delete",
    1: "insert", 2: "delete", 3: "update_insert", 4: "update_delete",
}


def _risingwave_op(value: object) -> str:
    key = value.lower().replace("_", "") if isinstance(value, str) else value
    try:
        return _RISINGWAVE_OPS[key]
    except KeyError:
        raise ValueError(f"unknown RisingWave op {value!r}") from None


class RisingWaveSubscriptionFeed(_Closing):
    """Changes of a RisingWave table or materialized view through `<consumer>_sub`.

    The subscription outlives the feed (it keeps `retention` of history for
    resuming); drop it when the consumer is retired. The cursor lives in this
    feed's session. Position: {"rw_timestamp": t, "seen": k}, the k-th change
    of the epoch committed at t (ms). `SINCE t` is inclusive (first epoch at or
    after t) and an epoch's rows come back in primary-key order, so a reopen
    declares `SINCE t` and drops the first k rows of epoch t: no duplicate, no
    gap, even when a batch ended inside an epoch. Each epoch has its own
    millisecond (RisingWave's Epoch::next waits for the clock to move on).
    Rows of a FULL snapshot carry no rw_timestamp: their position is
    SNAPSHOT_POSITION.
    """

    def __init__(self, conn_factory: ConnFactory, relation: str, consumer: str, retention: str = "1D", *,
                 start_position: str | None = None) -> None:
        state = json.loads(start_position) if start_position else {}
        self._epoch: int | None = state.get("rw_timestamp")
        self._seen: int = state.get("seen", 0)
        self._skip = self._seen if self._epoch is not None else 0
        self._position = start_position
        *schema, name = relation.split(".")
        # FETCH output may name columns `<relation>.<column>` (as in RisingWave's docs).
        self._column_prefix = f"{name}."
        subscription = sql.Identifier(*schema, f"{consumer}_sub")
        self._cursor = sql.Identifier(f"{consumer}_cur")
        start = sql.SQL("FULL") if self._epoch is None else sql.SQL("SINCE {}").format(sql.Literal(int(self._epoch)))
        self._conn = conn_factory()
        self._conn.autocommit = True
        with self._conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SUBSCRIPTION IF NOT EXISTS {} FROM {} WITH (retention = {})").format(
                subscription, _identifier(relation), sql.Literal(retention)))
            cur.execute(sql.SQL("DECLARE {} SUBSCRIPTION CURSOR FOR {} {}").format(self._cursor, subscription, start))

    @property
    def position(self) -> str | None:
        return self._position

    def fetch(self, max_rows: int, timeout: float) -> list[Change]:
        deadline = time.monotonic() + timeout
        changes = self._decode(self._fetch(max_rows))
        while not changes and (remaining := deadline - time.monotonic()) > 0:
            # `FETCH n ... WITH (timeout)` waits until n rows or the timeout: block
            # for one row only, then take what else is ready without waiting.
            rows = self._fetch(1, remaining)
            if rows and max_rows > 1:
                rows += self._fetch(max_rows - 1)
            changes = self._decode(rows)
        return changes

    def close(self) -> None:
        self._conn.close()

    def _fetch(self, count: int, timeout: float | None = None) -> list[dict[str, Any]]:
        statement = sql.SQL("FETCH {} FROM {}").format(sql.Literal(count), self._cursor)
        if timeout is not None:
            statement += sql.SQL(" WITH (timeout = {})").format(_interval(timeout))
        with self._conn.cursor() as cur:
            cur.execute(statement)
            names = [c.name.removeprefix(self._column_prefix) for c in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def _decode(self, rows: list[dict[str, Any]]) -> list[Change]:
        changes = []
        for row in rows:
            op = _risingwave_op(row.pop("op"))
            epoch = row.pop("rw_timestamp")
            if epoch is None:
                position = SNAPSHOT_POSITION
            else:
                epoch = int(epoch)
                if epoch != self._epoch:
                    self._epoch, self._seen, self._skip = epoch, 0, 0
                elif self._skip:
                    self._skip -= 1  # delivered before the reopen
                    continue
                self._seen += 1
                position = json.dumps({"rw_timestamp": epoch, "seen": self._seen})
            self._position = position
            changes.append(Change(position, op, row))
        return changes


# --------------------------------------------------------------------------
# Materialize: SUBSCRIBE through DECLARE / FETCH
# --------------------------------------------------------------------------
class MaterializeSubscribeFeed(_Closing):
    """Changes of a Materialize relation from `SUBSCRIBE ... WITH (PROGRESS)`.

    Position: {"frontier": f}, every update at a time < f delivered. A reopen
    declares `SNAPSHOT false AS OF f - 1`: AS OF is inclusive, but without a
    snapshot only times strictly after AS OF are emitted, so f - 1 yields
    exactly the times >= f. A progress row at p says no update will come at
    a time < p: it advances the position without a change. mz_diff = +n/-n
    becomes n inserts/deletes. A change whose time may still get updates gets
    its own time as frontier (a reopen re-delivers that time: at least once);
    the last change of a finished time gets time + 1. Without a start position
    the feed starts with a snapshot at the AS OF Materialize picks; until that
    time is finished the position is SNAPSHOT_POSITION. Resuming needs the
    relation's history: create it WITH (RETAIN HISTORY FOR '...').
    """

    def __init__(self, conn_factory: ConnFactory, relation: str, consumer: str, *,
                 start_position: str | None = None) -> None:
        frontier = json.loads(start_position).get("frontier") if start_position else None
        self._position = start_position
        self._closed: int | None = frontier      # all updates at times < _closed have been received
        self._snapshot_at: int | None = None     # AS OF of the initial snapshot, once known
        self._in_snapshot = frontier is None
        self._pending: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._cursor = sql.Identifier(f"{consumer}_cur")
        if frontier is None:
            start = sql.SQL("WITH (PROGRESS, SNAPSHOT true)")
        else:
            start = sql.SQL("WITH (PROGRESS, SNAPSHOT false) AS OF {}").format(sql.Literal(int(frontier) - 1))
        self._conn = conn_factory()
        self._conn.autocommit = True
        with self._conn.cursor() as cur:
            # A SUBSCRIBE cursor lives in a transaction, one DECLARE per transaction.
            cur.execute("BEGIN")
            cur.execute(sql.SQL("DECLARE {} CURSOR FOR SUBSCRIBE TO {} {}").format(
                self._cursor, _identifier(relation), start))

    @property
    def position(self) -> str | None:
        return self._position

    def fetch(self, max_rows: int, timeout: float) -> list[Change]:
        deadline = time.monotonic() + timeout
        if len(self._pending) < max_rows:
            self._receive(max_rows - len(self._pending), 0)
        while not self._pending and (remaining := deadline - time.monotonic()) > 0:
            self._receive(max_rows, remaining)
        return self._emit(max_rows)

    def close(self) -> None:
        self._conn.close()

    def _receive(self, count: int, timeout: float) -> None:
        with self._conn.cursor() as cur:
            cur.execute(sql.SQL("FETCH {} {} WITH (timeout = {})").format(
                sql.Literal(count), self._cursor, _interval(timeout)))
            names = [c.name for c in cur.description]
            rows = [dict(zip(names, row)) for row in cur.fetchall()]
        for row in rows:
            at = int(row.pop("mz_timestamp"))
            progressed = row.pop("mz_progressed")
            diff = row.pop("mz_diff")
            if self._in_snapshot and self._snapshot_at is None:
                self._snapshot_at = at  # the first row is a progress row at the AS OF
            # Timestamps never go back: nothing more will come before this one.
            self._closed = at if self._closed is None else max(self._closed, at)
            if not progressed:
                op = "insert" if diff > 0 else "delete"
                self._pending.extend((at, op, dict(row)) for _ in range(abs(diff)))

    def _emit(self, max_rows: int) -> list[Change]:
        changes = []
        while self._pending and len(changes) < max_rows:
            at, op, row = self._pending.popleft()
            finished = at < self._closed and not (self._pending and self._pending[0][0] == at)
            changes.append(Change(self._encode(at + 1 if finished else at), op, row))
        if self._pending:
            self._position = changes[-1].position
        elif self._closed is not None:
            self._position = self._encode(self._closed)
        return changes

    def _encode(self, frontier: int) -> str:
        if self._snapshot_at is not None and frontier <= self._snapshot_at:
            return SNAPSHOT_POSITION
        return json.dumps({"frontier": frontier})


# --------------------------------------------------------------------------
def wake_on_insert(settings: Settings, conn: psycopg.Connection, table: str, relation: str) -> None:
    """Make inserts into raw `table` wake the feeds following `relation`. Only
    the PostgreSQL feed polls; the streaming engines push changes themselves."""
    if settings.target == "embedded":
        install_notify_trigger(conn, settings.schema, table, notify_channel(relation))


def open_feed(settings: Settings, relation: str, consumer: str, *, order_by: Sequence[str] = (),
              start_position: str | None = None, poll_interval: float = 1.0, retention: str = "1D",
              from_now: bool = False) -> ChangeFeed:
    """The feed for settings.target on `relation` in settings.schema.

    order_by, poll_interval and from_now (a consumer without a saved position
    starts after the rows already there, not at the first) apply to the
    embedded engine, retention to RisingWave; the streaming engines' first
    read is their retained snapshot."""
    def connect() -> psycopg.Connection:
        return engine.connect(settings)

    if settings.target == "embedded":
        return PostgresPollingFeed(connect, settings.schema, relation, order_by, consumer=consumer,
                                   start_position=start_position, poll_interval=poll_interval, from_now=from_now)
    qualified = f"{settings.schema}.{relation}"
    if settings.target == "risingwave":
        return RisingWaveSubscriptionFeed(connect, qualified, consumer, retention, start_position=start_position)
    return MaterializeSubscribeFeed(connect, qualified, consumer, start_position=start_position)
