"""Change feeds (adapters/changefeed.py).

PostgreSQL: against the session's embedded engine. Each test makes its own raw
table and view (unique names, dropped afterwards) in the engine's schema, so
conftest's raw tables are left alone.

RisingWave and Materialize cannot run on this machine (no Docker engine), so
their feeds are unit-tested against a cursor-level double that records the SQL
they issue and returns scripted rows shaped as each engine's documentation
describes: this checks the statements, the op mapping, progress rows and
positions, not the engines. The `integration` tests at the end run the same
feeds against real containers and skip when no Docker engine is reachable.
"""
from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from adapters import changefeed
from adapters.changefeed import (
    SNAPSHOT_POSITION,
    Change,
    FeedPositionStore,
    MaterializeSubscribeFeed,
    RisingWaveSubscriptionFeed,
    install_notify_trigger,
    notify_channel,
    open_feed,
)
from integration.test_streaming_engines import (
    MATERIALIZE_IMAGE,
    RISINGWAVE_IMAGE,
    RISINGWAVE_READY_LOG,
    STARTUP_TIMEOUT_S,
    docker_available,
    wait_for_sql,
)
from tradeflow import engine
from tradeflow.config import Settings

T0 = datetime(2024, 3, 4, 9, 30, tzinfo=timezone.utc)
ORDER = ("ts", "id")


# --------------------------------------------------------------------------
# PostgreSQL (embedded engine)
# --------------------------------------------------------------------------
@dataclass
class Source:
    """A raw table, the view a feed follows, and a connection to write with."""
    settings: Settings
    view: str
    table: str
    conn: psycopg.Connection

    def insert(self, rows: list[tuple[int, datetime]]) -> None:
        values = sql.SQL(", ").join(
            sql.SQL("({}, {}, 'XYZ', {})").format(sql.Literal(i), sql.Literal(ts), sql.Literal(Decimal(i) / 4))
            for i, ts in rows)
        self.conn.execute(sql.SQL("INSERT INTO {}.{} (id, ts, symbol, price) VALUES ").format(
            sql.Identifier(self.settings.schema), sql.Identifier(self.table)) + values)

    def feed(self, consumer: str, start_position: str | None = None, **kwargs: Any):
        return open_feed(self.settings, self.view, consumer, order_by=ORDER, start_position=start_position, **kwargs)


@pytest.fixture
def source(engine_settings: Settings) -> Iterator[Source]:
    view = f"cf_{uuid.uuid4().hex[:10]}"
    table = f"{view}_raw"
    schema = sql.Identifier(engine_settings.schema)
    with engine.connect(engine_settings) as conn:
        conn.execute(sql.SQL("CREATE TABLE {}.{} (id BIGINT, ts TIMESTAMPTZ, symbol TEXT, price NUMERIC)").format(
            schema, sql.Identifier(table)))
        conn.execute(sql.SQL("CREATE VIEW {}.{} AS SELECT id, ts, symbol, price FROM {}.{}").format(
            schema, sql.Identifier(view), schema, sql.Identifier(table)))
        install_notify_trigger(conn, engine_settings.schema, table, notify_channel(view))
        try:
            yield Source(engine_settings, view, table, conn)
        finally:
            conn.execute(sql.SQL("DROP TABLE {}.{} CASCADE").format(schema, sql.Identifier(table)))


def minutes(ids: range) -> list[tuple[int, datetime]]:
    return [(i, T0 + timedelta(minutes=i)) for i in ids]


def ids(changes: list[Change]) -> list[int]:
    return [c.row["id"] for c in changes]


def test_fetch_in_order_then_resume_from_persisted_position(source: Source) -> None:
    source.insert(minutes(range(5, 0, -1)))  # inserted out of order, delivered by (ts, id)
    store = FeedPositionStore(source.conn, f"test-{source.view}")
    assert store.load() is None

    with source.feed(store.consumer) as feed:
        assert feed.position is None
        changes = feed.fetch(100, timeout=0)
        assert ids(changes) == [1, 2, 3, 4, 5]
        assert {c.op for c in changes} == {"insert"}
        assert changes[0].row == {"id": 1, "ts": T0 + timedelta(minutes=1), "symbol": "XYZ", "price": Decimal("0.25")}
        assert feed.position == changes[-1].position
        store.save(feed.position)
        middle = changes[2].position

    source.insert(minutes(range(6, 9)))
    with source.feed(store.consumer, store.load()) as feed:
        assert ids(feed.fetch(100, timeout=0)) == [6, 7, 8]
        assert feed.fetch(100, timeout=0) == []
    # Any change's own position resumes right after it.
    with source.feed(store.consumer, middle) as feed:
        assert ids(feed.fetch(100, timeout=0)) == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("existing", [range(1, 4), range(0)])
def test_from_now_skips_the_rows_already_there_and_resumes_normally(source: Source, existing: range) -> None:
    if existing:
        source.insert(minutes(existing))
    with source.feed("from-now", from_now=True) as feed:
        assert feed.fetch(100, timeout=0) == []
        source.insert(minutes(range(10, 12)))
        assert ids(feed.fetch(100, timeout=0)) == [10, 11]
        position = feed.position
    with source.feed("from-now", position, from_now=True) as feed:  # a saved position wins
        source.insert(minutes(range(12, 13)))
        assert ids(feed.fetch(100, timeout=0)) == [12]


def test_notify_wakes_a_blocked_fetch(source: Source) -> None:
    consumer = f"test-{source.view}"
    errors: list[BaseException] = []

    def insert_once_fetch_waits() -> None:
        # The feed's first SELECT runs inside the blocking fetch below; once it
        # has finished the feed waits for a notification. Each check is a round
        # trip to the server, which paces the loop.
        try:
            with engine.connect(source.settings) as conn:
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    waiting = conn.execute(
                        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s"
                        " AND state = 'idle' AND query LIKE 'SELECT%%'", (f"tradeflow-feed-{consumer}",)).fetchone()
                    if waiting:
                        Source(source.settings, source.view, source.table, conn).insert(minutes(range(1, 2)))
                        return
                raise TimeoutError("the feed never reached its wait")
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    # poll_interval far beyond the timeout: only the NOTIFY can end the wait early.
    with source.feed(consumer, poll_interval=60) as feed:
        inserter = threading.Thread(target=insert_once_fetch_waits)
        inserter.start()
        started = time.monotonic()
        changes = feed.fetch(10, timeout=10)
        elapsed = time.monotonic() - started
        inserter.join(timeout=10)
    assert not errors, errors
    assert ids(changes) == [1]
    assert elapsed < 3, f"fetch returned after {elapsed:.2f}s: the notification did not wake it"


def test_ties_in_ts_are_split_by_id(source: Source) -> None:
    rows = [(i, T0 + timedelta(minutes=i // 4)) for i in range(12)]  # four rows share each ts
    random.Random(7).shuffle(rows)
    source.insert(rows)
    consumer = f"test-{source.view}"
    delivered: list[Change] = []
    position = None
    # Three rows per fetch and a reopen after each batch: every boundary but
    # the last falls inside a group of equal ts.
    for _ in range(5):
        with source.feed(consumer, position) as feed:
            delivered += feed.fetch(3, timeout=0)
            position = feed.position
    assert ids(delivered) == list(range(12))
    assert [c.row["ts"] for c in delivered] == sorted(ts for _, ts in rows)


def test_batch_larger_than_max_rows_arrives_over_several_fetches(source: Source) -> None:
    source.insert(minutes(range(1, 26)))
    with source.feed(f"test-{source.view}") as feed:
        batches = [feed.fetch(10, timeout=0) for _ in range(4)]
    assert [len(b) for b in batches] == [10, 10, 5, 0]
    assert [i for b in batches for i in ids(b)] == list(range(1, 26))


def test_position_store_is_append_only_and_latest_wins(source: Source) -> None:
    first, second = FeedPositionStore(source.conn, f"a-{source.view}"), FeedPositionStore(source.conn, f"b-{source.view}")
    for position in ('["p1"]', '["p2"]', '["p3"]'):  # within microseconds of each other
        first.save(position)
    second.save('["other"]')
    assert first.load() == '["p3"]'
    assert second.load() == '["other"]'
    count = source.conn.execute("SELECT count(*) FROM adapter_feed_position WHERE consumer = %s",
                                (first.consumer,)).fetchone()[0]
    assert count == 3


# --------------------------------------------------------------------------
# RisingWave and Materialize: cursor-level double
# --------------------------------------------------------------------------
class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.description: list[SimpleNamespace] | None = None
        self._rows: list[tuple] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def execute(self, query: str | sql.Composable) -> None:
        text = query.as_string(None) if isinstance(query, sql.Composable) else query
        self.conn.executed.append(text)
        self.description, self._rows = None, []
        if match := re.match(r"FETCH (\d+)", text):
            self._rows = self.conn.take(int(match[1]))
            self.description = [SimpleNamespace(name=c) for c in self.conn.columns]

    def fetchall(self) -> list[tuple]:
        return self._rows


class FakeConnection:
    """Records every statement. `ready` scripts what the engine has ready at each FETCH:
    FETCH n takes up to n rows of the first batch, and the batch is gone once emptied
    (an empty batch answers one FETCH with nothing)."""

    def __init__(self, columns: list[str], ready: list[list[tuple]]) -> None:
        self.columns = columns
        self.ready = [list(batch) for batch in ready]
        self.executed: list[str] = []
        self.autocommit = False
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def take(self, count: int) -> list[tuple]:
        if not self.ready:
            return []
        rows, self.ready[0] = self.ready[0][:count], self.ready[0][count:]
        if not self.ready[0]:
            self.ready.pop(0)
        return rows

    def close(self) -> None:
        self.closed = True


RW_COLUMNS = ["id", "qty", "op", "rw_timestamp"]
MZ_COLUMNS = ["mz_timestamp", "mz_progressed", "mz_diff", "id", "qty"]


def rw_feed(results: list[list[tuple]], start_position: str | None = None,
            columns: list[str] = RW_COLUMNS) -> tuple[RisingWaveSubscriptionFeed, FakeConnection]:
    conn = FakeConnection(columns, results)
    return RisingWaveSubscriptionFeed(lambda: conn, "tf.fills_mv", "exec", start_position=start_position), conn


def mz_feed(results: list[list[tuple]],
            start_position: str | None = None) -> tuple[MaterializeSubscribeFeed, FakeConnection]:
    conn = FakeConnection(MZ_COLUMNS, results)
    return MaterializeSubscribeFeed(lambda: conn, "tf.fills_mv", "exec", start_position=start_position), conn


def summary(changes: list[Change]) -> list[tuple[str, Any, str]]:
    return [(c.op, c.row["id"], c.position) for c in changes]


def rw_pos(epoch: int, seen: int) -> str:
    return json.dumps({"rw_timestamp": epoch, "seen": seen})


def test_risingwave_full_snapshot_then_changes() -> None:
    feed, conn = rw_feed([
        [(1, 10, "Insert", None), (2, 20, "Insert", None)],                  # FULL snapshot: no rw_timestamp
        [(1, 10, "UpdateDelete", 1715669376304), (1, 11, "UpdateInsert", 1715669376304),
         (2, 20, 2, 1715669377310)],                                          # early releases: numeric op codes
    ])
    assert conn.autocommit
    assert conn.executed == [
        'CREATE SUBSCRIPTION IF NOT EXISTS "tf"."exec_sub" FROM "tf"."fills_mv" WITH (retention = \'1D\')',
        'DECLARE "exec_cur" SUBSCRIPTION CURSOR FOR "tf"."exec_sub" FULL',
    ]
    assert summary(feed.fetch(10, timeout=0)) == [
        ("insert", 1, SNAPSHOT_POSITION), ("insert", 2, SNAPSHOT_POSITION)]
    changes = feed.fetch(10, timeout=0)
    assert summary(changes) == [
        ("update_delete", 1, rw_pos(1715669376304, 1)), ("update_insert", 1, rw_pos(1715669376304, 2)),
        ("delete", 2, rw_pos(1715669377310, 1))]
    assert changes[1].row == {"id": 1, "qty": 11}
    assert feed.position == rw_pos(1715669377310, 1)
    assert conn.executed[2:] == ['FETCH 10 FROM "exec_cur"'] * 2
    feed.close()
    assert conn.closed


def test_risingwave_resume_skips_what_was_delivered_of_the_boundary_epoch() -> None:
    # SINCE is inclusive: epoch 500 comes back whole, and its first two rows were delivered before.
    feed, conn = rw_feed([[(1, 1, "Insert", 500), (2, 2, "Insert", 500), (3, 3, "Insert", 500),
                           (4, 4, "Insert", 501)]], start_position=rw_pos(500, 2))
    assert conn.executed[1] == 'DECLARE "exec_cur" SUBSCRIPTION CURSOR FOR "tf"."exec_sub" SINCE 500'
    assert feed.position == rw_pos(500, 2)
    assert summary(feed.fetch(10, timeout=0)) == [("insert", 3, rw_pos(500, 3)), ("insert", 4, rw_pos(501, 1))]


def test_risingwave_blocks_for_one_row_then_takes_what_is_ready() -> None:
    feed, conn = rw_feed([[], [(1, 1, "Insert", 700)], [(2, 2, "Insert", 700)]],
                         columns=["fills_mv.id", "fills_mv.qty", "fills_mv.op", "rw_timestamp"])
    assert summary(feed.fetch(50, timeout=2.5)) == [("insert", 1, rw_pos(700, 1)), ("insert", 2, rw_pos(700, 2))]
    assert conn.executed[2:] == [
        'FETCH 50 FROM "exec_cur"',                            # what is there now: nothing
        'FETCH 1 FROM "exec_cur" WITH (timeout = \'3s\')',     # wait for one (whole seconds)
        'FETCH 49 FROM "exec_cur"',                            # and the rest that is ready
    ]


def test_risingwave_unknown_op_is_an_error() -> None:
    feed, _ = rw_feed([[(1, 1, "Upsert", 1)]])
    with pytest.raises(ValueError, match="Upsert"):
        feed.fetch(1, timeout=0)


def mz_pos(frontier: int) -> str:
    return json.dumps({"frontier": frontier})


def test_materialize_snapshot_progress_and_diffs() -> None:
    feed, conn = mz_feed([
        [(100, True, None, None, None),                        # first row: progress at the AS OF
         (100, False, 1, 1, 10), (100, False, 2, 2, 20)],       # snapshot; |diff| > 1 repeats the row
        [(105, True, None, None, None),                         # snapshot time finished
         (107, False, -1, 1, 10), (107, False, 1, 1, 11)],
        [(109, True, None, None, None)],
    ])
    assert conn.executed == [
        "BEGIN", 'DECLARE "exec_cur" CURSOR FOR SUBSCRIBE TO "tf"."fills_mv" WITH (PROGRESS, SNAPSHOT true)']
    # Time 100 is not known to be finished yet: a reopen would have to take the snapshot again.
    assert summary(feed.fetch(10, timeout=0)) == [
        ("insert", 1, SNAPSHOT_POSITION), ("insert", 2, SNAPSHOT_POSITION), ("insert", 2, SNAPSHOT_POSITION)]
    assert feed.position == SNAPSHOT_POSITION
    # Time 107 may still get updates until a later time shows up.
    changes = feed.fetch(10, timeout=0)
    assert summary(changes) == [("delete", 1, mz_pos(107)), ("insert", 1, mz_pos(107))]
    assert changes[1].row == {"id": 1, "qty": 11}
    assert feed.position == mz_pos(107)
    # A progress row alone: no change, but the position moves past 107.
    assert feed.fetch(10, timeout=0) == []
    assert feed.position == mz_pos(109)
    assert conn.executed[2:] == ["FETCH 10 \"exec_cur\" WITH (timeout = '0s')"] * 3


def test_materialize_resume_as_of_and_max_rows() -> None:
    feed, conn = mz_feed([[(200, True, None, None, None), (201, False, 3, 7, 70), (202, False, 1, 8, 80),
                           (203, True, None, None, None)]], start_position=mz_pos(201))
    # AS OF is inclusive, SNAPSHOT false emits only later times: f - 1 gives times >= f.
    assert conn.executed[1] == (
        'DECLARE "exec_cur" CURSOR FOR SUBSCRIBE TO "tf"."fills_mv" WITH (PROGRESS, SNAPSHOT false) AS OF 200')
    assert feed.position == mz_pos(201)
    # mz_diff 3 gives three changes, more than max_rows: one waits in the feed.
    assert summary(feed.fetch(2, timeout=0)) == [("insert", 7, mz_pos(201)), ("insert", 7, mz_pos(201))]
    assert feed.position == mz_pos(201)
    # The row at 202 shows that 201 is finished.
    assert summary(feed.fetch(2, timeout=0)) == [("insert", 7, mz_pos(202)), ("insert", 8, mz_pos(202))]
    assert feed.fetch(2, timeout=0) == []
    assert feed.position == mz_pos(203)
    assert conn.executed[2:] == [
        "FETCH 2 \"exec_cur\" WITH (timeout = '0s')",
        "FETCH 1 \"exec_cur\" WITH (timeout = '0s')",   # one change still buffered: asks for one more
        "FETCH 2 \"exec_cur\" WITH (timeout = '0s')",
    ]


def test_materialize_waits_in_whole_seconds_until_a_change() -> None:
    feed, conn = mz_feed([[(300, True, None, None, None)], [(301, False, 1, 9, 90)]], start_position=mz_pos(300))
    assert summary(feed.fetch(5, timeout=1.2)) == [("insert", 9, mz_pos(301))]
    assert conn.executed[2:] == ["FETCH 5 \"exec_cur\" WITH (timeout = '0s')",
                                 "FETCH 5 \"exec_cur\" WITH (timeout = '2s')"]


def test_open_feed_picks_the_engine_and_qualifies_the_relation(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    conn = FakeConnection(RW_COLUMNS, [])
    monkeypatch.setattr(changefeed.engine, "connect", lambda settings: conn)
    rw = open_feed(Settings(target="risingwave", schema="tf", data_dir=tmp_path), "fills_mv", "exec")
    mz = open_feed(Settings(target="materialize", schema="tf", data_dir=tmp_path), "fills_mv", "exec")
    assert isinstance(rw, RisingWaveSubscriptionFeed) and isinstance(mz, MaterializeSubscribeFeed)
    assert '"tf"."fills_mv"' in conn.executed[0] and '"tf"."fills_mv"' in conn.executed[-1]


# --------------------------------------------------------------------------
# Real engines (Docker)
# --------------------------------------------------------------------------
IT_SCHEMA = "changefeed_it"


@pytest.fixture(scope="module")
def docker() -> None:
    ok, reason = docker_available()
    if not ok:
        pytest.skip(f"no Docker engine reachable ({reason}): the RisingWave/Materialize change-feed tests need one")


def fetch_until(feed, count: int, timeout: float = 60) -> list[Change]:
    changes: list[Change] = []
    deadline = time.monotonic() + timeout
    while len(changes) < count and (remaining := deadline - time.monotonic()) > 0:
        changes += feed.fetch(count - len(changes), timeout=min(remaining, 5))
    return changes


def remote_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, target: str, host: str, port: int) -> Settings:
    prefix = target.upper()
    monkeypatch.setenv(f"{prefix}_HOST", host)
    monkeypatch.setenv(f"{prefix}_PORT", str(port))
    settings = Settings(target=target, schema=IT_SCHEMA, data_dir=tmp_path)
    wait_for_sql(settings)
    return settings


@pytest.mark.integration
@pytest.mark.slow
def test_risingwave_feed_resumes_without_loss_or_duplicates(docker: None, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(RISINGWAVE_IMAGE).with_command(["single_node", "--in-memory"])
        .with_env("ENABLE_TELEMETRY", "false").with_exposed_ports(4566)
        .waiting_for(LogMessageWaitStrategy(re.escape(RISINGWAVE_READY_LOG)).with_startup_timeout(STARTUP_TIMEOUT_S)))
    with container:
        settings = remote_settings(monkeypatch, tmp_path, "risingwave", container.get_container_host_ip(),
                                   int(container.get_exposed_port(4566)))
        with psycopg.connect(**engine.conninfo(settings), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {IT_SCHEMA}")
            conn.execute(f"CREATE TABLE {IT_SCHEMA}.fills (id INT PRIMARY KEY, qty INT)")
            conn.execute(f"CREATE MATERIALIZED VIEW {IT_SCHEMA}.fills_mv AS SELECT id, qty FROM {IT_SCHEMA}.fills")
            conn.execute(f"INSERT INTO {IT_SCHEMA}.fills VALUES (1, 10), (2, 20)")
            conn.execute("FLUSH")
            with open_feed(settings, "fills_mv", "it_rw") as feed:
                assert sorted((c.op, c.row["id"]) for c in fetch_until(feed, 2)) == [("insert", 1), ("insert", 2)]
                conn.execute(f"UPDATE {IT_SCHEMA}.fills SET qty = 11 WHERE id = 1")
                conn.execute("FLUSH")
                update = fetch_until(feed, 2)
                assert [(c.op, c.row["qty"]) for c in update] == [("update_delete", 10), ("update_insert", 11)]
                position = feed.position
            conn.execute(f"INSERT INTO {IT_SCHEMA}.fills VALUES (3, 30)")
            conn.execute("FLUSH")
            with open_feed(settings, "fills_mv", "it_rw", start_position=position) as feed:
                assert [(c.op, c.row["id"]) for c in fetch_until(feed, 1)] == [("insert", 3)]
                assert feed.fetch(10, timeout=2) == []


@pytest.mark.integration
@pytest.mark.slow
def test_materialize_feed_resumes_without_loss_or_duplicates(docker: None, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import ExecWaitStrategy

    container = (
        DockerContainer(MATERIALIZE_IMAGE).with_env("MZ_NO_TELEMETRY", "1").with_exposed_ports(6875)
        .waiting_for(ExecWaitStrategy(["curl", "-fsS", "http://localhost:6878/api/readyz"])
                     .with_startup_timeout(STARTUP_TIMEOUT_S)))
    with container:
        settings = remote_settings(monkeypatch, tmp_path, "materialize", container.get_container_host_ip(),
                                   int(container.get_exposed_port(6875)))
        with psycopg.connect(**engine.conninfo(settings), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {IT_SCHEMA}")
            conn.execute(f"CREATE TABLE {IT_SCHEMA}.fills (id INT, qty INT)")
            # Resuming AS OF a past time needs the history kept.
            conn.execute(f"CREATE MATERIALIZED VIEW {IT_SCHEMA}.fills_mv WITH (RETAIN HISTORY FOR '1hr')"
                         f" AS SELECT id, qty FROM {IT_SCHEMA}.fills")
            conn.execute(f"INSERT INTO {IT_SCHEMA}.fills VALUES (1, 10), (2, 20)")
            with open_feed(settings, "fills_mv", "it_mz") as feed:
                assert sorted((c.op, c.row["id"]) for c in fetch_until(feed, 2)) == [("insert", 1), ("insert", 2)]
                conn.execute(f"INSERT INTO {IT_SCHEMA}.fills VALUES (3, 30)")
                last = fetch_until(feed, 1)
                assert [(c.op, c.row["id"]) for c in last] == [("insert", 3)]
                # Wait for the progress row that finishes row 3's time.
                deadline = time.monotonic() + 30
                while feed.position == last[-1].position and time.monotonic() < deadline:
                    assert feed.fetch(10, timeout=1) == []
                position = feed.position
            assert json.loads(position)["frontier"] > json.loads(last[-1].position)["frontier"]
            conn.execute(f"INSERT INTO {IT_SCHEMA}.fills VALUES (4, 40)")
            with open_feed(settings, "fills_mv", "it_mz", start_position=position) as feed:
                assert [(c.op, c.row["id"]) for c in fetch_until(feed, 1)] == [("insert", 4)]
                assert feed.fetch(10, timeout=2) == []
