"""The dbt models on RisingWave and Materialize give the embedded engine's results.

Each streaming engine runs in a throwaway container (testcontainers). The models
are deployed to it with `tradeflow.dbt.run_dbt` (temporal filter off: the bars
are historical), the same synthetic one-minute bars are inserted there and on
the embedded engine, and `indicator_history` and `strategy_signal_history`
are compared row by row.

Tolerances (see udfs/smoothing.sql for where the bounds come from):
  * every numeric column: 1e-6 relative, plus an absolute floor of 1e-9 times
    the price level for values near zero (MACD, histogram);
  * the exponentially smoothed columns (EMA, MACD, RSI, ATR) also get the error
    bound of the streaming engines' smoothing (the lag join cut after h terms):
    at most (1-alpha)^h times the input range per smoothing, h chosen from
    `smoothing_eps` in dbt_project.yml (1e-15: negligible).
The lag join is seeded like TA-Lib, so NULL patterns (warm-ups) must match
exactly on both engines.

Skipped, with the reason, when no Docker engine is reachable. The embedded side
comes from the `embedded_settings` fixture (tests/conftest.py, function-scoped:
it empties the raw tables); it is looked up only after the Docker check, so a
machine without Docker starts no engine at all.
"""
from __future__ import annotations

import math
import os
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.rows import dict_row

from tradeflow.config import PROJECT_DIR, Settings
from tradeflow.dbt import run_dbt
from tradeflow.engine import conninfo, connect

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Same tags as docker-compose.yml; the same variables override both.
RISINGWAVE_IMAGE = os.environ.get("RISINGWAVE_IMAGE", "risingwavelabs/risingwave:v3.0.5")
MATERIALIZE_IMAGE = os.environ.get("MATERIALIZE_IMAGE", "materialize/materialized:v26.43.0")
RISINGWAVE_READY_LOG = "RisingWave standalone mode is ready."
STARTUP_TIMEOUT_S = 300
CATCH_UP_TIMEOUT_S = 120

# Schema the models are deployed to on the containers (throwaway, so fixed).
REMOTE_SCHEMA = "tradeflow_it"

# Synthetic data: two symbols, six hours of one-minute bars each. Long enough
# for SMA 200 and for Materialize's warm-up (EMA 26 + EMA 9 of MACD: ~243 rows
# at eps 1e-6) to leave rows to compare on the 1m timeframe.
SYMBOLS = ("ITSTA", "ITSTB")
MINUTES_PER_SYMBOL = 360
START = datetime(2024, 3, 4, 9, 30, tzinfo=timezone.utc)
SOURCE = "synthetic"
BATCH_ID = "itest-streaming-engines"
MIN_MOVE = Decimal("0.05")  # close-to-close move bounds (absolute), which
MAX_MOVE = Decimal("0.50")  # bound the RSI tolerance on Materialize
INSERT_BATCH_ROWS = 200

PRICE_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "source", "batch_id", "received_at")
INDICATOR_KEY = ("symbol", "timeframe", "bar_ts")
SIGNAL_KEY = "signal_id"
REL_TOL = 1e-6
# Smoothed columns in price units, and RSI (0..100), computed per engine by the
# smoothing macros in udfs/smoothing.sql.
SMOOTHED_PRICE_COLUMNS = frozenset({"ema_12", "ema_26", "macd", "macd_signal", "macd_hist", "atr_14"})
SMOOTHED_RSI_COLUMNS = frozenset({"rsi_14"})
# (1-alpha)^-(n-1) for the smoothings used (EMA 9/12/26, Wilder 14) is at most
# ~7.5: the extra error of an unseeded window while the exact value still
# carries some of its seed.
SEED_FACTOR = 7.5


# --------------------------------------------------------------------------
# Docker
# --------------------------------------------------------------------------
def docker_available() -> tuple[bool, str]:
    """(True, "") if a Docker engine answers a ping, else (False, why not)."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - docker comes with testcontainers
        return False, f"docker SDK not installed: {exc}"
    client = None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # DockerException, requests/urllib3 errors, ...
        text = " ".join(f"{type(exc).__name__}: {exc}".split())
        return False, text[:300]
    finally:
        if client is not None:
            client.close()
    return True, ""


@pytest.fixture(scope="module", autouse=True)
def docker_engine() -> None:
    ok, reason = docker_available()
    if not ok:
        pytest.skip(f"no Docker engine reachable ({reason}): RisingWave/Materialize integration tests need one")


@pytest.fixture(scope="module")
def module_env():
    """Environment for profiles.yml and tradeflow.config.remote_conninfo, undone after the module."""
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def synthetic_bars(symbols: Sequence[str] = SYMBOLS, minutes: int = MINUTES_PER_SYMBOL) -> list[tuple]:
    """Deterministic one-minute bars as tuples in PRICE_COLUMNS order.

    A random walk with persistent direction (trends, so RSI reaches its
    thresholds and SMAs cross), every close-to-close move between MIN_MOVE and
    MAX_MOVE, and a small gap at the open so that the candle colour is the
    sign of the move.
    """
    q = Decimal("0.0001")
    bars: list[tuple] = []
    for i, symbol in enumerate(symbols):
        rng = random.Random(20240304 + i)
        close = Decimal(100 + 25 * i).quantize(q)
        direction = 1
        for m in range(minutes):
            ts = START + timedelta(minutes=m)
            if rng.random() < 0.3:
                direction = -direction
            move = Decimal(rng.uniform(float(MIN_MOVE), float(MAX_MOVE))).quantize(q) * direction
            open_ = (close + Decimal(rng.uniform(-0.02, 0.02))).quantize(q)
            new_close = close + move
            high = (max(open_, new_close) + Decimal(rng.uniform(0, 0.1))).quantize(q)
            low = (min(open_, new_close) - Decimal(rng.uniform(0, 0.1))).quantize(q)
            volume = Decimal(rng.randint(100, 5000))
            bars.append((symbol, ts, open_, high, low, new_close, volume, SOURCE, BATCH_ID, ts + timedelta(seconds=1)))
            close = new_close
    return bars


def insert_bars(conn: psycopg.Connection, schema: str, bars: Sequence[tuple], *,
                batch_rows: int = INSERT_BATCH_ROWS, flush: bool = False) -> None:
    """Multi-row INSERTs into <schema>.price_1m_history, one table per statement
    (the portable form: no COPY on RisingWave, one table per write transaction
    on Materialize). Values are rendered as literals, so no engine has to infer
    parameter types. `flush` issues RisingWave's FLUSH afterwards, which makes
    the rows visible to reads of the materialized views."""
    target = sql.SQL("INSERT INTO {}.price_1m_history ({}) VALUES ").format(
        sql.Identifier(schema), sql.SQL(", ").join(map(sql.Identifier, PRICE_COLUMNS)))
    for start in range(0, len(bars), batch_rows):
        rows = [
            sql.SQL("({})").format(sql.SQL(", ").join(sql.Literal(v) for v in bar))
            for bar in bars[start:start + batch_rows]
        ]
        conn.execute(target + sql.SQL(", ").join(rows))
    if flush:
        conn.execute("FLUSH")


def delete_bars(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("DELETE FROM {}.price_1m_history WHERE batch_id = {}").format(
        sql.Identifier(schema), sql.Literal(BATCH_ID)))


def _symbols_filter() -> sql.Composable:
    return sql.SQL("symbol IN ({})").format(sql.SQL(", ").join(map(sql.Literal, SYMBOLS)))


def fetch_rows(conn: psycopg.Connection, schema: str, relation: str, order_by: Sequence[str]) -> list[dict[str, Any]]:
    query = sql.SQL("SELECT * FROM {}.{} WHERE {} ORDER BY {}").format(
        sql.Identifier(schema), sql.Identifier(relation), _symbols_filter(),
        sql.SQL(", ").join(map(sql.Identifier, order_by)))
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        return [{k: _normalise(v) for k, v in row.items()} for row in cur.fetchall()]


def expected_indicator_rows(bars: Sequence[tuple]) -> int:
    """Rows indicator_history should have for `bars`: every 1m bar plus one per
    5m, 15m and 1h bucket (int_bars_multi_timeframe; date_bin from 2000-01-01,
    a whole number of hours after the Unix epoch, so epoch minutes bucket alike)."""
    keys = set()
    for bar in bars:
        symbol, minute = bar[0], int(bar[1].timestamp()) // 60
        keys.add((symbol, 1, minute))
        for width in (5, 15, 60):
            keys.add((symbol, width, minute - minute % width))
    return len(keys)


def count_rows(conn: psycopg.Connection, schema: str, relation: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}.{} WHERE {}").format(
        sql.Identifier(schema), sql.Identifier(relation), _symbols_filter())
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _normalise(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc)
    if isinstance(value, Decimal):
        return float(value)
    return value


@dataclass(frozen=True)
class EngineResult:
    engine: str
    indicators: list[dict[str, Any]]
    signals: list[dict[str, Any]]


@dataclass(frozen=True)
class Reference:
    bars: list[tuple]
    indicators: list[dict[str, Any]]
    signals: list[dict[str, Any]]


# --------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------
def smoothing_eps(target: str) -> float:
    project = yaml.safe_load((PROJECT_DIR / "dbt_project.yml").read_text())
    return float(project["vars"]["smoothing_eps"])  # one cut for both streaming engines (udfs/smoothing.sql)


@dataclass(frozen=True)
class Tolerance:
    rel: float
    floor: float
    by_column: dict[str, float] = field(default_factory=dict)

    def abs_for(self, column: str) -> float:
        return max(self.floor, self.by_column.get(column, 0.0))

    def close(self, column: str, a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=self.rel, abs_tol=self.abs_for(column))


def tolerance_for(target: str, bars: Sequence[tuple]) -> Tolerance:
    """Per-column tolerances from the engine's smoothing eps and the data's scale."""
    eps = smoothing_eps(target)
    idx = {c: i for i, c in enumerate(PRICE_COLUMNS)}
    by_symbol: dict[str, list[tuple]] = defaultdict(list)
    for bar in bars:
        by_symbol[bar[idx["symbol"]]].append(bar)
    price_level = max(float(b[idx["close"]]) for b in bars)
    price_range = max(
        float(max(b[idx["high"]] for b in rows) - min(b[idx["low"]] for b in rows)) for rows in by_symbol.values())
    moves = [
        abs(float(rows[k][idx["close"]] - rows[k - 1][idx["close"]]))
        for rows in by_symbol.values() for k in range(1, len(rows))
    ]
    min_move, max_move = min(moves), max(moves)
    # EMA/Wilder/ATR: (1-a)^h * input range, times the seed factor; MACD and its
    # signal and histogram add up to a few of those: 50 covers them.
    price_tol = 50 * eps * price_range
    # RSI = 100 g/(g+l): |dRSI| <= 100 max(|dg|,|dl|)/(g+l), with |dg| bounded by
    # the smoothing error on gains (range <= max move) and g+l >= min move.
    rsi_tol = 100 * 2 * SEED_FACTOR * eps * max_move / min_move
    # Signal confidence: |spread|/ATR (<= 1) or |RSI-50|/50.
    confidence_tol = max(rsi_tol / 50, 2 * SEED_FACTOR * eps * price_range / min_move)
    by_column = {c: price_tol for c in SMOOTHED_PRICE_COLUMNS}
    by_column.update({c: rsi_tol for c in SMOOTHED_RSI_COLUMNS})
    by_column["confidence"] = confidence_tol
    return Tolerance(rel=REL_TOL, floor=1e-9 * price_level, by_column=by_column)


# --------------------------------------------------------------------------
# Comparison
# --------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class IndicatorComparison:
    mismatches: list[str] = field(default_factory=list)
    compared: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # (symbol, timeframe) -> index of the last bar where the engine was still warming up
    warmup_end: dict[tuple[str, str], int] = field(default_factory=dict)
    # (symbol, timeframe, bar_ts) -> index of the bar within its series
    bar_index: dict[tuple, int] = field(default_factory=dict)


def compare_indicators(engine: str, engine_rows: Iterable[dict], reference_rows: Sequence[dict],
                       tol: Tolerance, *, allow_warmup: bool) -> IndicatorComparison:
    result = IndicatorComparison()
    by_key = {tuple(r[k] for k in INDICATOR_KEY): r for r in engine_rows}
    ref_keys = set()
    columns = [c for c in reference_rows[0] if c not in INDICATOR_KEY] if reference_rows else []
    engine_has_value: set[tuple[tuple[str, str], str]] = set()
    series_pos: dict[tuple[str, str], int] = defaultdict(int)

    for ref in sorted(reference_rows, key=lambda r: tuple(r[k] for k in INDICATOR_KEY)):
        key = tuple(ref[k] for k in INDICATOR_KEY)
        series = (ref["symbol"], ref["timeframe"])
        index = series_pos[series]
        series_pos[series] += 1
        result.bar_index[key] = index
        ref_keys.add(key)
        row = by_key.get(key)
        if row is None:
            result.mismatches.append(f"{key}: missing on {engine}")
            continue
        for col in columns:
            ref_v, eng_v = ref[col], row.get(col)
            if ref_v is None and eng_v is None:
                continue
            if not (_is_number(ref_v) or _is_number(eng_v)):
                if ref_v != eng_v:
                    result.mismatches.append(f"{key} {col}: {engine}={eng_v!r} embedded={ref_v!r}")
                continue
            if ref_v is None:
                result.mismatches.append(f"{key} {col}: {engine}={eng_v!r} where embedded is NULL")
            elif eng_v is None:
                if allow_warmup and (series, col) not in engine_has_value:
                    result.warmup_end[series] = index
                else:
                    result.mismatches.append(f"{key} {col}: NULL on {engine}, embedded={ref_v!r}")
            else:
                engine_has_value.add((series, col))
                result.compared[col] += 1
                if not tol.close(col, float(eng_v), float(ref_v)):
                    result.mismatches.append(
                        f"{key} {col}: {engine}={eng_v!r} embedded={ref_v!r} "
                        f"(diff {abs(float(eng_v) - float(ref_v)):.3g}, abs tol {tol.abs_for(col):.3g})")
    for key in sorted(set(by_key) - ref_keys):
        result.mismatches.append(f"{key}: on {engine} only")
    return result


def compare_signals(engine: str, engine_rows: Sequence[dict], reference_rows: Sequence[dict],
                    tol: Tolerance, comparable: Callable[[dict], bool]) -> tuple[list[str], int]:
    mismatches: list[str] = []
    eng = {r[SIGNAL_KEY]: r for r in engine_rows if comparable(r)}
    ref = {r[SIGNAL_KEY]: r for r in reference_rows if comparable(r)}
    for sid in sorted(set(ref) - set(eng)):
        mismatches.append(f"{sid}: missing on {engine} ({ref[sid]['action']})")
    for sid in sorted(set(eng) - set(ref)):
        mismatches.append(f"{sid}: on {engine} only ({eng[sid]['action']})")
    for sid in sorted(set(eng) & set(ref)):
        for col, ref_v in ref[sid].items():
            eng_v = eng[sid].get(col)
            if _is_number(ref_v) and _is_number(eng_v):
                ok = tol.close(col, float(eng_v), float(ref_v))
            else:
                ok = eng_v == ref_v
            if not ok:
                mismatches.append(f"{sid} {col}: {engine}={eng_v!r} embedded={ref_v!r}")
    return mismatches, len(set(eng) & set(ref))


def _report(title: str, mismatches: Sequence[str], limit: int = 40) -> str:
    shown = "\n  ".join(mismatches[:limit])
    more = f"\n  ... and {len(mismatches) - limit} more" if len(mismatches) > limit else ""
    return f"{title}: {len(mismatches)} mismatches\n  {shown}{more}"


# --------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def _reference_cache() -> dict[str, Reference]:
    return {}


@pytest.fixture
def embedded_reference(request: pytest.FixtureRequest, docker_engine: None,
                       _reference_cache: dict[str, Reference]) -> Reference:
    """The bars and the embedded engine's results for them (bars removed again
    afterwards). Computed once per module; `embedded_settings` is looked up by
    name here, after the Docker check, so no engine starts when the module is
    skipped."""
    if "reference" in _reference_cache:
        return _reference_cache["reference"]
    settings: Settings = request.getfixturevalue("embedded_settings")
    bars = synthetic_bars()
    with connect(settings) as conn:
        delete_bars(conn, settings.schema)
        try:
            insert_bars(conn, settings.schema, bars)
            indicators = fetch_rows(conn, settings.schema, "indicator_history", INDICATOR_KEY)
            signals = fetch_rows(conn, settings.schema, "strategy_signal_history", ("signal_id",))
        finally:
            delete_bars(conn, settings.schema)
    assert indicators, "embedded engine produced no indicator_history rows for the synthetic bars"
    assert signals, "embedded engine produced no signals for the synthetic bars: the comparison would be vacuous"
    assert len(indicators) == expected_indicator_rows(bars), "expected_indicator_rows() is out of date with the models"
    _reference_cache["reference"] = Reference(bars=bars, indicators=indicators, signals=signals)
    return _reference_cache["reference"]


def wait_for_sql(settings: Settings, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(**conninfo(settings), connect_timeout=5, autocommit=True) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.Error as exc:
            last = exc
            time.sleep(1)
    raise TimeoutError(f"{settings.target} did not accept SQL connections within {timeout_s}s: {last}")


def deploy_load_and_read(settings: Settings, bars: Sequence[tuple], *, flush: bool) -> EngineResult:
    run_dbt(settings, ["run"], vars={"temporal_filter": False}, target_path=settings.data_dir / "target")
    with connect(settings) as conn:
        insert_bars(conn, settings.schema, bars, flush=flush)
        # FLUSH (RisingWave) and strict-serializable reads (Materialize) should
        # make the views complete at once; poll anyway, in case they lag.
        expected = expected_indicator_rows(bars)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        while count_rows(conn, settings.schema, "indicator_history") < expected and time.monotonic() < deadline:
            time.sleep(2)
        indicators = fetch_rows(conn, settings.schema, "indicator_history", INDICATOR_KEY)
        signals = fetch_rows(conn, settings.schema, "strategy_signal_history", ("signal_id",))
    return EngineResult(engine=settings.target, indicators=indicators, signals=signals)


@pytest.fixture(scope="module")
def risingwave_result(module_env: pytest.MonkeyPatch,
                      tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    container = (
        DockerContainer(RISINGWAVE_IMAGE)
        .with_command(["single_node", "--in-memory"])
        .with_env("ENABLE_TELEMETRY", "false")
        .with_exposed_ports(4566)
        .waiting_for(LogMessageWaitStrategy(re.escape(RISINGWAVE_READY_LOG)).with_startup_timeout(STARTUP_TIMEOUT_S))
    )
    with container:
        module_env.setenv("RISINGWAVE_HOST", container.get_container_host_ip())
        module_env.setenv("RISINGWAVE_PORT", str(container.get_exposed_port(4566)))
        module_env.setenv("RISINGWAVE_USER", "root")
        module_env.setenv("RISINGWAVE_PASSWORD", "")
        module_env.setenv("RISINGWAVE_DB", "dev")
        settings = Settings(target="risingwave", schema=REMOTE_SCHEMA,
                            data_dir=Path(tmp_path_factory.mktemp("risingwave")))
        wait_for_sql(settings)
        return deploy_load_and_read(settings, synthetic_bars(), flush=True)


@pytest.fixture(scope="module")
def materialize_result(module_env: pytest.MonkeyPatch,
                       tmp_path_factory: pytest.TempPathFactory) -> EngineResult:
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import ExecWaitStrategy

    container = (
        DockerContainer(MATERIALIZE_IMAGE)
        .with_env("MZ_NO_TELEMETRY", "1")
        .with_exposed_ports(6875)
        # readiness endpoint on the internal HTTP port, checked from inside
        .waiting_for(ExecWaitStrategy(["curl", "-fsS", "http://localhost:6878/api/readyz"])
                     .with_startup_timeout(STARTUP_TIMEOUT_S))
    )
    with container:
        module_env.setenv("MATERIALIZE_HOST", container.get_container_host_ip())
        module_env.setenv("MATERIALIZE_PORT", str(container.get_exposed_port(6875)))
        module_env.setenv("MATERIALIZE_USER", "materialize")
        module_env.setenv("MATERIALIZE_PASSWORD", "")
        module_env.setenv("MATERIALIZE_DB", "materialize")
        module_env.setenv("MATERIALIZE_CLUSTER", "quickstart")
        settings = Settings(target="materialize", schema=REMOTE_SCHEMA,
                            data_dir=Path(tmp_path_factory.mktemp("materialize")))
        wait_for_sql(settings)
        return deploy_load_and_read(settings, synthetic_bars(), flush=False)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------
def _check_indicators(result: EngineResult, reference: Reference, *, allow_warmup: bool) -> IndicatorComparison:
    tol = tolerance_for(result.engine, reference.bars)
    cmp = compare_indicators(result.engine, result.indicators, reference.indicators, tol, allow_warmup=allow_warmup)
    assert not cmp.mismatches, _report(f"indicator_history on {result.engine} vs embedded", cmp.mismatches)
    numeric = {c for r in reference.indicators for c, v in r.items() if _is_number(v) and c not in INDICATOR_KEY}
    never = sorted(c for c in numeric if cmp.compared.get(c, 0) == 0)
    assert not never, f"no row compared for {never} on {result.engine}: too few bars for its warm-up"
    return cmp


def _check_signals(result: EngineResult, reference: Reference, comparable: Callable[[dict], bool]) -> None:
    tol = tolerance_for(result.engine, reference.bars)
    mismatches, compared = compare_signals(result.engine, result.signals, reference.signals, tol, comparable)
    assert not mismatches, _report(f"strategy_signal_history on {result.engine} vs embedded", mismatches)
    assert compared > 0, f"no signal could be compared on {result.engine}"


def test_risingwave_indicator_history_matches_embedded(risingwave_result: EngineResult,
                                                       embedded_reference: Reference) -> None:
    _check_indicators(risingwave_result, embedded_reference, allow_warmup=False)


def test_risingwave_signals_match_embedded(risingwave_result: EngineResult, embedded_reference: Reference) -> None:
    _check_signals(risingwave_result, embedded_reference, comparable=lambda row: True)


def test_materialize_indicator_history_matches_embedded(materialize_result: EngineResult,
                                                        embedded_reference: Reference) -> None:
    _check_indicators(materialize_result, embedded_reference, allow_warmup=False)


def test_materialize_signals_match_embedded(materialize_result: EngineResult, embedded_reference: Reference) -> None:
    # Only the warm-up extent is needed here; indicator mismatches are the other test's business.
    cmp = compare_indicators(materialize_result.engine, materialize_result.indicators, embedded_reference.indicators,
                             tolerance_for(materialize_result.engine, embedded_reference.bars), allow_warmup=False)

    def after_warmup(row: dict) -> bool:
        series = (row["symbol"], row["timeframe"])
        index = cmp.bar_index.get((row["symbol"], row["timeframe"], row["signal_ts"]))
        if index is None:
            return True  # a signal on a bar the reference lacks: let the comparison report it
        end = cmp.warmup_end.get(series)
        return end is None or index >= end + 2

    _check_signals(materialize_result, embedded_reference, comparable=after_warmup)
