"""Reading the views: show, positions, pnl, trace, reasons, metrics."""
from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from tradeflow import engine as engine_mod
from tradeflow.cli._common import (AS_CSV, AS_JSON, Timeframe, _fmt, _print_query, _settings, console, group, rows_of,
                                   to_json)

show_app = group("Print views as tables.")
metrics_app = group("Prometheus metrics from the views.")


@show_app.command("indicators")
def show_indicators(timeframe: Timeframe = typer.Option("1m", case_sensitive=False),
                    symbol: Optional[str] = typer.Option(None), as_json: bool = AS_JSON,
                    as_csv: bool = AS_CSV) -> None:
    """indicator_latest for one timeframe."""
    _print_query(
        f"indicator_latest ({timeframe})",
        "SELECT symbol, bar_ts, close, sma_21, ema_12, rsi_14, macd, atr_14, vwap"
        " FROM indicator_latest WHERE timeframe = %s AND (%s::text IS NULL OR symbol = %s) ORDER BY symbol",
        (timeframe.lower(), symbol, symbol), as_json=as_json, as_csv=as_csv,
    )


SIGNAL_COUNTS = ("SELECT strategy_id, count(*) FILTER (WHERE action = 'BUY') AS buys,"
                 " count(*) FILTER (WHERE action = 'SELL') AS sells FROM strategy_signal_history"
                 " GROUP BY strategy_id ORDER BY strategy_id")
LATEST_SIGNALS = ("SELECT signal_ts, strategy_id, symbol, timeframe AS tf, action, confidence, reason"
                  " FROM strategy_signal_history ORDER BY signal_ts DESC, strategy_id, symbol LIMIT %s")


@show_app.command("signals")
def show_signals(limit: int = typer.Option(20, min=1), as_json: bool = AS_JSON) -> None:
    """The most recent strategy signals, and counts per strategy."""
    if as_json:
        with engine_mod.connect(_settings()) as conn:
            print(to_json({"per_strategy": rows_of(conn.execute(SIGNAL_COUNTS)),
                           "latest": rows_of(conn.execute(LATEST_SIGNALS, (limit,)))}))
        return
    _print_query("signals per strategy", SIGNAL_COUNTS)
    _print_query(f"latest {limit} signals", LATEST_SIGNALS, (limit,))


def trace(order_id: str = typer.Argument(..., help="Client order id, or the signal id it came from."),
          as_json: bool = AS_JSON) -> None:
    """One order's path: signal, decision, order events, fills, matches, position and realized P&L."""
    from tradeflow.ops.trace import trace as trace_order

    with engine_mod.connect(_settings()) as conn:
        path = trace_order(conn, order_id)
    if as_json:
        print(to_json({"order_id": path.order_id, "steps": dict(path.steps)}))
        return
    for step, found in path.steps:
        if not found:
            console.print(f"{step} (0): none")
            continue
        table = Table(title=f"{step} ({len(found)})")
        for column in found[0]:
            table.add_column(column, no_wrap=True)
        for row in found:
            table.add_row(*[_fmt(v) for v in row.values()])
        console.print(table)



@metrics_app.command("serve")
def metrics_serve(port: int = typer.Option(9108), addr: str = typer.Option("127.0.0.1", help="0.0.0.0 for Docker."),
                  top_k: int = typer.Option(10, help="Symbols in te_top_exposure.")) -> None:
    """Serve /metrics (P&L, exposure, rejects, freshness, ...) and /health until stopped."""
    from tradeflow.ops.metrics import serve
    from tradeflow.trading.daemon import stop_on_signals

    stop = stop_on_signals()
    with serve(_settings(), port, addr=addr, top_k=top_k) as exporter:
        console.print(f"serving {exporter.url}")
        stop.wait()



def positions(account: Optional[str] = typer.Option(None, help="Only this account."), as_json: bool = AS_JSON,
              as_csv: bool = AS_CSV) -> None:
    """Open positions with cost basis, mark and unrealized P&L."""
    _print_query(
        "open positions",
        "SELECT account_id, strategy_id, symbol, side, net_qty, avg_price, current_price AS mark, mark_ts,"
        " unrealized_pnl FROM unrealized_pnl_latest WHERE (%s::text IS NULL OR account_id = %s)"
        " ORDER BY account_id, strategy_id, symbol",
        (account, account), as_json=as_json, as_csv=as_csv,
    )


REALIZED_BY_STRATEGY = (
    "SELECT account_id, strategy_id, max(method) AS method, sum(realized_pnl_gross) AS gross, sum(fees) AS fees,"
    " sum(realized_pnl) AS net FROM realized_pnl_latest WHERE (%s::text IS NULL OR account_id = %s)"
    " GROUP BY account_id, strategy_id ORDER BY account_id, strategy_id")
PORTFOLIO = (
    "SELECT account_id, status, cash, market_value, equity, realized_pnl, unrealized_pnl, fees_paid,"
    " gross_exposure, margin_used FROM portfolio_state WHERE (%s::text IS NULL OR account_id = %s)"
    " ORDER BY account_id")


def pnl(account: Optional[str] = typer.Option(None, help="Only this account."), as_json: bool = AS_JSON) -> None:
    """Realized P&L per account and strategy, and each account's portfolio state."""
    if as_json:
        with engine_mod.connect(_settings()) as conn:
            print(to_json({"realized": rows_of(conn.execute(REALIZED_BY_STRATEGY, (account, account))),
                           "portfolio": rows_of(conn.execute(PORTFOLIO, (account, account)))}))
        return
    _print_query("realized P&L by account and strategy", REALIZED_BY_STRATEGY, (account, account))
    _print_query("portfolio", PORTFOLIO, (account, account))


def reasons() -> None:
    """Print every reason code with its meaning (Markdown)."""
    from tradeflow.reasons import ReasonCode

    print("| code | meaning |\n| --- | --- |")
    for code in ReasonCode:
        print(f"| `{code}` | {code.description} |")

