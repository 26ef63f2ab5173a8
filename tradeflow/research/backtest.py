"""Backtests: a bounded replay of historical bars through the live components.

What does not depend on decisions is computed set-based, once: all bars of
the run are ingested in bulk into the backtest schema and every signal comes
from one read of `strategy_signal_history`. Only the sequential part runs in
order, through the same ReplaySession steps as the live loop: at each minute
where something can happen (a signal becomes decidable, or the paper broker
has a live order), policy changes, paper fills, the decision gate (reading
account state as of its clock, `engine.read_scope`) and the execution adapter.
Minutes where nothing can happen are skipped; they would change nothing.

A signal is decided when the live gate would first see it: at the close of
its bar once the bar is final (a higher-timeframe bar is final when all its
minutes are in, or at the next bar of the symbol), and only if that is within
max_signal_age of the bar's close.

Runs use one schema, `<schema>_backtest`, emptied at the start of each run;
results are copied into `backtest_*` tables of the main schema under the
run's run_id, where they stay next to other runs. Backtests run on the
embedded engine.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Callable, Literal

import pandas as pd
import psycopg

from adapters.paper import PaperConfig
from ingest.prices import PriceIngester
from tradeflow import engine
from tradeflow.config import Settings
from tradeflow.dbt import deploy
from tradeflow.research import performance
from tradeflow.research.report import ReportData, write_report
from tradeflow.trading import accounts, policy
from tradeflow.trading.gate import TIMEFRAMES, Signal
from tradeflow.trading.session import BAR, PolicyChange, ReplaySession

Outputs = Literal["matches-only", "full"]
# result table -> (relation of the backtest schema, outputs that keep it)
RESULTS = {
    "backtest_matches": ("trade_match_history", {"matches-only", "full"}),
    "backtest_decisions": ("trade_decisions", {"full"}),
    "backtest_order_events": ("order_events", {"full"}),
    "backtest_fills": ("exec_report_history", {"full"}),
    "backtest_equity": ("pnl_timeseries", {"full"}),
    "backtest_unrealized": ("unrealized_pnl_latest", {"full"}),
    "backtest_risk_events": ("risk_events", {"full"}),
}


TRADE_REPORT_COLUMNS = ("match_ts", "account_id", "strategy_id", "symbol", "closed_side", "matched_qty", "buy_price",
                        "sell_price", "realized_pnl", "fee_share")
STRATEGY_REPORT_COLUMNS = ("trades", "win_rate", "profit_factor", "avg_win", "avg_loss", "realized_pnl",
                           "exposure_time", "fees_paid")


class BacktestError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class AccountSpec:
    account_id: str
    capital: Decimal = Decimal(100_000)
    max_leverage: Decimal = Decimal(2)
    policy: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class BacktestSpec:
    start: datetime
    end: datetime
    accounts: tuple[AccountSpec, ...]
    symbols: tuple[str, ...] | None = None       # None: every symbol of the bars
    strategies: tuple[str, ...] | None = None    # None: every enabled strategy
    policy_changes: tuple[PolicyChange, ...] = ()
    paper: PaperConfig = PaperConfig()
    outputs: Outputs = "full"
    max_signal_age: timedelta = timedelta(minutes=2)
    shadow: bool = False  # also trade every signal in its strategy's paper account (the scoreboard's input)

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise BacktestError("start/end: must have a time zone")
        if self.end <= self.start:
            raise BacktestError(f"end: {self.end} is not after start {self.start}")
        if not self.accounts:
            raise BacktestError("accounts: a backtest needs at least one account")
        if self.outputs not in ("matches-only", "full"):
            raise BacktestError(f"outputs: {self.outputs!r} is not matches-only or full")

    def fingerprint(self, bars: pd.DataFrame) -> str:
        """Same spec and same bars, same fingerprint: the default run_id's stem."""
        digest = hashlib.sha256(json.dumps(asdict(self), default=str, sort_keys=True).encode())
        digest.update(pd.util.hash_pandas_object(bars.reset_index(drop=True), index=False).values.tobytes())
        return digest.hexdigest()[:12]


@dataclass
class BacktestResult:
    run_id: str
    bars: int
    signals: int
    decisions: int
    accepted: int
    rejects: dict[str, int]
    seconds: dict[str, float]
    metrics_by_account: pd.DataFrame
    metrics_by_strategy: pd.DataFrame

    @property
    def bars_per_second(self) -> float:
        return self.bars / max(sum(self.seconds.values()), 1e-9)


@dataclass(frozen=True)
class Analysis:
    equity: pd.DataFrame          # the run's combined equity (ts, equity)
    by_account: pd.DataFrame      # performance.metrics_by rows, plus the whole-run row
    by_strategy: pd.DataFrame
    trades: pd.DataFrame
    rejects: pd.DataFrame


def _json_number(value: object) -> object:
    """JSON has no NaN or infinity: NaN becomes null, infinities their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value.isoformat() if isinstance(value, (datetime, pd.Timestamp)) else value


def backtest_settings(settings: Settings) -> Settings:
    return replace(settings, schema=f"{settings.schema}_backtest")


def decision_times(bars: pd.DataFrame, signals: pd.DataFrame, max_signal_age: timedelta) -> pd.Series:
    """When the live gate first sees each signal (NaT: never, it would be stale).

    A bar of k minutes is final once its k minutes are in (at its close) or
    once the symbol has a later bar (at that bar's close)."""
    if signals.empty:
        return pd.Series([], dtype="datetime64[ns, UTC]")
    by_symbol = {symbol: frame.ts.sort_values().dt.tz_convert(None).to_numpy()
                 for symbol, frame in bars.groupby("symbol")}
    final_at: dict[object, pd.Timestamp] = {}
    for timeframe, group in signals.groupby("timeframe"):
        length = pd.Timedelta(TIMEFRAMES[timeframe])
        minutes = int(length / pd.Timedelta(BAR))
        for index, symbol, start in zip(group.index, group.symbol, group.signal_ts):
            times = by_symbol.get(symbol)
            if times is None:
                continue
            close = start + length
            lo, hi = (times.searchsorted(t.tz_convert(None).to_datetime64()) for t in (start, close))
            if hi - lo == minutes:
                final_at[index] = close
            elif hi < len(times):
                final_at[index] = pd.Timestamp(times[hi]).tz_localize("UTC") + pd.Timedelta(BAR)
    out = pd.Series(final_at, index=signals.index, dtype="datetime64[ns, UTC]")
    stale = out - (signals.signal_ts + signals.timeframe.map(lambda tf: pd.Timedelta(TIMEFRAMES[tf])))
    return out.where(stale <= pd.Timedelta(max_signal_age))


class Backtest:
    """model_vars: dbt vars the backtest schema is deployed with (e.g. other
    strategy params, pnl_method); the schema is redeployed whenever they or
    the models change."""

    def __init__(self, settings: Settings, *, model_vars: dict[str, object] | None = None) -> None:
        self.settings = settings
        self.bt_settings = backtest_settings(settings)
        self.model_vars = {"temporal_filter": False, **(model_vars or {})}

    def run(self, spec: BacktestSpec, bars: pd.DataFrame, *, run_id: str | None = None,
            on_progress: Callable[[int], None] | None = None, report: Path | None = None,
            tz: str = performance.DEFAULT_TZ) -> BacktestResult:
        bars = self._select_bars(spec, bars)
        run_id = run_id or f"bt-{spec.fingerprint(bars)}"
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        self._prepare_schema()
        with engine.connect(self.bt_settings) as conn:
            self._empty_raw_tables(conn)
            self._open_accounts(conn, spec)
            # bulk ingest on the run's last clock: every bar is in the past
            PriceIngester(conn, self.bt_settings, source=f"backtest:{run_id}", clock=lambda: spec.end).ingest(
                [bars.iloc[i:i + 100_000] for i in range(0, len(bars), 100_000)])
            conn.execute("ANALYZE price_1m_history")
            seconds["ingest"] = time.perf_counter() - started
            lap = time.perf_counter()
            signals = self._signals(conn, spec, bars)
            seconds["signals"] = time.perf_counter() - lap
            lap = time.perf_counter()
            session = ReplaySession(conn, self.bt_settings, paper=spec.paper, consumer="backtest",
                                    policy_changes=spec.policy_changes, max_signal_age=spec.max_signal_age,
                                    shadow=spec.shadow)
            self._replay(session, bars, signals, on_progress)
            seconds["replay"] = time.perf_counter() - lap
            lap = time.perf_counter()
            analysis = self._analyse(conn, spec, tz)
            seconds["metrics"] = time.perf_counter() - lap
            lap = time.perf_counter()
            self._store(conn, spec, run_id, bars, len(signals), session, seconds, analysis)
            if report is not None:
                write_report(self._report_data(spec, run_id, bars, analysis, tz), report)
            seconds["store"] = time.perf_counter() - lap
        stats = session.stats
        return BacktestResult(run_id, len(bars), len(signals), stats.decisions, stats.accepted, dict(stats.rejects),
                              {k: round(v, 3) for k, v in seconds.items()}, analysis.by_account,
                              analysis.by_strategy)

    # -- set-based part -----------------------------------------------------------
    @staticmethod
    def _select_bars(spec: BacktestSpec, bars: pd.DataFrame) -> pd.DataFrame:
        missing = {"symbol", "ts", "open", "high", "low", "close", "volume"} - set(bars.columns)
        if missing:
            raise BacktestError(f"bars: missing columns {sorted(missing)}")
        ts = pd.to_datetime(bars.ts, utc=True)
        keep = (ts >= spec.start) & (ts < spec.end)
        if spec.symbols is not None:
            unknown = set(spec.symbols) - set(bars.symbol)
            if unknown:
                raise BacktestError(f"symbols: no bars for {sorted(unknown)}")
            keep &= bars.symbol.isin(spec.symbols)
        selected = bars.assign(ts=ts)[keep].sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
        if selected.empty:
            raise BacktestError(f"bars: none between {spec.start} and {spec.end}")
        return selected

    def _prepare_schema(self) -> None:
        """Deploy the models into the backtest schema unless these very models and vars are there."""
        digest = hashlib.sha256(json.dumps(self.model_vars, sort_keys=True, default=str).encode())
        project = self.settings.project_dir
        for path in sorted([project / "dbt_project.yml", *(p for folder in ("models", "macros", "udfs")
                                                           for p in (project / folder).rglob("*") if p.is_file())]):
            digest.update(path.relative_to(project).as_posix().encode() + path.read_bytes())
        fingerprint = digest.hexdigest()
        marker = f'"{self.bt_settings.schema}".backtest_deployment'
        with engine.connect(self.settings) as conn:
            if engine.relation_exists(conn, self.bt_settings.schema, "backtest_deployment"):
                if conn.execute(f"SELECT fingerprint FROM {marker}").fetchone() == (fingerprint,):
                    return
        deploy(self.bt_settings, vars=self.model_vars)
        with engine.connect(self.settings) as conn:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {marker} (fingerprint text)")
            conn.execute(f"TRUNCATE {marker}")
            conn.execute(f"INSERT INTO {marker} VALUES (%s)", (fingerprint,))

    def _empty_raw_tables(self, conn: psycopg.Connection) -> None:
        """Every table of the backtest schema is a raw table (models are views), but the deployment marker."""
        tables = [row[0] for row in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'"
            " AND table_name <> 'backtest_deployment' ORDER BY table_name", (self.bt_settings.schema,))]
        conn.execute("TRUNCATE " + ", ".join(f'"{self.bt_settings.schema}".{t}' for t in tables))

    @staticmethod
    def _open_accounts(conn: psycopg.Connection, spec: BacktestSpec) -> None:
        opened = spec.start - timedelta(minutes=1)
        for account in spec.accounts:
            accounts.add(conn, account.account_id, capital=account.capital, max_leverage=account.max_leverage)
            policy.update(conn, account.account_id, updated_by="backtest", at=opened, **account.policy)

    @staticmethod
    def _signals(conn: psycopg.Connection, spec: BacktestSpec, bars: pd.DataFrame) -> pd.DataFrame:
        known = {row[0] for row in conn.execute("SELECT strategy_id FROM strategy_config WHERE enabled")}
        wanted = set(spec.strategies) if spec.strategies is not None else known
        if wanted - known:
            raise BacktestError(f"strategies: {sorted(wanted - known)} not registered or not enabled"
                                f" (enabled: {sorted(known)})")
        signals = engine.query_frame(
            conn, "SELECT signal_id, strategy_id, symbol, timeframe, signal_ts, action, size_hint, confidence,"
            " ref_price, atr_14 FROM strategy_signal_history WHERE strategy_id = ANY(%s) ORDER BY signal_ts, signal_id",
            (sorted(wanted),))
        if signals.empty:
            return signals.assign(decide_at=pd.Series(dtype="datetime64[ns, UTC]"))
        signals["signal_ts"] = pd.to_datetime(signals.signal_ts, utc=True)
        signals["decide_at"] = decision_times(bars, signals, spec.max_signal_age)
        return signals.dropna(subset=["decide_at"])

    # -- sequential part ------------------------------------------------------------
    @staticmethod
    def _replay(session: ReplaySession, bars: pd.DataFrame, signals: pd.DataFrame,
                on_progress: Callable[[int], None] | None) -> None:
        columns = [c for c in signals.columns if c in Signal.__slots__]
        due: dict[pd.Timestamp, list[Signal]] = {}
        for row in signals.itertuples(index=False):
            values = {c: getattr(row, c) for c in columns}
            values["signal_ts"] = values["signal_ts"].to_pydatetime()
            values["atr_14"] = None if pd.isna(values["atr_14"]) else float(values["atr_14"])
            due.setdefault(row.decide_at, []).append(Signal(**values))
        minutes = bars.groupby("ts", sort=True)
        for ts, minute in minutes:
            session.begin_minute(ts.to_pydatetime())
            session.trade(ts.to_pydatetime(), minute)
            pending = due.pop(ts + pd.Timedelta(BAR), None)
            if pending:
                session.decide(pending)
            session.end_minute(len(minute))
            if on_progress:
                on_progress(len(minute))
        session.close()

    # -- results ----------------------------------------------------------------------
    def _analyse(self, conn: psycopg.Connection, spec: BacktestSpec, tz: str) -> Analysis:
        """Metrics per account, per strategy and for the run, from the run's views at its end."""
        with engine.read_scope(conn, self.bt_settings, as_of=spec.end):
            equity = engine.query_frame(conn, "SELECT account_id, bar_ts AS ts, equity FROM pnl_timeseries")
            trades = engine.query_frame(conn, "SELECT * FROM trade_match_history ORDER BY match_ts, match_id")
            fills = performance.fills_from_exec_reports(engine.query_frame(conn, "SELECT * FROM stg_execs ORDER BY exec_ts"))
            rejects = engine.query_frame(conn, "SELECT reject_code, strategy_id, account_id, count(*) AS count"
                                   " FROM trade_rejections GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3")
        capital = {a.account_id: a.capital for a in spec.accounts}
        # every account starts the run at its capital (pnl_timeseries starts at its first fill)
        opening = pd.DataFrame({"account_id": list(capital), "ts": spec.start,
                                "equity": [float(c) for c in capital.values()]})
        equity = pd.concat([opening, performance.equity_from_pnl_timeseries(equity)], ignore_index=True)
        common = {"initial_equity": capital, "tz": tz}
        return Analysis(
            equity=performance.combine_equity(equity, "account_id", capital),
            by_account=performance.metrics_by("account_id", equity, trades, fills, **common),
            by_strategy=performance.metrics_by("strategy_id", equity, trades, fills, **common),
            trades=trades, rejects=rejects)

    @staticmethod
    def _report_data(spec: BacktestSpec, run_id: str, bars: pd.DataFrame, analysis: Analysis, tz: str) -> ReportData:
        daily = performance.daily_equity(analysis.equity, tz=tz, initial_equity=analysis.equity.attrs["initial_equity"])
        month_ends = daily.groupby(daily.index.to_period("M")).last()
        monthly = month_ends / month_ends.shift(1, fill_value=analysis.equity.attrs["initial_equity"]) - 1
        return ReportData(
            run_id=run_id, title=f"Backtest {run_id}", period_start=spec.start, period_end=spec.end,
            parameters={"symbols": ", ".join(sorted(bars.symbol.unique())),
                        "strategies": ", ".join(spec.strategies) if spec.strategies else "all enabled",
                        "accounts": ", ".join(f"{a.account_id} ({a.capital})" for a in spec.accounts),
                        "bars": f"{len(bars):,}", "fill model": str(spec.paper), "time zone": tz},
            equity=analysis.equity,
            # strategies share accounts: they have trade metrics, not equity curves of their own
            metrics_by_strategy=analysis.by_strategy[[c for c in STRATEGY_REPORT_COLUMNS
                                                      if c in analysis.by_strategy.columns]],
            metrics_by_account=analysis.by_account, monthly_returns=monthly,
            trades=analysis.trades[[c for c in TRADE_REPORT_COLUMNS if c in analysis.trades.columns]],
            rejects_by_code=analysis.rejects)

    def _store(self, conn: psycopg.Connection, spec: BacktestSpec, run_id: str, bars: pd.DataFrame, signals: int,
               session: ReplaySession, seconds: dict[str, float], analysis: Analysis) -> None:
        main, bt = self.settings.schema, self.bt_settings.schema
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{main}".backtest_runs (run_id text PRIMARY KEY, spec jsonb,'
                     ' period_start timestamptz, period_end timestamptz, symbols text[], bars bigint, signals bigint,'
                     ' decisions bigint, accepted bigint, rejects jsonb, seconds jsonb, finished_at timestamptz)')
        for table, (relation, kept_by) in RESULTS.items():
            conn.execute(f"CREATE TABLE IF NOT EXISTS \"{main}\".{table} AS"
                         f" SELECT ''::text AS run_id, * FROM \"{bt}\".{relation} WITH NO DATA")
            conn.execute(f'DELETE FROM "{main}".{table} WHERE run_id = %s', (run_id,))
            if spec.outputs in kept_by:
                # the snapshot at the run's end: open positions marked at the final prices
                with engine.read_scope(conn, self.bt_settings, as_of=spec.end):
                    conn.execute(f'INSERT INTO "{main}".{table} SELECT %s, * FROM "{bt}".{relation}', (run_id,))
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{main}".backtest_metrics (run_id text, scope text, key text,'
                     ' metrics jsonb, PRIMARY KEY (run_id, scope, key))')
        conn.execute(f'DELETE FROM "{main}".backtest_metrics WHERE run_id = %s', (run_id,))
        with conn.cursor() as cur:
            cur.executemany(f'INSERT INTO "{main}".backtest_metrics VALUES (%s, %s, %s, %s)', [
                (run_id, scope, str(key), json.dumps({k: _json_number(v) for k, v in row.items()}))
                for scope, frame in (("account", analysis.by_account), ("strategy", analysis.by_strategy))
                for key, row in frame.iterrows()])
        stats = session.stats
        conn.execute(
            f'INSERT INTO "{main}".backtest_runs VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())'
            ' ON CONFLICT (run_id) DO UPDATE SET spec = excluded.spec, period_start = excluded.period_start,'
            ' period_end = excluded.period_end, symbols = excluded.symbols, bars = excluded.bars,'
            ' signals = excluded.signals, decisions = excluded.decisions, accepted = excluded.accepted,'
            ' rejects = excluded.rejects, seconds = excluded.seconds, finished_at = excluded.finished_at',
            (run_id, json.dumps(asdict(spec), default=str), spec.start, spec.end, sorted(bars.symbol.unique()),
             len(bars), signals, stats.decisions, stats.accepted, json.dumps(stats.rejects),
             json.dumps({k: round(v, 3) for k, v in seconds.items()})))


__all__ = ["AccountSpec", "Backtest", "BacktestError", "BacktestResult", "BacktestSpec", "PolicyChange",
           "backtest_settings", "decision_times"]
