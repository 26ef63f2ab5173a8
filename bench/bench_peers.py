#!/usr/bin/env python3
"""tradeflow against NautilusTrader (and vectorbt as a reference row): the same
sma_crossover on the same bars, same fill model and fees, all in this one
process. Prints JSON, with the account-book issue's targets (bars/s ratio to
NautilusTrader >= 2x at 1 symbol, 5x at 10, 10x at 100 over a year; peak RSS
under 3 GiB at 100 symbols; the whole run within 2x of its ingest + signals).

For each symbol count (``--symbols``, default 1,10,100) over ``--days`` (default
252) days of synthetic 1-minute bars (ingest/synthetic.py, 390 bars a day):

* tradeflow: ``Backtest.run`` on a scratch embedded engine, end to end: bulk
  ingest, signals (indicators + strategy views), replay (decisions, orders,
  fills), metrics (P&L views, performance) and store. The backtest schema is
  deployed before the clock starts (paid once per model
  version, not per run; ``tradeflow_deploy_seconds`` in the output).
* NautilusTrader: ``bench/nautilus_sma.py`` (``BacktestEngine``, bar execution;
  see its docstring for the exact venue), timed as setup (engine, instruments,
  DataFrame -> Bar, add_data) + ``engine.run()``.

Aligned terms
    sma_crossover fast 5 / slow 21, fixed 100 shares (strategy param
    ``fixed_qty``), long-only (BUY when flat, SELL closes the long); one account
    with capital 1e12 and limits that never bind; a MARKET order fills whole at
    the close of the bar that triggered it (tradeflow ``PaperConfig(fill_at=
    "signal_close")``, Nautilus bar execution), fee 1 bp of notional rounded to
    the cent half away from zero, no slippage, no volume cap. tradeflow's DAY
    orders: ``session_end=None`` (see ``--session-end``): with the default
    21:00 UTC the paper broker refuses the orders of the session's last bar
    (20:59, decided at 21:00) before the signal_close fill.

Agreement
    Trade lists compared row by row on (signal bar open ts, symbol, side, qty,
    price, fee), exact to the cent; both also against the pandas reference
    (``nautilus_sma.expected_trades``). Realized P&L per symbol, average cost:
    tradeflow's ``realized_pnl_latest`` of the backtest schema (deployed with
    ``pnl_method=average_cost``) against Nautilus' positions. Nautilus books
    the opening commission of a still-open position as realized (negative)
    P&L; tradeflow keeps it with the open position, so net P&L is compared with
    that fee added back to Nautilus' figure (both raw numbers are reported).

* vectorbt: ``Portfolio.from_signals`` on the same crossover signals (needs
  ``vectorbt`` and ``plotly<6`` next to it); a reference row, no target.

Usage:
    python bench/bench_peers.py [--symbols 1,10,100] [--days 252] [--seed 7]
        [--out FILE] [--engines tradeflow,nautilus,vectorbt] [--tradeflow-limit S]
        [--session-end HH:MM|none] [--profile N]

``--tradeflow-limit S``: stop a tradeflow run once it has used S seconds
(checked each replayed minute, so not during the bulk ingest and signals) and
report how far it got, with a trace of (seconds, bars replayed) and two
estimates of the whole run, marked EXTRAPOLATED: a floor (the rest at the last
minute's cost per bar, which only grew in every run) and a power-law fit; the
ratio to NautilusTrader is then an upper bound. The targets section counts a
run that used more time than a target allows as not met.

``--profile N``: also run cProfile over tradeflow's run (N top functions by
cumulative and by own time); profiling slows the run, its seconds are not the
benchmark's. Dependencies: the project plus ``nautilus_trader==1.221.0``
(which needs pandas < 3), vectorbt and plotly<6, e.g. in a separate venv:
``uv pip install -e .[test] nautilus_trader==1.221.0 vectorbt "plotly<6"``.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import platform
import pstats
import resource
import sys
import time
import warnings
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from nautilus_sma import (  # bench/ is on sys.path
    TRADE_COLUMNS,
    average_cost_pnl,
    expected_trades,
    run_nautilus,
    synthetic_bars,
)
from scratch import scratch_engine  # also puts the project on sys.path

from adapters.paper import PaperConfig  # noqa: E402
from tradeflow import engine  # noqa: E402
from tradeflow.research.backtest import AccountSpec, Backtest, BacktestSpec  # noqa: E402

FAST, SLOW, QTY = 5, 21, 100
FEE_BPS = 1
CAPITAL = Decimal(10) ** 12
ACCOUNT = "PEER"
STRATEGY = "sma_crossover"
# tradeflow bars/s over NautilusTrader's, per symbol count (a year of 1-minute bars)
TARGET_RATIOS = {1: 2.0, 10: 5.0, 100: 10.0}
TARGET_PEAK_RSS_MIB = 3 * 1024   # at 9.8M bars (100 symbols x 252 days)
TARGET_SETUP_MULTIPLE = 2.0      # the whole run within 2x of its ingest plus signal pass
BAR = pd.Timedelta(minutes=1)
# pandas 2 (which nautilus_trader needs) warns on every ingest chunk about pandas-3 behaviour changes
warnings.filterwarnings("ignore", category=FutureWarning)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- tradeflow ------------------------------------------------------------------------

def model_vars(project_dir: Path) -> dict:
    """The project's strategies var with only sma_crossover enabled (fast 5, slow 21,
    fixed 100 shares), and average-cost P&L."""
    strategies = yaml.safe_load((project_dir / "dbt_project.yml").read_text())["vars"]["strategies"]
    strategies = {name: {**cfg, "enabled": False} for name, cfg in strategies.items()}
    strategies[STRATEGY] = {**strategies[STRATEGY], "enabled": True,
                            "params": {"fast": FAST, "slow": SLOW, "fixed_qty": QTY}}
    return {"strategies": strategies, "pnl_method": "average_cost"}


def paper_config(session_end: dtime | None) -> PaperConfig:
    return PaperConfig(fill_at="signal_close", fee_bps=Decimal(FEE_BPS), fee_rounding="nearest",
                       slippage_bps=Decimal(0), fee_per_share=Decimal(0), min_fee=Decimal(0),
                       max_participation=Decimal(1), session_end=session_end)


def spec_for(bars: pd.DataFrame, session_end: dtime | None) -> BacktestSpec:
    ts = pd.to_datetime(bars.ts, utc=True)
    return BacktestSpec(
        start=ts.min().to_pydatetime(), end=(ts.max() + BAR).to_pydatetime(),
        accounts=(AccountSpec(ACCOUNT, capital=CAPITAL, max_leverage=Decimal(4),
                              policy={"max_open_symbols": 100_000, "allow_scale_in": False,
                                      "sell_requires_long": True}),),
        strategies=(STRATEGY,), paper=paper_config(session_end), outputs="full")


class TimeLimit(Exception):
    pass


class Progress:
    """on_progress of Backtest.run (called per replayed minute): a trace of
    (seconds since the run started, bars replayed) every 1/points of the bars or
    15 s, and the time limit (checked every minute; it cannot stop the bulk
    ingest and signals, which run before the first minute)."""

    def __init__(self, total_bars: int, limit: float | None, points: int = 40) -> None:
        self.total, self.limit = total_bars, limit
        self.step = max(1, total_bars // points)
        self.started = time.perf_counter()
        self.replay_started: float | None = None
        self.last_point = self.started
        self.done = 0
        self.next_mark = self.step
        self.trace: list[tuple[float, int]] = []

    def __call__(self, bars: int) -> None:
        now = time.perf_counter()
        if self.replay_started is None:
            self.replay_started = now
        self.done += bars
        over = self.limit is not None and now - self.started > self.limit
        if self.done >= self.next_mark or now - self.last_point >= 15 or over:
            self.trace.append((round(now - self.started, 2), self.done))
            self.last_point = now
            while self.next_mark <= self.done:
                self.next_mark += self.step
        if over:
            raise TimeLimit()


def extrapolate(progress: Progress) -> dict:
    """Run time for all the bars from the trace of an unfinished run. Two
    estimates, neither a measurement:
    * floor: the time so far plus the remaining bars at the cost per bar of the
      trace's last minute (a floor as long as that cost does not fall; in every
      run so far it only grew);
    * power law: replay time T(x) = c * x^p (x = bars replayed) fitted on the
      second half of the trace."""
    t0 = progress.replay_started - progress.started
    pts = [(t - t0, x) for t, x in progress.trace if t > t0]
    if len(pts) < 3:
        return {"note": "too few trace points to extrapolate"}
    end_t, end_x = pts[-1]
    start_t, start_x = next((p for p in reversed(pts) if p[0] <= end_t - 60), pts[len(pts) // 2])
    per_bar = (end_t - start_t) / max(end_x - start_x, 1)
    half = pts[len(pts) // 2:]
    p, logc = np.polyfit(np.log([x for _, x in half]), np.log([t for t, _ in half]), 1)
    replay = float(np.exp(logc) * progress.total ** p)
    return {"EXTRAPOLATED_not_measured": True,
            "last_minute_ms_per_bar": round(per_bar * 1000, 2),
            "floor_total_seconds": round(t0 + end_t + per_bar * (progress.total - end_x), 1),
            "power_law": {"fit": "replay_seconds = c * bars_replayed^p on the trace's second half",
                          "p": round(float(p), 3), "total_seconds": round(t0 + replay, 1)}}


def run_tradeflow(bt: Backtest, conn, bars: pd.DataFrame, run_id: str, session_end: dtime | None,
                  profile: int = 0, limit: float | None = None) -> dict:
    spec = spec_for(bars, session_end)
    profiler = cProfile.Profile() if profile else None
    progress = Progress(len(bars), limit)
    t0 = progress.started
    if profiler:
        profiler.enable()
    try:
        result = bt.run(spec, bars, run_id=run_id, on_progress=progress)
    except TimeLimit:
        result = None
    finally:
        if profiler:
            profiler.disable()
    wall = time.perf_counter() - t0
    if result is None:
        with engine.connect(bt.bt_settings) as bt_conn:
            decided = bt_conn.execute("SELECT count(*), count(*) FILTER (WHERE outcome = 'ACCEPTED'),"
                                      " max(decided_at) FROM trade_decisions").fetchone()
        out = {"finished": False, "time_limit_seconds": limit, "stopped_after_seconds": round(wall, 1),
               "setup_seconds_ingest_and_signals": round(progress.replay_started - t0, 3),
               "bars_replayed": progress.done, "of_bars": len(bars),
               "decisions_so_far": decided[0], "accepted_so_far": decided[1], "replay_clock_reached": str(decided[2]),
               "trace_seconds_bars": progress.trace, "extrapolation": extrapolate(progress)}
        if profiler:
            out["profile"] = profile_summary(profiler, profile)
        return out
    main = bt.settings.schema
    fills = pd.DataFrame(conn.execute(
        f'SELECT symbol, side, fill_qty, fill_price, fee, exec_ts, order_id FROM "{main}".backtest_fills'
        " WHERE run_id = %s ORDER BY exec_ts, symbol", (run_id,)).fetchall(),
        columns=["symbol", "side", "qty", "price", "fee", "exec_ts", "order_id"])
    exec_ts = pd.to_datetime(fills.exec_ts, utc=True)
    trades = pd.DataFrame({
        "ts": exec_ts - BAR,  # stamped at the order's created_at = the signal bar's close
        "symbol": fills.symbol.astype(str), "side": fills.side.astype(str),
        "qty": fills.qty.astype(float).astype(np.int64), "price": fills.price.astype(float),
        "fee": fills.fee.astype(float), "fill_ts": exec_ts})
    # the backtest schema's own view, as the run left it (the next run empties the schema)
    with engine.connect(bt.bt_settings) as bt_conn, engine.read_scope(bt_conn, bt.bt_settings, as_of=spec.end):
        pnl = engine.query_frame(bt_conn, "SELECT symbol, method, realized_pnl_gross, fees, realized_pnl"
                                 " FROM realized_pnl_latest WHERE account_id = %s AND strategy_id = %s",
                                 (ACCOUNT, STRATEGY))
    methods = sorted(set(pnl.method))
    pnl = pnl.drop(columns="method").set_index("symbol").astype(float)
    pnl.columns = ["realized_pnl_gross", "fees", "realized_pnl_net"]
    out = {
        "finished": True,
        "run_id": result.run_id,
        "seconds": round(sum(result.seconds.values()), 3),
        "wall_seconds": round(wall, 3),
        "breakdown_seconds": result.seconds,
        "bars_per_second": round(result.bars_per_second, 1),
        "signals": result.signals, "decisions": result.decisions, "accepted": result.accepted,
        "rejects": result.rejects, "trades": len(trades), "pnl_method": methods,
        "trace_seconds_bars": progress.trace,
        "_trades": trades, "_pnl": pnl,
    }
    if profiler:
        out["profile"] = profile_summary(profiler, profile)
    return out


def profile_summary(profiler: cProfile.Profile, top: int) -> dict:
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (filename, line, name), (cc, nc, tt, ct, _callers) in stats.stats.items():
        rows.append({"function": f"{_short(filename)}:{line}({name})", "calls": nc, "own_s": round(tt, 3),
                     "cumulative_s": round(ct, 3)})
    by_cum = sorted(rows, key=lambda r: -r["cumulative_s"])[:top]
    by_own = sorted(rows, key=lambda r: -r["own_s"])[:top]
    return {"profiled_seconds": round(total, 3), "top_cumulative": by_cum, "top_own": by_own}


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- vectorbt -------------------------------------------------------------------------------

def run_vectorbt(bars: pd.DataFrame) -> dict:
    """vectorbt as a reference row: ``Portfolio.from_signals`` on the same crossover
    signals (nautilus_sma.crossover_signals), 100 shares long-only, filled at the
    signal bar's close, 1 bp fees (a fraction of notional: vectorbt does not round
    fees to the cent). Timed from the bars to the trade records."""
    import vectorbt as vbt
    from nautilus_sma import crossover_signals

    started = time.perf_counter()
    close = bars.pivot(index="ts", columns="symbol", values="close").sort_index()
    signals = crossover_signals(bars, FAST, SLOW)
    wide = lambda action: (signals[signals.action == action].assign(hit=True)  # noqa: E731
                           .pivot(index="ts", columns="symbol", values="hit")
                           .reindex(index=close.index, columns=close.columns).fillna(False).astype(bool))
    portfolio = vbt.Portfolio.from_signals(close, entries=wide("BUY"), exits=wide("SELL"), size=QTY,
                                           size_type="amount", fees=FEE_BPS / 10_000, init_cash=float(CAPITAL),
                                           direction="longonly", freq="1min")
    orders = portfolio.orders.records_readable
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "bars_per_second": round(len(bars) / seconds, 1), "orders": len(orders),
            "total_fees": round(float(orders["Fees"].sum()), 2), "version": vbt.__version__}


# -- agreement ---------------------------------------------------------------------------

def diff_trades(a: pd.DataFrame, b: pd.DataFrame, names=("tradeflow", "nautilus")) -> dict:
    """Row-by-row comparison on TRADE_COLUMNS (prices and fees to the cent), with the first mismatch."""
    def norm(frame: pd.DataFrame) -> pd.DataFrame:
        f = frame[TRADE_COLUMNS].copy()
        f["ts"] = pd.to_datetime(f.ts, utc=True)
        f["qty"] = f.qty.astype(np.int64)
        f["price_c"] = np.rint(f.price.astype(float) * 100).astype(np.int64)
        f["fee_c"] = np.rint(f.fee.astype(float) * 100).astype(np.int64)
        return f.sort_values(["ts", "symbol", "side"], kind="stable").reset_index(drop=True)

    x, y = norm(a), norm(b)
    keys = ["ts", "symbol", "side", "qty", "price_c", "fee_c"]
    merged = x[keys].merge(y[keys], on=keys, how="outer", indicator=True)
    only_a = merged[merged._merge == "left_only"]
    only_b = merged[merged._merge == "right_only"]
    out = {names[0]: len(x), names[1]: len(y), f"only_{names[0]}": len(only_a), f"only_{names[1]}": len(only_b),
           "equal": len(only_a) == 0 and len(only_b) == 0 and len(x) == len(y)}
    if not out["equal"]:
        # first row (by ts) present on one side only, shown with its counterpart on the same bar
        first = pd.concat([only_a.assign(side_of=names[0]), only_b.assign(side_of=names[1])]).sort_values("ts").iloc[0]
        same_bar = lambda f: f[(f.ts == first.ts) & (f.symbol == first.symbol)]  # noqa: E731
        out["first_mismatch"] = {
            "ts": str(first.ts), "symbol": first.symbol, "only_in": first.side_of,
            names[0]: _rows(same_bar(x)), names[1]: _rows(same_bar(y))}
    return out


def _rows(frame: pd.DataFrame) -> list[dict]:
    return [{"ts": str(r.ts), "symbol": r.symbol, "side": r.side, "qty": int(r.qty), "price": r.price_c / 100,
             "fee": r.fee_c / 100} for r in frame.itertuples()]


def open_fees(trades: pd.DataFrame) -> pd.Series:
    """Per symbol, the fee of the BUY that opened a position still open at the end (long-only, whole fills)."""
    out = {}
    for symbol, g in trades.sort_values("ts", kind="stable").groupby("symbol"):
        net = int((np.where(g.side == "BUY", 1, -1) * g.qty).sum())
        out[symbol] = float(g.fee.iloc[-1]) if net > 0 and g.side.iloc[-1] == "BUY" else 0.0
    return pd.Series(out, dtype=float)


def diff_pnl(tf_pnl: pd.DataFrame, nt_pnl: pd.DataFrame, nt_trades: pd.DataFrame, reference: pd.DataFrame) -> dict:
    symbols = sorted(set(tf_pnl.index) | set(nt_pnl.index[nt_pnl.positions > 0]) | set(reference.index))
    tf = tf_pnl.reindex(symbols).fillna(0.0)
    nt = nt_pnl.reindex(symbols).fillna(0.0)
    ref = reference.reindex(symbols).fillna(0.0)
    nt_open = open_fees(nt_trades).reindex(symbols).fillna(0.0)
    nt_net_closed = nt.realized_pnl_net + nt_open  # Nautilus net without the open positions' opening fees
    d_gross = (tf.realized_pnl_gross - nt.realized_pnl_gross).abs()
    d_net = (tf.realized_pnl_net - nt_net_closed).abs()
    d_ref = (tf.realized_pnl_gross - ref.realized_pnl_gross).abs()
    tol = 0.005  # half a cent: tradeflow's average cost is float8 (about 1e-12 relative)
    worst = d_gross.idxmax() if len(symbols) else None
    return {
        "symbols": len(symbols),
        "tradeflow_total_gross": round(float(tf.realized_pnl_gross.sum()), 2),
        "nautilus_total_gross": round(float(nt.realized_pnl_gross.sum()), 2),
        "tradeflow_total_net": round(float(tf.realized_pnl_net.sum()), 2),
        "nautilus_total_net": round(float(nt.realized_pnl_net.sum()), 2),
        "nautilus_open_position_fees": round(float(nt_open.sum()), 2),
        "max_abs_diff_gross": round(float(d_gross.max()), 6) if len(symbols) else 0.0,
        "max_abs_diff_net_closed": round(float(d_net.max()), 6) if len(symbols) else 0.0,
        "max_abs_diff_gross_vs_reference": round(float(d_ref.max()), 6) if len(symbols) else 0.0,
        "worst_symbol": worst,
        "equal": bool((d_gross <= tol).all() and (d_net <= tol).all()),
    }


# -- driver ---------------------------------------------------------------------------------

def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM; Linux: clear_refs 5); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """VmHWM since the last reset, else the process's ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_size(n: int, days: int, seed: int, engines: set[str], bt: Backtest | None, conn, session_end,
             profile: int, limit: float | None) -> dict:
    log(f"{n} symbols x {days} days: generating bars")
    bars = synthetic_bars(n, days, seed)
    out: dict = {"symbols": n, "days": days, "bars": len(bars)}
    reference = expected_trades(bars, FAST, SLOW, QTY, FEE_BPS)
    out["reference_trades"] = len(reference)
    tf = nt = None
    if "tradeflow" in engines:
        log(f"{n} x {days}: tradeflow ({len(bars):,} bars)")
        gc.collect()
        measured_alone = reset_peak_rss()
        tf = run_tradeflow(bt, conn, bars, f"peers-{n}x{days}", session_end, profile, limit)
        # the high-water mark during the run, the bars it was handed included (where the
        # kernel cannot reset it: the process's so far, the reference trades' work included)
        tf["peak_rss_mib"] = peak_rss_mib()
        tf["peak_rss_scope"] = "the tradeflow run" if measured_alone else "this process so far"
        out["tradeflow"] = {k: v for k, v in tf.items() if not k.startswith("_")}
        if tf["finished"]:
            log(f"  tradeflow {tf['seconds']} s {tf['breakdown_seconds']}")
            out["tradeflow"]["vs_reference"] = diff_trades(tf["_trades"], reference, ("tradeflow", "reference"))
        else:
            log(f"  tradeflow stopped at the time limit: {tf['bars_replayed']:,} of {len(bars):,} bars replayed")
            tf = None
    if "nautilus" in engines:
        log(f"{n} x {days}: nautilus")
        gc.collect()
        r = run_nautilus(bars, fast=FAST, slow=SLOW, qty=QTY, fee_bps=float(FEE_BPS))
        total = r.seconds + r.setup_seconds
        nt = {"trades_frame": r.trades, "pnl": r.realized_pnl}
        out["nautilus"] = {
            "seconds": round(total, 3), "run_seconds": round(r.seconds, 3), "setup_seconds": round(r.setup_seconds, 3),
            "report_seconds": round(r.report_seconds, 3), "bars_per_second": round(r.bars_processed / total, 1),
            "run_bars_per_second": round(r.bars_per_second, 1), "trades": len(r.trades),
            "version": r.nautilus_version, "config": r.config,
            "vs_reference": diff_trades(r.trades, reference, ("nautilus", "reference")),
        }
        log(f"  nautilus {out['nautilus']['seconds']} s (run {out['nautilus']['run_seconds']})")
    if "vectorbt" in engines:
        log(f"{n} x {days}: vectorbt")
        run_vectorbt(bars[bars.ts < bars.ts.min() + pd.Timedelta(days=1)])  # numba compiles on first use: untimed
        gc.collect()
        out["vectorbt"] = run_vectorbt(bars)
        out["vectorbt"]["orders_equal_reference"] = out["vectorbt"]["orders"] == len(reference)
        log(f"  vectorbt {out['vectorbt']['seconds']} s")
        if "tradeflow" in out and out["tradeflow"].get("finished"):
            out["ratio_bars_per_second_vs_vectorbt"] = round(
                out["tradeflow"]["bars_per_second"] / out["vectorbt"]["bars_per_second"], 3)
    if "tradeflow" in out and "nautilus" in out and not out["tradeflow"]["finished"]:
        est = out["tradeflow"]["extrapolation"].get("floor_total_seconds")
        if est:  # tradeflow's bars/s over Nautilus', from the floor: an upper bound on the ratio
            out["ratio_bars_per_second_EXTRAPOLATED_at_most"] = round(out["nautilus"]["seconds"] / est, 6)
    if tf is not None and nt is not None:
        out["ratio_bars_per_second"] = round(out["tradeflow"]["bars_per_second"] / out["nautilus"]["bars_per_second"], 3)
        out["trades_equal"] = diff_trades(tf["_trades"], nt["trades_frame"])
        out["pnl_equal"] = diff_pnl(tf["_pnl"], nt["pnl"], nt["trades_frame"], average_cost_pnl(reference))
    del bars
    gc.collect()
    return out


def targets(runs: list[dict]) -> dict:
    """Whether the account-book issue's targets are met: True/False when measured (an
    unfinished tradeflow run that has already used more time than allowed counts as
    measured), None when not run at that size."""
    by_n = {r["symbols"]: r for r in runs}
    out = {}
    for n, target in TARGET_RATIOS.items():
        r = by_n.get(n)
        key = f"ratio_ge_{target:g}x_at_{n}_symbols"
        if not r or "tradeflow" not in r or "nautilus" not in r:
            out[key] = {"measured": None, "met": None}
        elif r["tradeflow"]["finished"]:
            ratio = r["ratio_bars_per_second"]
            out[key] = {"days": r["days"], "measured": ratio, "met": ratio >= target}
        else:  # tradeflow took longer than it ran: its ratio is below this bound
            bound = r["nautilus"]["seconds"] / r["tradeflow"]["stopped_after_seconds"]
            out[key] = {"days": r["days"], "measured_upper_bound": round(bound, 4),
                        "met": False if bound < target else None}
    for n, r in by_n.items():
        tf = r.get("tradeflow", {})
        if not tf.get("finished"):
            continue
        phases = tf["breakdown_seconds"]
        setup = phases.get("ingest", 0) + phases.get("signals", 0)
        out[f"run_within_{TARGET_SETUP_MULTIPLE:g}x_of_ingest_and_signals_at_{n}_symbols"] = {
            "run_seconds": tf["seconds"], "ingest_and_signals_seconds": round(setup, 3),
            "multiple": round(tf["seconds"] / setup, 2) if setup else None,
            "met": tf["seconds"] <= TARGET_SETUP_MULTIPLE * setup}
        if n == 100:
            out["peak_rss_under_3GiB_at_100_symbols"] = {"peak_rss_mib": tf.get("peak_rss_mib"),
                                                         "met": tf.get("peak_rss_mib", 1e9) < TARGET_PEAK_RSS_MIB}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="1,10,100", help="comma-separated symbol counts")
    parser.add_argument("--days", type=int, default=252)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engines", default="tradeflow,nautilus,vectorbt")
    parser.add_argument("--session-end", default="none",
                        help="tradeflow paper broker session_end (UTC HH:MM) for DAY orders, or 'none'")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="cProfile tradeflow's run, report the top N functions (slows it down)")
    parser.add_argument("--tradeflow-limit", type=float, default=None, metavar="S",
                        help="stop a tradeflow run after S seconds and extrapolate from its progress (marked so)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (rewritten after each size)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.symbols.split(",") if s]
    engines = {e.strip() for e in args.engines.split(",") if e.strip()}
    session_end = None if args.session_end.lower() == "none" else dtime.fromisoformat(args.session_end)

    summary: dict = {
        "benchmark": "sma_crossover(5, 21), 100 shares long-only, fill at the signal bar's close, fee 1 bp",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "pandas": pd.__version__},
        "tradeflow_engine": "embedded PostgreSQL (fsync off)",
        "session_end": args.session_end, "seed": args.seed, "runs": [],
    }

    def emit() -> None:
        summary["targets"] = targets(summary["runs"])
        text = json.dumps(summary, indent=2, default=str)
        if args.out:
            args.out.write_text(text + "\n")
        return text

    with scratch_engine() as (settings, conn):
        bt = None
        if "tradeflow" in engines:
            bt = Backtest(settings, model_vars=model_vars(settings.project_dir))
            t0 = time.perf_counter()
            bt._prepare_schema()  # the backtest schema's dbt deploy: once per model version, outside the timing
            summary["tradeflow_deploy_seconds"] = round(time.perf_counter() - t0, 3)
            log(f"backtest schema deployed in {summary['tradeflow_deploy_seconds']} s")
        for n in sizes:
            summary["runs"].append(run_size(n, args.days, args.seed, engines, bt, conn, session_end, args.profile,
                                            args.tradeflow_limit))
            emit()
    print(emit())


if __name__ == "__main__":
    main()
