"""The backtest's set-based I/O on several connections: symbol-scoped reads,
reads and writes in parallel, and rows COPYed from a background thread."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest

from ingest.prices import PriceIngester
from ingest.synthetic import generate_bars
from tradeflow import engine
from tradeflow.config import Settings
from tradeflow.research.backtest import symbol_groups
from tradeflow.writer import BackgroundCopy, copy_frames

AS_OF = datetime(2100, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def three_symbols(conn: psycopg.Connection, embedded_settings: Settings) -> pd.DataFrame:
    bars = pd.concat(list(generate_bars(symbols=3, days=1, seed=3)), ignore_index=True)
    PriceIngester(conn, embedded_settings, source="test").ingest([bars])
    return bars


def test_a_symbol_scope_reads_only_those_symbols_and_the_same_rows(conn, embedded_settings, three_symbols):
    query = "SELECT symbol, bar_ts, sma_5, ema_12, rsi_14 FROM indicator_history WHERE timeframe = '1m'"
    with engine.read_scope(conn, embedded_settings, as_of=AS_OF):
        everything = engine.query_frame(conn, query + " ORDER BY symbol, bar_ts")
    with engine.read_scope(conn, embedded_settings, as_of=AS_OF, symbols=["SYM0000", "SYM0002"]):
        scoped = engine.query_frame(conn, query + " ORDER BY symbol, bar_ts")
    assert set(scoped.symbol) == {"SYM0000", "SYM0002"}
    pd.testing.assert_frame_equal(scoped, everything[everything.symbol != "SYM0001"].reset_index(drop=True))


@pytest.mark.parametrize("symbol", ['quo"te', "back\\slash", "com,ma", "{brace}"])
def test_a_symbol_scope_quotes_what_an_array_literal_would_misread(conn, embedded_settings, symbol):
    with engine.read_scope(conn, embedded_settings, as_of=AS_OF, symbols=[symbol, "other"]):
        scope = conn.execute("SELECT current_setting('tradeflow.symbols')::text[]").fetchone()[0]
    assert scope == [symbol, "other"]


def test_in_parallel_runs_every_job_on_its_own_connection_and_keeps_their_order(embedded_settings):
    jobs = [lambda c, i=i: (i, c.execute("SELECT pg_backend_pid()").fetchone()[0]) for i in range(6)]
    results = engine.in_parallel(embedded_settings, jobs, workers=2)
    assert [i for i, _ in results] == list(range(6))
    assert len({pid for _, pid in results}) <= 2


def test_in_parallel_raises_the_first_failure(embedded_settings):
    with pytest.raises(psycopg.errors.UndefinedTable):
        engine.in_parallel(embedded_settings, [lambda c: c.execute("SELECT 1"),
                                               lambda c: c.execute("SELECT * FROM no_such_table")])


def test_a_connection_pool_keeps_its_connections_and_reconnects_after_a_failure(embedded_settings):
    pid = lambda c: c.execute("SELECT pg_backend_pid()").fetchone()[0]  # noqa: E731
    both = threading.Barrier(2, timeout=30)  # the first two jobs run at once: each thread opens its connection

    def together(c: psycopg.Connection) -> int:
        both.wait()
        return pid(c)

    with engine.ConnectionPool(embedded_settings, 2) as pool:
        first = set(pool.map([together, together]))
        assert len(first) == 2
        assert set(pool.map([pid, pid, pid])) <= first  # the same sessions, not new ones
        with pytest.raises(psycopg.errors.UndefinedTable):
            pool.map([pid, lambda c: c.execute("SELECT * FROM no_such_table")])
        # a failure closed every connection: the next map opens new ones and works
        assert not set(pool.map([pid, pid])) & first


def test_a_connection_that_may_not_start_the_server_fails_while_it_is_down(tmp_path):
    settings = Settings(data_dir=tmp_path / "engine", embedded_durable=False)
    server = engine.embedded(settings)
    with pytest.raises(psycopg.OperationalError, match="not running"):
        engine.connect(settings, start=False)
    assert server.status() is None
    try:
        with engine.connect(settings) as conn:  # the default starts it
            assert conn.execute("SELECT 1").fetchone() == (1,)
        with engine.connect(settings, start=False) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()


def test_symbol_groups_cover_every_symbol_once_with_balanced_bars():
    counts = {"A": 900, "B": 500, "C": 400, "D": 100, "E": 100}
    bars = pd.DataFrame({"symbol": [s for s, n in counts.items() for _ in range(n)]})
    groups = symbol_groups(bars, parts=2)
    assert sorted(s for group in groups for s in group) == sorted(counts)
    loads = sorted(sum(counts[s] for s in group) for group in groups)
    assert loads == [1000, 1000]
    assert symbol_groups(bars.head(10), parts=4) == [["A"]]


def test_background_copy_writes_every_batch(conn, embedded_settings):
    columns = {"audit_log": ("audit_id", "actor", "action", "target", "details", "ts")}
    at = datetime(2024, 1, 2, tzinfo=timezone.utc)
    batches = [[(f"a{b}-{i}", "test", "noop", "t", "{}", at + timedelta(seconds=i)) for i in range(50)]
               for b in range(5)]
    with BackgroundCopy(lambda: engine.connect(embedded_settings), columns, depth=1) as sink:
        for batch in batches:
            sink.put({"audit_log": batch})
    assert conn.execute("SELECT count(*) FROM audit_log WHERE actor = 'test'").fetchone()[0] == 250


def test_background_copy_hands_the_writers_error_to_the_producer_without_blocking_it(embedded_settings):
    columns = {"no_such_table": ("a",)}
    with pytest.raises(psycopg.errors.UndefinedTable):
        with BackgroundCopy(lambda: engine.connect(embedded_settings), columns, depth=1) as sink:
            for _ in range(20):  # more batches than the queue holds: the failed writer keeps draining
                sink.put({"no_such_table": [(1,)]})


@pytest.mark.parametrize("session_zone", ["UTC", "Asia/Tokyo", "America/Los_Angeles"])
def test_copied_frames_keep_each_instant_whatever_the_zones(conn, session_zone):
    """copy_frames writes zoned times as UTC wall clock in a UTC transaction: the instants
    survive frames in any zone and a session in any other, and the session keeps its zone."""
    instants = pd.DataFrame({
        "audit_id": ["z1", "z2", "z3"], "actor": "copy-test", "action": "noop", "target": "t", "details": "{}",
        "ts": [pd.Timestamp("2024-01-02 09:30", tz="America/New_York"), pd.Timestamp("2024-07-02 23:59:59.123456",
               tz="UTC"), pd.Timestamp("2024-03-10 02:30", tz="Europe/Oslo")]})
    conn.execute(f"SET TimeZone TO '{session_zone}'")
    try:
        assert copy_frames(conn, "audit_log", list(instants.columns), [instants]) == 3
        assert conn.execute("SHOW TimeZone").fetchone()[0] == session_zone
        stored = conn.execute("SELECT ts FROM audit_log WHERE actor = 'copy-test' ORDER BY audit_id").fetchall()
        assert [ts for (ts,) in stored] == [t.to_pydatetime() for t in instants.ts]
    finally:
        conn.execute("DELETE FROM audit_log WHERE actor = 'copy-test'")
        conn.execute("RESET TimeZone")
