"""The `tradeflow` command."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from datetime import datetime, time as dtime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from adapters.paper import PaperConfig
from tradeflow.config import Settings
from tradeflow import engine as engine_mod

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SQL-first streaming trading engine.")
engine_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL engine.")
ingest_app = typer.Typer(no_args_is_help=True, help="Load market data and execution reports into the raw tables.")
dlq_app = typer.Typer(no_args_is_help=True, help="Inspect and replay rejected records.")
show_app = typer.Typer(no_args_is_help=True, help="Print views as tables.")
app.add_typer(engine_app, name="engine")
app.add_typer(ingest_app, name="ingest")
app.add_typer(dlq_app, name="dlq")
app.add_typer(show_app, name="show")
# Tables are wider than the 80 columns rich assumes when output is not a terminal.
console = Console(width=None if Console().is_terminal else 140)


@app.callback()
def main(log_format: Optional[str] = typer.Option(None, envvar="TRADEFLOW_LOG_FORMAT",
                                                  help="text or json (structured logs with signal/order/fill ids)."),
         log_level: str = typer.Option("INFO", envvar="TRADEFLOW_LOG_LEVEL")) -> None:
    from tradeflow import logs

    logs.configure(log_format, log_level)


def _settings() -> Settings:
    return Settings()


# -- engine ------------------------------------------------------------------
@engine_app.command("start")
def engine_start() -> None:
    """Start the embedded server (harmless if it is running)."""
    info = engine_mod.embedded(_settings()).start()
    console.print(f"running pid={info.pid} url={info.url()}")


@engine_app.command("stop")
def engine_stop() -> None:
    stopped = engine_mod.embedded(_settings()).stop()
    console.print("stopped" if stopped else "not running")


@engine_app.command("status")
def engine_status() -> None:
    info = engine_mod.embedded(_settings()).status()
    if info is None:
        console.print("not running")
        raise typer.Exit(3)
    console.print(f"running pid={info.pid} port={info.port} socket={info.socket_dir}")


@engine_app.command("url")
def engine_url() -> None:
    """Print the connection URL for psql and BI tools (starts the engine if needed)."""
    print(engine_mod.embedded(_settings()).start().url())


@engine_app.command("env")
def engine_env() -> None:
    """Print `export` lines so plain `dbt` and `psql` reach the embedded engine."""
    settings = _settings()
    for key, value in engine_mod.dbt_env(settings).items():
        print(f"export {key}={value}")
    info = engine_mod.embedded(settings).start()
    print(f"export PGHOST=127.0.0.1 PGPORT={info.port} PGUSER=postgres PGDATABASE={info.database}")


@engine_app.command("roles")
def engine_roles() -> None:
    """Create or converge the least-privilege roles (ingester, gate, adapter, operator, reader).
    Re-run after every deploy: dbt replaces the views and their grants with them."""
    from tradeflow import roles

    settings = _settings()
    if settings.target != "embedded":
        console.print(f"run deploy/roles/{settings.target}.sql with psql against {settings.target} (docs/security.md)")
        raise typer.Exit(2)
    with engine_mod.connect(settings) as conn:
        try:
            results = roles.create_roles(conn, settings.schema)
        except (roles.RolesError, roles.CredentialsError) as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    for role, outcome in results.items():
        console.print(f"{role}: {outcome}")


# -- deploy ------------------------------------------------------------------
@app.command()
def deploy(
    full_refresh: bool = typer.Option(False, help="Rebuild materialized views (streaming targets)."),
    replay: bool = typer.Option(False, help="Historical data: no wall-clock temporal filters on the views."),
) -> None:
    """Create raw tables and UDFs, then build every dbt model on the target."""
    from tradeflow.dbt import run_dbt

    args = ["run"] + (["--full-refresh"] if full_refresh else [])
    run_dbt(_settings(), args, vars={"temporal_filter": False} if replay else None)
    console.print(f"deployed to {_settings().target}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt(ctx: typer.Context) -> None:
    """Run any dbt command against the configured target, e.g. `tradeflow dbt test`."""
    from tradeflow.dbt import DbtError, run_dbt

    try:
        run_dbt(_settings(), list(ctx.args), quiet=False)
    except DbtError as err:
        console.print(str(err))
        raise typer.Exit(1)


# -- ingest ------------------------------------------------------------------
def _ensure_deployed(settings: Settings) -> None:
    from tradeflow.dbt import deploy as dbt_deploy

    with engine_mod.connect(settings) as conn:
        if engine_mod.relation_exists(conn, settings.schema, "stg_prices"):
            return
    console.print("first use of this engine: deploying models")
    dbt_deploy(settings)


@contextmanager
def _ingest_process(metrics_port: Optional[int], metrics_addr: str):
    """Settings for an ingest run, deployed; with a port, /metrics and /health
    (ready once the engine answers and the models exist) while it runs."""
    settings = _settings()
    if metrics_port is None:
        _ensure_deployed(settings)
        yield settings
        return
    from tradeflow.health import Bootstrap, HealthServer
    from tradeflow.metrics import PROCESS_REGISTRY

    bootstrap = Bootstrap("engine", "models")
    server = HealthServer(PROCESS_REGISTRY, metrics_port, addr=metrics_addr, checks=bootstrap.checks)
    try:
        _ensure_deployed(settings)
        bootstrap.passed("engine")
        bootstrap.passed("models")
        yield settings
    finally:
        server.stop()


METRICS_PORT = typer.Option(None, "--metrics-port", help="Serve /metrics and /health on this port while running.")
METRICS_ADDR = typer.Option("127.0.0.1", "--metrics-addr", help="Address for --metrics-port.")


def _run_price_ingest(feed_batches, source: str, total: Optional[int], replay_speed: float,
                      metrics_port: Optional[int] = None, metrics_addr: str = "127.0.0.1") -> None:
    from ingest.feeds import paced
    from ingest.prices import PriceIngester

    with _ingest_process(metrics_port, metrics_addr) as settings, engine_mod.connect(settings) as conn, Progress(
        TextColumn("[bold]ingest[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
        TimeElapsedColumn(), console=console, transient=False,
    ) as progress:
        task = progress.add_task("bars", total=total)
        ingester = PriceIngester(conn, settings, source=source)
        report = ingester.ingest(paced(feed_batches, replay_speed), on_progress=lambda n: progress.advance(task, n))
    console.print_json(json.dumps(report.as_dict()))
    if report.rejected:
        console.print(f"[yellow]{report.rejected} record(s) rejected: see `tradeflow dlq list`[/]")


@ingest_app.command("prices")
def ingest_prices(
    paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="CSV or Parquet files."),
    map_: list[str] = typer.Option([], "--map", help="Column mapping canonical=source, e.g. --map ts=Date."),
    replay_speed: float = typer.Option(0.0, help="Pace as a live feed: 60 = one minute of bars per second."),
    metrics_port: Optional[int] = METRICS_PORT, metrics_addr: str = METRICS_ADDR,
) -> None:
    """Ingest 1-minute bars from files (column aliases: see ingest/feeds.py)."""
    from ingest.feeds import FileFeed

    column_map = dict(item.split("=", 1) for item in map_)
    for path in paths:
        feed = FileFeed(path, column_map=column_map or None)
        _run_price_ingest(feed.batches(), source=str(path), total=None, replay_speed=replay_speed,
                          metrics_port=metrics_port, metrics_addr=metrics_addr)


@ingest_app.command("synthetic")
def ingest_synthetic(
    symbols: int = typer.Option(8, min=1), days: int = typer.Option(1, min=1), seed: int = typer.Option(7),
    replay_speed: float = typer.Option(0.0, help="Pace as a live feed: 60 = one minute of bars per second."),
    metrics_port: Optional[int] = METRICS_PORT, metrics_addr: str = METRICS_ADDR,
) -> None:
    """Generate deterministic synthetic sessions and ingest them."""
    from ingest.feeds import SyntheticFeed

    feed = SyntheticFeed(symbols=symbols, days=days, seed=seed)
    _run_price_ingest(feed.batches(), source=feed.name, total=symbols * days * 390, replay_speed=replay_speed,
                      metrics_port=metrics_port, metrics_addr=metrics_addr)


@ingest_app.command("execs")
def ingest_execs(
    paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="CSV, Parquet or JSON-lines files."),
    metrics_port: Optional[int] = METRICS_PORT, metrics_addr: str = METRICS_ADDR,
) -> None:
    """Ingest execution reports (fills) into exec_report_history (columns: see ingest/execs.py)."""
    from ingest.execs import ExecIngester
    from ingest.feeds import ExecFileFeed

    for path in paths:
        feed = ExecFileFeed(path)
        with _ingest_process(metrics_port, metrics_addr) as settings, engine_mod.connect(settings) as conn:
            report = ExecIngester(conn, settings, source=str(path)).ingest(feed.batches())
        console.print_json(json.dumps(report.as_dict()))
        if report.rejected:
            console.print(f"[yellow]{report.rejected} record(s) rejected: see `tradeflow dlq list --kind exec`[/]")


# -- accounts ----------------------------------------------------------------
accounts_app = typer.Typer(no_args_is_help=True, help="Trading accounts (append-only versions).")
app.add_typer(accounts_app, name="accounts")


def _account_change(change, *args, **kwargs) -> None:
    """Run an accounts.* change and print the account's new current version."""
    from tradeflow.accounts import AccountError

    settings = _settings()
    _ensure_deployed(settings)
    with engine_mod.connect(settings) as conn:
        try:
            account = change(conn, *args, **kwargs)
        except AccountError as err:
            raise typer.BadParameter(str(err))
    console.print(f"{account.account_id}: {account.status}, capital {account.initial_capital:f} "
                  f"{account.base_currency}, max leverage {account.max_leverage:f} (by {account.updated_by})")


@accounts_app.command("add")
def accounts_add(
    account_id: str = typer.Argument(...),
    capital: str = typer.Option(..., help="Initial capital, > 0."),
    currency: str = typer.Option("USD", help="Base currency (three letters)."),
    max_leverage: str = typer.Option("2", help="Maximum leverage, > 0."),
    status: str = typer.Option("ACTIVE", help="ACTIVE or BLOCKED."),
) -> None:
    """Create an account (updated_by: $TRADEFLOW_OPERATOR or the OS user)."""
    from tradeflow import accounts

    _account_change(accounts.add, account_id, capital=capital, currency=currency, max_leverage=max_leverage,
                    status=status)


@accounts_app.command("set-status")
def accounts_set_status(account_id: str = typer.Argument(...),
                        status: str = typer.Argument(..., help="ACTIVE or BLOCKED.")) -> None:
    """Block or re-activate an account (a new version row)."""
    from tradeflow import accounts

    _account_change(accounts.set_status, account_id, status)


@accounts_app.command("list")
def accounts_list() -> None:
    """The current version of every account."""
    _print_query("accounts", "SELECT account_id, status, base_currency AS currency, initial_capital AS capital,"
                 " max_leverage, updated_at, updated_by FROM stg_accounts ORDER BY account_id")


# -- dead letters ------------------------------------------------------------
@dlq_app.command("list")
def dlq_list(kind: Optional[str] = typer.Option(None), limit: int = typer.Option(50),
             as_json: bool = typer.Option(False, "--json", help="One JSON object per line.")) -> None:
    """Rejected records not yet replayed, with field and reason."""
    from ingest.dlq import pending

    with engine_mod.connect(_settings()) as conn:
        letters = pending(conn, kind=kind, limit=limit)
    if as_json:
        for letter in letters:
            print(json.dumps({"dlq_id": letter.dlq_id, "kind": letter.kind, "field": letter.field,
                              "reason_code": letter.reason_code, "reason": letter.reason,
                              "payload": letter.payload, "source": letter.source,
                              "received_at": letter.received_at.isoformat()}, sort_keys=True))
        return
    table = Table("dlq_id", "kind", "field", "reason_code", "reason", "payload", title="dead letters")
    for letter in letters:
        table.add_row(letter.dlq_id, letter.kind, letter.field, letter.reason_code, letter.reason,
                      json.dumps(letter.payload, sort_keys=True))
    console.print(table)


@dlq_app.command("replay")
def dlq_replay(
    ids: list[str] = typer.Argument(None, help="dlq ids (default: all pending of --kind)."),
    kind: str = typer.Option("price"),
    set_: list[str] = typer.Option([], "--set", help="Fix a field before replay: field=value."),
) -> None:
    """Re-validate pending records (optionally fixed with --set) and ingest those that now pass."""
    from ingest.replay import replay

    overrides = dict(item.split("=", 1) for item in set_)
    settings = _settings()
    with engine_mod.connect(settings) as conn:
        outcome = replay(conn, settings, kind=kind, ids=ids or [], overrides=overrides)
    console.print_json(json.dumps(outcome))


# -- views -------------------------------------------------------------------
def _print_query(title: str, query: str, params: tuple = (), settings: Settings | None = None) -> None:
    with engine_mod.connect(settings or _settings()) as conn:
        cur = conn.execute(query, params)
        table = Table(title=title)
        for column in cur.description:
            table.add_column(column.name, no_wrap=True)
        for row in cur.fetchall():
            table.add_row(*[_fmt(v) for v in row])
    console.print(table)


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (float, Decimal)):
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4f}"
    return str(value)


@show_app.command("indicators")
def show_indicators(timeframe: str = typer.Option("1m"), symbol: Optional[str] = typer.Option(None)) -> None:
    """indicator_latest for one timeframe."""
    _print_query(
        f"indicator_latest ({timeframe})",
        "SELECT symbol, bar_ts, close, sma_21, ema_12, rsi_14, macd, atr_14, vwap"
        " FROM indicator_latest WHERE timeframe = %s AND (%s::text IS NULL OR symbol = %s) ORDER BY symbol",
        (timeframe, symbol, symbol),
    )


@show_app.command("signals")
def show_signals(limit: int = typer.Option(20)) -> None:
    """The most recent strategy signals, and counts per strategy."""
    _print_query(
        "signals per strategy",
        "SELECT strategy_id, count(*) FILTER (WHERE action = 'BUY') AS buys,"
        " count(*) FILTER (WHERE action = 'SELL') AS sells FROM strategy_signal_history"
        " GROUP BY strategy_id ORDER BY strategy_id",
    )
    _print_query(
        f"latest {limit} signals",
        "SELECT signal_ts, strategy_id, symbol, timeframe AS tf, action, confidence, reason"
        " FROM strategy_signal_history ORDER BY signal_ts DESC, strategy_id, symbol LIMIT %s",
        (limit,),
    )


policy_app = typer.Typer(no_args_is_help=True, help="Per-account risk policy (versioned, audited).")
app.add_typer(policy_app, name="policy")


@policy_app.command("set")
def policy_set(
    account_id: str,
    max_open_symbols: Optional[int] = typer.Option(None), allow_scale_in: Optional[bool] = typer.Option(None),
    sell_requires_long: Optional[bool] = typer.Option(None),
    max_order_notional: Optional[str] = typer.Option(None), max_position_qty: Optional[str] = typer.Option(None),
    max_concentration_pct: Optional[str] = typer.Option(None, help="Fraction of equity, e.g. 0.25."),
    max_drawdown_pct: Optional[str] = typer.Option(None, help="Fraction of peak equity, e.g. 0.1."),
    risk_per_trade_pct: Optional[str] = typer.Option(None, help="Fraction of equity risked per trade."),
    reservation_ttl_seconds: Optional[int] = typer.Option(None),
) -> None:
    """Change an account's policy; the gate applies it from its next decision."""
    from tradeflow import policy

    changes = {k: v for k, v in locals().items() if k != "account_id" and k != "policy" and v is not None}
    with engine_mod.connect(_settings()) as conn:
        try:
            after = policy.update(conn, account_id, **changes)
        except policy.PolicyError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    console.print(f"policy of {account_id} updated by {after.updated_by}: {changes}")


@policy_app.command("kill-switch")
def policy_kill_switch(account_id: str, state: str = typer.Argument(..., help="on or off")) -> None:
    """Engage or release an account's kill switch (takes effect at the next decision)."""
    from tradeflow import policy

    if state not in {"on", "off"}:
        console.print("[red]state: must be on or off[/]")
        raise typer.Exit(2)
    with engine_mod.connect(_settings()) as conn:
        try:
            policy.update(conn, account_id, kill_switch=state == "on")
        except policy.PolicyError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    console.print(f"kill switch of {account_id}: {state}")


gate_app = typer.Typer(no_args_is_help=True, help="The decision gate (TradePicker + pre-trade risk).")
adapter_app = typer.Typer(no_args_is_help=True, help="The execution adapter.")
app.add_typer(gate_app, name="gate")
app.add_typer(adapter_app, name="adapter")


@gate_app.command("run")
def gate_run(once: bool = typer.Option(False, help="Decide what is pending, then exit."),
             interval: float = typer.Option(1.0, help="Seconds between passes."),
             max_signal_age: float = typer.Option(120.0, help="Older signals (bar close to now, s) are STALE_SIGNAL."),
             metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /health on this port."),
             metrics_addr: str = typer.Option("127.0.0.1", help="Address for --metrics-port (0.0.0.0 for Docker)."),
             shadow: bool = typer.Option(False, help="Also trade every signal in its strategy's paper account."),
             ) -> None:
    """Decide every new strategy signal, exactly once, until stopped."""
    from datetime import timedelta

    from adapters.daemon import run_gate, stop_on_signals

    decided = run_gate(_settings(), once=once, interval=interval, max_signal_age=timedelta(seconds=max_signal_age),
                       stop=None if once else stop_on_signals(), metrics_port=metrics_port, metrics_addr=metrics_addr,
                       shadow=shadow)
    console.print(f"decided {decided} signal(s)")


@adapter_app.command("run")
def adapter_run(broker: str = typer.Option("paper", help="Only the paper broker ships so far."),
                once: bool = typer.Option(False, help="One step (submit, trade new bars, record), then exit."),
                interval: float = typer.Option(0.5, help="Longest wait for new orders per step (s)."),
                metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /health on this port."),
                metrics_addr: str = typer.Option("127.0.0.1", help="Address for --metrics-port (0.0.0.0 for Docker)."),
                ) -> None:
    """Follow accepted orders, submit them to the broker, record reports and fills."""
    from adapters.daemon import run_adapter, stop_on_signals

    if broker != "paper":
        console.print(f"[red]broker: {broker!r} is not available (paper)[/]")
        raise typer.Exit(2)
    run_adapter(_settings(), once=once, interval=interval, stop=None if once else stop_on_signals(),
                metrics_port=metrics_port, metrics_addr=metrics_addr)


orders_app = typer.Typer(no_args_is_help=True, help="Orders: list, submit, cancel.")
app.add_typer(orders_app, name="orders")


@orders_app.command("list")
def orders_list(open_only: bool = typer.Option(False, "--open", help="Only orders not finished.")) -> None:
    """Latest state of each order."""
    _print_query(
        "orders",
        "SELECT client_order_id, account_id, strategy_id, symbol, side, qty, filled_qty, status, event_ts"
        " FROM orders WHERE NOT %s OR status NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')"
        " ORDER BY event_ts DESC LIMIT 200", (open_only,))


@orders_app.command("submit")
def orders_submit(
    account_id: str, symbol: str, side: str = typer.Argument(..., help="BUY or SELL."),
    qty: str = typer.Argument(..., help="Quantity."),
    order_type: str = typer.Option("MARKET", "--type", help="MARKET, LIMIT or STOP."),
    limit_price: Optional[str] = typer.Option(None), stop_price: Optional[str] = typer.Option(None),
    time_in_force: str = typer.Option("DAY", "--tif", help="DAY, GTC or IOC."),
    strategy: str = typer.Option("manual", help="Strategy the position belongs to (a SELL closes its long)."),
    reason: str = typer.Option("", help="Why, for the audit trail."),
    wait: float = typer.Option(10.0, help="Seconds to wait for the gate's decision (0: just queue it)."),
) -> None:
    """Queue an operator's order: the running decision gate decides it once, with the same routing
    limits and risk checks as a signal; audited with who, when and why."""
    from tradeflow import orders

    with engine_mod.connect(_settings()) as conn:
        try:
            request = orders.request_manual_order(conn, account_id, symbol, side, qty, order_type=order_type,
                                                  time_in_force=time_in_force, limit_price=limit_price,
                                                  stop_price=stop_price, strategy_id=strategy, reason=reason)
        except orders.OrderCommandError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
        decision_id = request.decision_id
        console.print(f"order request {request.request_id} queued for the gate (decision {decision_id})")
        deadline = time.monotonic() + wait
        while True:
            row = conn.execute("SELECT 'ACCEPTED', NULL, client_order_id FROM accepted_trade_signal_history"
                               " WHERE decision_id = %s UNION ALL SELECT 'REJECTED', reject_code, NULL"
                               " FROM trade_rejections WHERE decision_id = %s", (decision_id, decision_id)).fetchone()
            if row is not None:
                outcome, code, order_id = row
                console.print(f"{outcome}" + (f": {code}" if code else f": order {order_id}"))
                raise typer.Exit(0 if outcome == "ACCEPTED" else 1)
            if time.monotonic() >= deadline:
                if wait:
                    console.print("no decision yet: is `tradeflow gate run` running?")
                return
            time.sleep(0.2)


@orders_app.command("cancel")
def orders_cancel(client_order_id: str, reason: str = typer.Option("", help="Why, for the audit trail.")) -> None:
    """Ask the execution adapter to cancel a live order (recorded with who and when)."""
    from tradeflow import orders

    with engine_mod.connect(_settings()) as conn:
        try:
            orders.request_cancel(conn, client_order_id, reason=reason)
        except orders.OrderCommandError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    console.print(f"cancel of {client_order_id} requested")


@app.command()
def weights(max_change: str = typer.Option("0.05", help="Most a weight may move per update."),
            show_only: bool = typer.Option(False, "--show", help="Print the current weights, change nothing.")) -> None:
    """Move each strategy's weight toward its scoreboard target (at most --max-change), append the
    new weights, and print them. Run it on a schedule (e.g. daily)."""
    from ingest.validation import utc_now
    from tradeflow.accounts import operator
    from tradeflow.weights import update_weights

    settings = _settings()
    if not show_only:
        with engine_mod.connect(settings) as conn:
            update_weights(conn, at=utc_now(), max_change=Decimal(max_change), updated_by=operator())
    _print_query("strategy weights", "SELECT w.strategy_id, w.weight, w.target, w.size_multiplier, w.at,"
                 " p.trades, p.shrunk_sharpe, p.t_stat FROM strategy_weights_latest w"
                 " LEFT JOIN strategy_perf_latest p USING (strategy_id) ORDER BY w.strategy_id", settings=settings)


@app.command()
def trace(order_id: str = typer.Argument(..., help="Client order id, or the signal id it came from.")) -> None:
    """One order's path: signal, decision, order events, fills, matches, position and realized P&L."""
    from tradeflow.trace import trace as trace_order

    with engine_mod.connect(_settings()) as conn:
        path = trace_order(conn, order_id)
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


metrics_app = typer.Typer(no_args_is_help=True, help="Prometheus metrics from the views.")
app.add_typer(metrics_app, name="metrics")


@metrics_app.command("serve")
def metrics_serve(port: int = typer.Option(9108), addr: str = typer.Option("127.0.0.1", help="0.0.0.0 for Docker."),
                  top_k: int = typer.Option(10, help="Symbols in te_top_exposure.")) -> None:
    """Serve /metrics (P&L, exposure, rejects, freshness, ...) and /health until stopped."""
    from adapters.daemon import stop_on_signals
    from tradeflow.metrics import serve

    stop = stop_on_signals()
    with serve(_settings(), port, addr=addr, top_k=top_k) as exporter:
        console.print(f"serving {exporter.url}")
        stop.wait()


@app.command()
def positions(account: Optional[str] = typer.Option(None, help="Only this account.")) -> None:
    """Open positions with cost basis, mark and unrealized P&L."""
    _print_query(
        "open positions",
        "SELECT account_id, strategy_id, symbol, side, net_qty, avg_price, current_price AS mark, mark_ts,"
        " unrealized_pnl FROM unrealized_pnl_latest WHERE (%s::text IS NULL OR account_id = %s)"
        " ORDER BY account_id, strategy_id, symbol",
        (account, account),
    )


@app.command()
def pnl(account: Optional[str] = typer.Option(None, help="Only this account.")) -> None:
    """Realized P&L per account and strategy, and each account's portfolio state."""
    _print_query(
        "realized P&L by account and strategy",
        "SELECT account_id, strategy_id, max(method) AS method, sum(realized_pnl_gross) AS gross, sum(fees) AS fees,"
        " sum(realized_pnl) AS net FROM realized_pnl_latest WHERE (%s::text IS NULL OR account_id = %s)"
        " GROUP BY account_id, strategy_id ORDER BY account_id, strategy_id",
        (account, account),
    )
    _print_query(
        "portfolio",
        "SELECT account_id, status, cash, market_value, equity, realized_pnl, unrealized_pnl, fees_paid,"
        " gross_exposure, margin_used FROM portfolio_state WHERE (%s::text IS NULL OR account_id = %s)"
        " ORDER BY account_id",
        (account, account),
    )


@app.command()
def reasons() -> None:
    """Print every reason code with its meaning (Markdown)."""
    from tradeflow.reasons import ReasonCode

    print("| code | meaning |\n| --- | --- |")
    for code in ReasonCode:
        print(f"| `{code}` | {code.description} |")


DEMO_SCHEMA = "tradeflow_demo"
def _bars_for_backtest(settings: Settings, start: datetime, end: datetime, symbols: list[str] | None,
                       synthetic: int, seed: int):
    import numpy as np
    import pandas as pd

    if synthetic:
        from ingest.synthetic import generate_bars

        days = max(1, int(np.busday_count(start.date(), end.date())))
        return pd.concat(list(generate_bars(symbols=synthetic, days=days, seed=seed, start=start.date())),
                         ignore_index=True)
    with engine_mod.connect(settings) as conn:
        bars = engine_mod.query_frame(
            conn, "SELECT symbol, bar_ts AS ts, open, high, low, close, volume FROM stg_prices"
            " WHERE bar_ts >= %s AND bar_ts < %s AND (%s::text[] IS NULL OR symbol = ANY(%s))"
            " ORDER BY bar_ts, symbol", (start, end, symbols, symbols))
    if bars.empty:
        raise typer.BadParameter(f"no ingested bars between {start} and {end} (ingest some, or pass --synthetic N)",
                                 param_hint="--from/--to")
    return bars


def _account_specs(text: str, max_leverage: str):
    from tradeflow.backtest import AccountSpec

    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        account_id, _, capital = item.partition(":")
        try:
            specs.append(AccountSpec(account_id, Decimal(capital or "100000"), Decimal(max_leverage)))
        except ArithmeticError:
            raise typer.BadParameter(f"{item!r}: capital must be a number (ID[:CAPITAL])", param_hint="--accounts")
    return tuple(specs)


@app.command()
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
    from tradeflow.backtest import Backtest, BacktestError, BacktestSpec

    start, end = (t if t.tzinfo else t.replace(tzinfo=timezone.utc) for t in (start, end))
    settings = _settings()
    wanted = [s.strip() for s in symbols.split(",")] if symbols else None
    bars = _bars_for_backtest(settings, start, end, wanted, synthetic, seed)
    try:
        spec = BacktestSpec(start=start, end=end, accounts=_account_specs(accounts_, max_leverage),
                            symbols=tuple(wanted) if wanted else None,
                            strategies=tuple(s.strip() for s in strategies.split(",")) if strategies else None,
                            outputs=outputs, paper=DEMO_PAPER, shadow=shadow)
        with Progress(TextColumn("[bold]backtest[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("bars"),
                      TextColumn("{task.fields[rate]} bars/s"), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("bars", total=len(bars), rate="-")
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


DEMO_PAPER = PaperConfig(fill_at="open", slippage_bps=Decimal(2), fee_per_share=Decimal("0.005"), min_fee=Decimal(1))
DEMO_ACCOUNTS = {  # account -> policy: one account is set to breach its drawdown limit
    "ACC-GROWTH": {"max_open_symbols": 3, "risk_per_trade_pct": Decimal("0.002")},
    "ACC-INCOME": {"max_open_symbols": 2, "risk_per_trade_pct": Decimal("0.001")},
    "ACC-TIGHT": {"max_open_symbols": 3, "risk_per_trade_pct": Decimal("0.002"), "max_drawdown_pct": Decimal("0.002")},
}


@app.command()
def demo(symbols: int = typer.Option(6, min=1), days: int = typer.Option(1, min=1), seed: int = typer.Option(7)) -> None:
    """The whole loop on a replayed synthetic session: strategies -> gate -> adapter -> paper broker
    -> fills -> positions -> P&L, with three accounts: one breaches its drawdown limit, and the
    operator engages another's kill switch halfway. Runs in its own schema (tradeflow_demo),
    recreated each time."""
    from dataclasses import replace

    from ingest.synthetic import DEFAULT_START, generate_bars
    from tradeflow import accounts, policy
    from tradeflow.dbt import deploy as dbt_deploy
    from tradeflow.session import ReplaySession

    settings = replace(_settings(), schema=DEMO_SCHEMA)
    info = engine_mod.embedded(settings).start() if settings.target == "embedded" else None
    if info:
        console.print(f"engine: {info.url()}  (schema {DEMO_SCHEMA})")
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


if __name__ == "__main__":
    app()
