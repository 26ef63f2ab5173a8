"""Parameter sweeps and walk-forward runs over one ingest and one signal read.

A sweep is a grid of points (tradeflow.research.run_config: strategy params and fill model
fields). What the points share is done once: the bars go into the backtest schema once, and
every strategy parameter set of the grid is registered as a variant of its strategy (an entry
of the `strategies` dbt var with `of: <strategy>`, macros/strategies.sql), so one read of
`strategy_signal_history` computes each timeframe's indicators once and every variant's
signals from them. Then each point runs the decision-dependent part alone (Backtest._replay,
then Backtest._finish: write, check against the views, store, metrics) on its variants'
signals, renamed to the strategy's own id: a point's stored run is the single run with those
parameters, row for row. The points are pipelined over the machine's cores: a point's replay
(Python, in memory) runs while a process of its own writes, checks, stores and measures the
previous point; the raw tables are emptied for a point, and its rows written, once that is done.

Walk-forward (TRAIN:TEST trading days): rolling windows; in each, every point runs on the
TRAIN days, the best by `rank_by` runs on the TEST days that follow (out of sample). The
signals come from the whole period's bars, so indicators at a window's start are warmed up
by the bars before it (which the run could have known), never by later ones.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from adapters.paper import FILL_MODEL_FIELDS, fill_model
from tradeflow import engine
from tradeflow.research import performance
from tradeflow.research.backtest import (WRITTEN_COLUMNS, Backtest, BacktestError, BacktestResult, BacktestSpec,
                                         RunShape)
from tradeflow.research.finishing import Finisher
from tradeflow.research.report import write_sweep_report
from tradeflow.research.run_config import RunPlan
from tradeflow.trading.gate import load_terms
from tradeflow.writer import BackgroundCopy

SHARED_TABLES = ("price_1m_history", "instruments")  # raw tables every point reads as they were loaded
LOWER_IS_BETTER = {"max_drawdown_duration", "annual_volatility", "fees_paid", "turnover"}
RANKING_METRICS = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "profit_factor", "realized_pnl")


@dataclass(frozen=True)
class SweepOutcome:
    sweep_id: str
    ranking: pd.DataFrame               # one row per grid run, best first
    walk_forward: pd.DataFrame | None   # one row per window: the in-sample winner and its out-of-sample run


@dataclass(frozen=True)
class _Point:
    values: dict[str, Any]              # swept key -> value
    variants: dict[str, str]            # strategy -> its variant id for this point
    params: dict[str, dict[str, Any]]   # strategy -> params of the variant


class Sweep:
    """on_run(done, total) after each run (the progress bar across the grid)."""

    def __init__(self, backtest: Backtest, plan: RunPlan,
                 on_run: Callable[[int, int], None] | None = None) -> None:
        self.plan, self.on_run = plan, on_run
        self.points, model_vars = _variants(plan)
        self.bt = Backtest(backtest.settings, model_vars=model_vars)
        self.done = 0

    def run(self, bars: pd.DataFrame | None) -> SweepOutcome:
        plan, spec, bt = self.plan, self.plan.spec, self.bt
        bt.check_main_schema(bars is None)
        bt._prepare_schema()
        with engine.connect(bt.bt_settings) as conn, Finisher(bt) as finisher:
            bt.ensure_result_tables(conn)
            bt._empty_raw_tables(conn)
            bars = bt._load_bars(conn, spec, bars)
            bt._copy_instruments(conn)
            sweep_id = plan.config["run_id"] or self._sweep_id(bars)
            signals = bt._signals(conn, replace(spec, strategies=self._strategies(conn)), bars)
            terms = load_terms(conn)
            if plan.walk_forward is None:
                self.total = len(self.points)
                results = self._run_points(conn, finisher, [(point, spec, bars, signals, f"{sweep_id}-{k}")
                                                            for k, point in enumerate(self.points, 1)], terms)
                ranking = self._ranking(results)
                walk = None
            else:
                ranking, walk = self._walk_forward(conn, finisher, spec, bars, signals, terms, sweep_id)
        self._store(sweep_id, ranking, walk)
        if plan.report:
            write_sweep_report(plan.report, sweep_id=sweep_id, keys=list(plan.config["sweep"]),
                               metric=plan.config["rank_by"], ranking=ranking, walk_forward=walk)
        return SweepOutcome(sweep_id, ranking, walk)

    # -- the runs ---------------------------------------------------------------------------
    def _run_points(self, conn, finisher: Finisher,
                    runs: list[tuple[_Point, BacktestSpec, pd.DataFrame, pd.DataFrame, str]],
                    terms: tuple[dict, dict]) -> list[tuple[_Point, BacktestResult]]:
        """Each run (point, spec, bars, signals, run_id) in order: its replay here, then its write,
        check, store and metrics (Backtest._finish) in the finishing process while the next run
        replays. A run's first rows for the raw tables wait for the previous run's finish: only
        then are the raw tables emptied and the run's accounts opened."""
        bt, done = self.bt, []
        previous: _Point | None = None  # the run being finished
        for point, spec, bars, signals, run_id in runs:
            spec, signals, seconds = self._spec_of(point, spec), self._signals_of(point, signals), {"waited": 0.0}
            started = time.perf_counter()
            with BackgroundCopy(lambda: engine.connect(bt.bt_settings), WRITTEN_COLUMNS) as copy:
                replay = bt._replay(conn, spec, bars, signals, run_id,
                                    self._sink_after(conn, finisher, previous, spec, copy, done, seconds), None,
                                    self._terms_of(point, terms))
            seconds["replay"] = time.perf_counter() - started - seconds.pop("waited")
            finisher.start(spec, RunShape.of(bars, signals), run_id, replay.outcome(), seconds,
                           self.plan.config["tz"], self._config_of(point, spec, run_id))
            previous = point
        if previous is not None:
            self._collect(finisher, previous, done)
        return done

    def _sink_after(self, conn, finisher: Finisher, previous: _Point | None, spec: BacktestSpec,
                    copy: BackgroundCopy, done: list[tuple[_Point, BacktestResult]], seconds: dict[str, float]
                    ) -> Callable[[dict[str, list[tuple]]], None]:
        """A replay's sink whose first rows wait for the previous run to finish (raising what it
        raised), then empty the raw tables and open this run's accounts; rows go to `copy`."""
        ready = False

        def sink(rows: dict[str, list[tuple]]) -> None:
            nonlocal ready
            if not ready:
                waiting = time.perf_counter()
                if previous is not None:
                    self._collect(finisher, previous, done)
                self.bt._empty_raw_tables(conn, keep=SHARED_TABLES)
                self.bt._open_accounts(conn, spec)
                seconds["waited"] += time.perf_counter() - waiting
                ready = True
            copy.put(rows)
        return sink

    def _collect(self, finisher: Finisher, point: _Point, done: list[tuple[_Point, BacktestResult]]) -> None:
        done.append((point, finisher.result()))
        self.done += 1
        if self.on_run:
            self.on_run(self.done, self.total)

    @staticmethod
    def _spec_of(point: _Point, spec: BacktestSpec) -> BacktestSpec:
        fills = {k: v for k, v in point.values.items() if k in FILL_MODEL_FIELDS}
        return replace(spec, paper=fill_model(fills, spec.paper)) if fills else spec

    @staticmethod
    def _terms_of(point: _Point, terms: tuple[dict, dict]) -> tuple[dict, dict]:
        """The gate's terms with each swept strategy sized as its variant."""
        sizing, multipliers = terms
        return {**sizing, **{strategy: sizing[variant] for strategy, variant in point.variants.items()}}, multipliers

    def _signals_of(self, point: _Point, signals: pd.DataFrame) -> pd.DataFrame:
        """The point's signals under the strategies' own ids (other points' variants dropped)."""
        own = {variant: strategy for strategy, variant in point.variants.items()}
        others = {v for p in self.points for v in p.variants.values()} - set(own)
        out = signals[~signals.strategy_id.isin(others)].copy()
        renamed = out.strategy_id.map(own)
        hit = renamed.notna()
        if hit.any():
            # signal ids read "<strategy_id>:<symbol>:<timeframe>:<epoch>"
            out.loc[hit, "signal_id"] = renamed[hit] + ":" + out.signal_id[hit].str.partition(":")[2]
            out.loc[hit, "strategy_id"] = renamed[hit]
        return out

    def _config_of(self, point: _Point, spec: BacktestSpec, run_id: str) -> dict[str, Any]:
        """The configuration that repeats this run alone, in full: the point's values set, no sweep."""
        config = dict(self.plan.config)
        config["set"] = {**config["set"], **{k: v for k, v in point.values.items() if k not in FILL_MODEL_FIELDS}}
        config.update({k: v for k, v in point.values.items() if k in FILL_MODEL_FIELDS})
        config.update({"sweep": {}, "walk_forward": None, "run_id": run_id, "report": None, "outputs": "full",
                       "from": spec.start.isoformat(), "to": spec.end.isoformat()})
        return config

    # -- grid and windows -------------------------------------------------------------------
    def _ranking(self, results: list[tuple[_Point, BacktestResult]]) -> pd.DataFrame:
        metric = self.plan.config["rank_by"]
        rows = []
        for point, result in results:
            run = result.metrics_by_account.loc[performance.RUN_LABEL]
            rows.append({"run_id": result.run_id, **point.values, metric: run[metric],
                         **{m: run[m] for m in RANKING_METRICS if m != metric}, "decisions": result.decisions})
        frame = pd.DataFrame(rows)
        frame = frame.sort_values(metric, ascending=metric in LOWER_IS_BETTER, kind="stable", na_position="last")
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame.reset_index(drop=True)

    def _walk_forward(self, conn, finisher: Finisher, spec: BacktestSpec, bars: pd.DataFrame,
                      signals: pd.DataFrame, terms: tuple[dict, dict],
                      sweep_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        train, test = self.plan.walk_forward
        days = pd.DatetimeIndex(bars.ts.dt.floor("D").unique()).sort_values()
        if len(days) < train + test:
            raise BacktestError(f"walk_forward: {len(days)} trading days in the period, {train}+{test} needed")
        starts = range(0, len(days) - train - test + 1, test)
        self.total = len(starts) * (len(self.points) + 1)
        rankings, windows = [], []
        metric = self.plan.config["rank_by"]
        for w, first in enumerate(starts, 1):
            edges = [days[first], days[first + train], days[first + train + test - 1] + pd.Timedelta(days=1)]
            in_spec, out_spec = (replace(spec, start=a.to_pydatetime(), end=b.to_pydatetime())
                                 for a, b in ((edges[0], edges[1]), (edges[1], edges[2])))
            results = self._run_points(conn, finisher, [
                (point, in_spec, *_window(bars, signals, in_spec), f"{sweep_id}-w{w}-{k}")
                for k, point in enumerate(self.points, 1)], terms)
            ranking = self._ranking(results)
            winner = next(point for point, result in results if result.run_id == ranking.run_id.iloc[0])
            [(_, oos)] = self._run_points(conn, finisher, [(winner, out_spec, *_window(bars, signals, out_spec),
                                                            f"{sweep_id}-w{w}-oos")], terms)
            out_run = oos.metrics_by_account.loc[performance.RUN_LABEL]
            rankings.append(ranking.assign(window=w))
            windows.append({"window": w, "train": f"{edges[0]:%Y-%m-%d} → {edges[1]:%Y-%m-%d}",
                            "test": f"{edges[1]:%Y-%m-%d} → {edges[2]:%Y-%m-%d}", **winner.values,
                            f"in_sample_{metric}": ranking.iloc[0][metric], f"out_of_sample_{metric}": out_run[metric],
                            "out_of_sample_return": out_run["total_return"], "out_of_sample_trades": out_run["trades"],
                            "run_id": oos.run_id})
        return pd.concat(rankings, ignore_index=True), pd.DataFrame(windows)

    # -- set-up -----------------------------------------------------------------------------
    def _strategies(self, conn) -> tuple[str, ...]:
        """Every strategy the runs trade, swept ones as their variants."""
        wanted = self.plan.spec.strategies or tuple(
            sid for sid, cfg in self.plan.model_vars["strategies"].items() if cfg.get("enabled", True))
        swept = {s for p in self.points for s in p.variants}
        variants = sorted({v for p in self.points for v in p.variants.values()})
        return tuple(s for s in wanted if s not in swept) + tuple(variants)

    def _sweep_id(self, bars: pd.DataFrame) -> str:
        inputs = {k: v for k, v in self.plan.config.items() if k not in ("run_id", "report")}
        digest = hashlib.sha256(self.plan.spec.fingerprint(bars).encode())
        digest.update(json.dumps(inputs, sort_keys=True, default=str).encode())
        return f"sw-{digest.hexdigest()[:12]}"

    def _store(self, sweep_id: str, ranking: pd.DataFrame, walk: pd.DataFrame | None) -> None:
        main = self.bt.settings.schema
        with engine.connect(self.bt.settings) as conn:
            conn.execute(f'CREATE TABLE IF NOT EXISTS "{main}".backtest_sweeps (sweep_id text PRIMARY KEY,'
                         ' config jsonb, ranking jsonb, walk_forward jsonb, finished_at timestamptz)')
            conn.execute(
                f'INSERT INTO "{main}".backtest_sweeps VALUES (%s, %s, %s, %s, now()) ON CONFLICT (sweep_id) DO UPDATE'
                " SET config = excluded.config, ranking = excluded.ranking, walk_forward = excluded.walk_forward,"
                " finished_at = excluded.finished_at",
                (sweep_id, json.dumps(self.plan.config), ranking.to_json(orient="records"),
                 None if walk is None else walk.to_json(orient="records")))


def _window(bars: pd.DataFrame, signals: pd.DataFrame, spec: BacktestSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    in_bars = (bars.ts >= spec.start) & (bars.ts < spec.end)
    in_signals = (signals.signal_ts >= spec.start) & (signals.signal_ts < spec.end)
    return bars[in_bars].reset_index(drop=True), signals[in_signals]


def _variants(plan: RunPlan) -> tuple[list[_Point], dict[str, Any]]:
    """The grid's points and the dbt vars registering one variant per strategy parameter set
    (id <strategy>__<n>, `of: <strategy>`)."""
    strategies = plan.model_vars["strategies"]
    ids: dict[tuple[str, str], str] = {}
    registered = dict(strategies)
    points = []
    for values in plan.grid:
        params: dict[str, dict[str, Any]] = {}
        for key, value in values.items():
            if key in FILL_MODEL_FIELDS:
                continue
            strategy, _, name = key.partition(".")
            params.setdefault(strategy, dict(strategies[strategy].get("params") or {}))[name] = value
        variants = {}
        for strategy, p in params.items():
            marker = (strategy, json.dumps(p, sort_keys=True))
            if marker not in ids:
                ids[marker] = f"{strategy}__{sum(1 for s, _ in ids if s == strategy) + 1}"
                registered[ids[marker]] = {**strategies[strategy], "params": p, "of": strategy, "enabled": True}
            variants[strategy] = ids[marker]
        points.append(_Point(values=dict(values), variants=variants, params=params))
    return points, {**plan.model_vars, "strategies": registered}
