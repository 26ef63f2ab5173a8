"""`tradeflow backtest` and `tradeflow demo`."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.paper import PaperConfig
from tradeflow import engine as engine_mod
from tradeflow.cli._common import _fmt, _print_query, _settings, console

DEMO_SCHEMA = "tradeflow_demo"
DEMO_PAPER = PaperConfig(fill_at="open", slippage_bps=Decimal(2), fee_per_share=Decimal("0.005"), min_fee=Decimal(1))
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


def _account_specs(text: str, max_leverage: str):
    from tradeflow.research.backtest import AccountSpec

    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        account_id, _, capital = item.partition(":")
        try:
            specs.append(AccountSpec(account_id, Decimal(capital or "100000"), Decimal(max_leverage)))
        except ArithmeticError:
            raise typer.BadParameter(f"{item!r}: capital must be a number (ID[:CAPITAL])", param_hint="--accounts")
    return tuple(specs)



def backtest(
    start: datetime = typer.Option(..., "--from", help="First bar (UTC), e.g. 2024-01-02."),
    end: datetime = typer.Option(..., "--to", help="End of the run (UTC, exclusive)."),
    symbols: Optional[str] = typer.Option(None, help="Comma-separated symbols (default: all)."),
    strategies: Optional[str] = typer.Option(None, help="Comma-separated strategy ids (default: all enabled)."),
    accounts_: str = typer.Option("BT-1:100000", "--accounts", help="Comma-separated ID[:CAPITAL]."),
    max_leverage: str = typer.Option("2", help="Max leverage of every account."),
    outputs: str = typer.Option("full", help="matches-only or full: what is kept under the run_id."),
    report: Optional[Path] = typer.Option(None, help="Write the HTML report here."),
    synthetic: int = typer.Option(0, min=0, help="Run on N synthetic symbols instead of ingested bars."),
    seed: int = typer.Option(7, help="Seed of the synthetic bars."),
    run_id: Optional[str] = typer.Option(None, help="Default: derived from the inputs (same inputs, same id)."),
    shadow: bool = typer.Option(False, help="Also trade every signal in its strategy's paper account."),
    tz: str = typer.Option("Europe/Oslo", help="Time zone of the daily buckets."),
) -> None:
    """A bounded replay of historical bars through the same models, decision gate and paper broker
    as the live loop; results stay queryable under the run_id (backtest_* tables)."""
    from tradeflow.research.backtest import Backtest, BacktestError, BacktestSpec

    start, end = (t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (start, end))
    settings = _settings()
    wanted = [s.strip() for s in symbols.split(",")] if symbols else None
    # ingested bars stay inside the engine (the backtest moves them); synthetic ones are made here
    bars = _synthetic_bars(start, end, synthetic, seed) if synthetic else None
    try:
        spec = BacktestSpec(start=start, end=end, accounts=_account_specs(accounts_, max_leverage),
                            symbols=tuple(wanted) if wanted else None,
                            strategies=tuple(s.strip() for s in strategies.split(",")) if strategies else None,
                            outputs=outputs, paper=DEMO_PAPER, shadow=shadow)
        with Progress(TextColumn("[bold]backtest[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
                      TextColumn("{task.fields[rate]} bars/s"), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("bars", total=None if bars is None else len(bars), rate="-")
            started = time.monotonic()

            def advance(count: int) -> None:
                progress.advance(task, count)
                rate = progress.tasks[0].completed / max(time.monotonic() - started, 1e-9)
                progress.update(task, rate=f"{rate:,.0f}")

            result = Backtest(settings).run(spec, bars, run_id=run_id, on_progress=advance, report=report, tz=tz)
    except BacktestError as err:
        raise typer.BadParameter(str(err))
    console.print(f"run {result.run_id}: {result.bars:,} bars, {result.signals:,} signals, {result.decisions:,}"
                  f" decisions, {result.accepted:,} accepted, {result.bars_per_second:,.0f} bars/s"
                  f" (seconds: {result.seconds})")
    shown = ["total_return", "max_drawdown", "sharpe", "trades", "win_rate", "realized_pnl", "fees_paid"]
    for title, frame in (("per account", result.metrics_by_account), ("per strategy", result.metrics_by_strategy)):
        table = Table(title=title)
        table.add_column(frame.index.name or "key")
        for column in shown:
            table.add_column(column, justify="right")
        for key, row in frame.iterrows():
            table.add_row(str(key), *[_fmt(None if row[c] != row[c] else row[c]) for c in shown])
        console.print(table)
    if result.rejects:
        console.print("rejects by code: " + ", ".join(f"{k} {v}" for k, v in sorted(result.rejects.items())))
    if report:
        console.print(f"report: {report}")



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

