"""`tradeflow backtest` and `tradeflow demo`."""
from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.paper import DEFAULT_FILL_MODEL
from tradeflow import engine as engine_mod
from tradeflow.cli import _fill_model as fill_flags
from tradeflow.cli._common import _fmt, _print_query, _settings, console

DEMO_SCHEMA = "tradeflow_demo"
DEMO_PAPER = DEFAULT_FILL_MODEL
DEMO_ACCOUNTS = {  # account -> policy: one account is set to breach its drawdown limit
    "ACC-GROWTH": {"max_open_symbols": 3, "risk_per_trade_pct": Decimal("0.002")},
    "ACC-INCOME": {"max_open_symbols": 2, "risk_per_trade_pct": Decimal("0.001")},
    "ACC-TIGHT": {"max_open_symbols": 3, "risk_per_trade_pct": Decimal("0.002"), "max_drawdown_pct": Decimal("0.002")},
}



def _synthetic_bars(start: datetime, end: datetime, synthetic: int, seed: int):
    import numpy as np
    import pandas as pd

    from ingest.synthetic import generate_bars

    days = max(1, int(np.busday_count(start.date(), end.date())))
    return pd.concat(list(generate_bars(symbols=synthetic, days=days, seed=seed, start=start.date())),
                     ignore_index=True)


def backtest(
    start: Optional[str] = typer.Option(None, "--from", help="First bar, ISO date or time (UTC unless it has an"
                                                             " offset), e.g. 2024-01-02."),
    end: Optional[str] = typer.Option(None, "--to", help="End of the run (exclusive), like --from."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="YAML or TOML file with the keys of these"
                                                                      " flags (docs/backtest.md); flags win."),
    symbols: Optional[str] = typer.Option(None, help="Comma-separated symbols (default: all)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated strategy ids (default: all enabled)."),
    accounts_: Optional[str] = typer.Option(None, "--accounts", help="Comma-separated ID[:CAPITAL]."
                                                                     " [default: BT-1:100000]"),
    max_leverage: Optional[str] = typer.Option(None, help="Max leverage of every account. [default: 2]"),
    policy_: Optional[list[str]] = typer.Option(None, "--policy", help="FIELD=VALUE of every account's policy,"
                                                                       " e.g. max_open_symbols=10 (repeatable)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="STRATEGY.PARAM=VALUE (e.g. sma_crossover.fast=10,"
                                                                 " sma_crossover.fixed_qty=100) or DBT_VAR=VALUE"
                                                                 " (e.g. pnl_method=average_cost); repeatable."),
    sweep: Optional[list[str]] = typer.Option(None, "--sweep", help="KEY=V1,V2,... (a strategy param or a fill"
                                                                    " model field); repeat for a grid."),
    rank_by: Optional[str] = typer.Option(None, help="Metric that ranks a sweep's runs. [default: sharpe]"),
    walk_forward: Optional[str] = typer.Option(None, "--walk-forward", help="TRAIN:TEST trading days: rolling"
                                                                            " in-sample sweeps, out-of-sample runs"
                                                                            " of each winner."),
    outputs: Optional[str] = typer.Option(None, help="matches-only or full: what is kept under the run_id."
                                                     " [default: full]"),
    report: Optional[Path] = typer.Option(None, help="Write the HTML report here."),
    synthetic: Optional[int] = typer.Option(None, min=0, help="Run on N synthetic symbols instead of ingested"
                                                               " bars."),
    seed: Optional[int] = typer.Option(None, help="Seed of the synthetic bars. [default: 7]"),
    run_id: Optional[str] = typer.Option(None, help="Default: derived from the inputs (same inputs, same id)."),
    shadow: Optional[bool] = typer.Option(None, "--shadow/--no-shadow",
                                          help="Also trade every signal in its strategy's paper account."),
    tz: Optional[str] = typer.Option(None, help="Time zone of the daily buckets. [default: Europe/Oslo]"),
    max_signal_age: Optional[float] = typer.Option(None, help="Seconds after its bar's close a signal may still be"
                                                              " decided. [default: 120]"),
    fill_at: Optional[str] = fill_flags.FILL_AT, slippage_bps: Optional[str] = fill_flags.SLIPPAGE_BPS,
    fee_bps: Optional[str] = fill_flags.FEE_BPS, fee_per_share: Optional[str] = fill_flags.FEE_PER_SHARE,
    min_fee: Optional[str] = fill_flags.MIN_FEE, fee_step: Optional[str] = fill_flags.FEE_STEP,
    fee_rounding: Optional[str] = fill_flags.FEE_ROUNDING,
    max_participation: Optional[str] = fill_flags.MAX_PARTICIPATION, lot_size: Optional[str] = fill_flags.LOT_SIZE,
    tick_size: Optional[str] = fill_flags.TICK_SIZE, session_end: Optional[str] = fill_flags.SESSION_END,
) -> None:
    """A bounded replay of historical bars through the same models, decision gate and paper broker
    as the live loop; results stay queryable under the run_id (backtest_* tables). Every setting
    can come from --config; the resolved configuration is stored with the run."""
    from tradeflow.research import run_config
    from tradeflow.research.backtest import Backtest, BacktestError, describe_fill_model

    settings = _settings()
    flags = {
        "from": start, "to": end, "symbols": symbols, "strategies": strategies, "accounts": accounts_,
        "max_leverage": max_leverage, "outputs": outputs, "report": report, "synthetic": synthetic, "seed": seed,
        "run_id": run_id, "shadow": shadow, "tz": tz, "max_signal_age": max_signal_age, "rank_by": rank_by,
        "walk_forward": walk_forward, **fill_flags.given(
            fill_at=fill_at, slippage_bps=slippage_bps, fee_bps=fee_bps, fee_per_share=fee_per_share,
            min_fee=min_fee, fee_step=fee_step, fee_rounding=fee_rounding, max_participation=max_participation,
            lot_size=lot_size, tick_size=tick_size, session_end=session_end)}
    try:
        flags.update({"policy": run_config.parse_assignments(policy_, "--policy") or None,
                      "set": run_config.parse_assignments(set_, "--set") or None,
                      "sweep": run_config.parse_sweep(sweep) or None})
        config = run_config.resolve(run_config.load_file(config_file) if config_file else None, flags)
        plan = run_config.plan(config, settings.project_dir)
    except BacktestError as err:
        raise typer.BadParameter(str(err))
    spec = plan.spec
    # ingested bars stay inside the engine (the backtest moves them); synthetic ones are made here
    bars = _synthetic_bars(spec.start, spec.end, config["synthetic"], config["seed"]) if config["synthetic"] else None
    console.print(f"fill model: {describe_fill_model(spec.paper)}")
    bt = Backtest(settings, model_vars=plan.model_vars)
    try:
        if plan.grid:
            _sweep(bt, plan, bars)
            return
        with _bar_progress("backtest", None if bars is None else len(bars)) as advance:
            result = bt.run(spec, bars, run_id=config["run_id"], on_progress=advance, report=plan.report,
                            tz=config["tz"], config=config)
    except BacktestError as err:
        raise typer.BadParameter(str(err))
    console.print(f"run {result.run_id}: {result.bars:,} bars, {result.signals:,} signals, {result.decisions:,}"
                  f" decisions, {result.accepted:,} accepted, {result.bars_per_second:,.0f} bars/s")
    console.print("seconds: " + ", ".join(f"{phase} {value:.2f}" for phase, value in result.seconds.items()))
    shown = ["total_return", "max_drawdown", "sharpe", "trades", "win_rate", "profit_factor", "realized_pnl",
             "fees_paid"]
    for title, frame in (("per account", result.metrics_by_account), ("per strategy", result.metrics_by_strategy)):
        table = Table(title=title)
        table.add_column(frame.index.name or "key")
        for column in shown:
            table.add_column(column, justify="right")
        for key, row in frame.iterrows():
            table.add_row(str(key), *[_fmt(None if row[c] != row[c] else row[c]) for c in shown])
        console.print(table)
    console.print("trades are round trips; max_drawdown is on daily closes (the report also shows the intraday one)")
    for stage, rejects in (("the gate", result.rejects), ("the broker", result.broker_rejects)):
        if rejects:
            console.print(f"rejected by {stage}: " + ", ".join(f"{k} {v}" for k, v in sorted(rejects.items())))
    if plan.report:
        console.print(f"report: {plan.report}")


@contextmanager
def _bar_progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    with Progress(TextColumn(f"[bold]{label}[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
                  TextColumn("{task.fields[rate]} bars/s"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("bars", total=total, rate="-")
        started = time.monotonic()

        def advance(count: int) -> None:
            progress.advance(task, count)
            rate = progress.tasks[0].completed / max(time.monotonic() - started, 1e-9)
            progress.update(task, rate=f"{rate:,.0f}")

        yield advance


def _sweep(bt, plan, bars) -> None:
    """A parameter grid (and walk-forward windows): one ingest and one signal read for every run."""
    from tradeflow.research.sweep import Sweep

    runs = len(plan.grid) * (1 if plan.walk_forward is None else 0) or None
    with Progress(TextColumn("[bold]sweep[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("runs", total=runs)
        sweep = Sweep(bt, plan, on_run=lambda done, total: progress.update(task, completed=done, total=total))
        outcome = sweep.run(bars)
    table = Table(title=f"sweep {outcome.sweep_id}: ranked by {plan.config['rank_by']}")
    for column in outcome.ranking.columns:
        table.add_column(str(column), justify="right" if column != "run_id" else "left")
    for _, row in outcome.ranking.iterrows():
        table.add_row(*[_fmt(None if v != v else v) for v in row.tolist()])
    console.print(table)
    if outcome.walk_forward is not None:
        table = Table(title="walk-forward: out-of-sample runs of each in-sample winner")
        for column in outcome.walk_forward.columns:
            table.add_column(str(column))
        for _, row in outcome.walk_forward.iterrows():
            table.add_row(*[_fmt(None if v != v else v) for v in row.tolist()])
        console.print(table)
    if plan.report:
        console.print(f"report: {plan.report}")


def demo(symbols: int = typer.Option(6, min=1), days: int = typer.Option(1, min=1), seed: int = typer.Option(7)) -> None:
    """The whole loop on a replayed synthetic session: strategies -> gate -> adapter -> paper broker
    -> fills -> positions -> P&L, with three accounts: one breaches its drawdown limit, and the
    operator engages another's kill switch halfway. Runs in its own schema (tradeflow_demo),
    recreated each time."""
    from dataclasses import replace

    from ingest.synthetic import DEFAULT_START, generate_bars
    from tradeflow.dbt import deploy as dbt_deploy
    from tradeflow.trading import accounts, policy
    from tradeflow.trading.session import ReplaySession

    settings = replace(_settings(), schema=DEMO_SCHEMA)
    info = engine_mod.embedded(settings).start() if settings.target == "embedded" else None
    if info:
        console.print(f"engine: {info.url(schema=DEMO_SCHEMA)}")
    with engine_mod.connect(settings) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{DEMO_SCHEMA}" CASCADE')
        conn.execute(f'DROP SCHEMA IF EXISTS "{DEMO_SCHEMA}_audit" CASCADE')
    console.print("deploying models (dbt run)")
    dbt_deploy(settings)
    with engine_mod.connect(settings) as conn:
        # policies are stamped on the replay's clock, before its first bar
        before_open = datetime.combine(DEFAULT_START, dtime(14, 0), tzinfo=timezone.utc)
        for account_id, account_policy in DEMO_ACCOUNTS.items():
            accounts.add(conn, account_id, capital="100000", max_leverage="2")
            policy.update(conn, account_id, updated_by="demo", at=before_open, **account_policy)
        session = ReplaySession(conn, settings, paper=DEMO_PAPER)
        with Progress(TextColumn("[bold]replay[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
                      TextColumn("{task.fields[rate]} bars/s"), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("bars", total=symbols * days * 390, rate="-")
            started = time.monotonic()

            def advance(bars: int) -> None:
                progress.advance(task, bars)
                if session.stats.minutes == 195 * days:  # halfway: the operator pulls the plug on one account
                    policy.update(conn, "ACC-INCOME", kill_switch=True, updated_by="demo-operator", at=session.now)
                done = progress.tasks[0].completed
                progress.update(task, rate=f"{done / max(time.monotonic() - started, 1e-9):,.0f}")

            stats = session.run(generate_bars(symbols=symbols, days=days, seed=seed), on_minute=advance)
    console.print(f"{stats.bars} bars, {stats.decisions} decisions, {stats.accepted} accepted")
    _print_query(
        "accounts",
        "SELECT p.account_id, p.status, o.orders, p.fills, p.realized_pnl, p.unrealized_pnl, p.fees_paid, p.equity"
        " FROM portfolio_state p LEFT JOIN (SELECT account_id, count(*) AS orders FROM orders GROUP BY 1) o"
        " USING (account_id) ORDER BY p.account_id", settings=settings)
    _print_query(
        "strategies",
        "SELECT s.strategy_id, count(*) AS signals, count(*) FILTER (WHERE d.outcome = 'ACCEPTED') AS accepted,"
        " count(*) FILTER (WHERE d.outcome = 'REJECTED') AS rejected, coalesce(max(r.realized), 0) AS realized_pnl"
        " FROM strategy_signal_history s LEFT JOIN trade_decisions d ON d.decision_id = s.signal_id"
        " LEFT JOIN (SELECT strategy_id, sum(realized_pnl) AS realized FROM realized_pnl_latest GROUP BY 1) r"
        " ON r.strategy_id = s.strategy_id GROUP BY s.strategy_id ORDER BY s.strategy_id", settings=settings)
    _print_query("rejects by code", "SELECT reject_code, count(*) AS rejects FROM trade_rejections GROUP BY 1"
                 " ORDER BY 2 DESC", settings=settings)
    _print_query("risk events", "SELECT ts, account_id, rule, severity, message FROM risk_events ORDER BY ts",
                 settings=settings)

