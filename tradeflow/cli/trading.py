"""Trading commands: accounts, policy, gate, adapter, orders, weights."""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Optional

import typer

from tradeflow import engine as engine_mod
from tradeflow.cli import _fill_model as fill_flags
from tradeflow.cli._common import (AS_CSV, AS_JSON, OnOff, OrderType, TimeInForce, _ensure_deployed, _print_query,
                                   _print_rows, _settings, console, group, rows_of, to_json)

accounts_app = group("Trading accounts (append-only versions).")
policy_app = group("Per-account risk policy (versioned, audited).")
gate_app = group("The decision gate (TradePicker + pre-trade risk).")
adapter_app = group("The execution adapter.")
orders_app = group("Orders: list, submit, cancel.")


def _account_change(change, *args, **kwargs) -> None:
    """Run an accounts.* change and print the account's new current version."""
    from tradeflow.trading.accounts import AccountError

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
    from tradeflow.trading import accounts

    _account_change(accounts.add, account_id, capital=capital, currency=currency, max_leverage=max_leverage,
                    status=status)


@accounts_app.command("set-status")
def accounts_set_status(account_id: str = typer.Argument(...),
                        status: str = typer.Argument(..., help="ACTIVE or BLOCKED.")) -> None:
    """Block or re-activate an account (a new version row)."""
    from tradeflow.trading import accounts

    _account_change(accounts.set_status, account_id, status)


@accounts_app.command("list")
def accounts_list(as_json: bool = AS_JSON, as_csv: bool = AS_CSV) -> None:
    """The current version of every account."""
    _print_query("accounts", "SELECT account_id, status, base_currency AS currency, initial_capital AS capital,"
                 " max_leverage, updated_at, updated_by FROM stg_accounts ORDER BY account_id",
                 as_json=as_json, as_csv=as_csv)


# the policy in force, defaults filled in (what the gate reads)
POLICY = ("SELECT account_id, status, max_open_symbols, allow_scale_in, sell_requires_long, max_order_notional,"
          " max_position_qty, max_concentration_pct, max_drawdown_pct, risk_per_trade_pct, kill_switch,"
          " reservation_ttl_seconds, policy_updated_at FROM stg_account_policy")


@policy_app.command("list")
def policy_list(as_json: bool = AS_JSON, as_csv: bool = AS_CSV) -> None:
    """The policy in force for every account (defaults filled in)."""
    _print_query("account policies", POLICY + " ORDER BY account_id", as_json=as_json, as_csv=as_csv)


@policy_app.command("show")
def policy_show(account_id: str, as_json: bool = AS_JSON) -> None:
    """One account's policy in force, one setting per line."""
    with engine_mod.connect(_settings()) as conn:
        found = rows_of(conn.execute(POLICY + " WHERE account_id = %s", (account_id,)))
    if not found:
        typer.echo(f"error: account_id: {account_id} does not exist", err=True)
        raise typer.Exit(2)
    if as_json:
        print(to_json(found[0]))
        return
    _print_rows(f"policy of {account_id}", ("setting", "value"),
                [{"setting": name, "value": value} for name, value in found[0].items() if name != "account_id"])



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
    max_sector_exposure_pct: Optional[str] = typer.Option(None, help="Sector gross exposure / equity (docs/risk.md)."),
    max_correlated_exposure_pct: Optional[str] = typer.Option(None, help="Correlated exposure / equity."),
    correlation_threshold: Optional[str] = typer.Option(None, help="Correlation counted as correlated (0.7)."),
    max_var_pct: Optional[str] = typer.Option(None, help="1-day historical VaR / equity after the order."),
    var_confidence: Optional[str] = typer.Option(None, help="0.95 or 0.99."),
    margin_check: Optional[bool] = typer.Option(None, help="Initial margin pre-trade, margin calls post-trade."),
) -> None:
    """Change an account's policy; the gate applies it from its next decision."""
    from tradeflow.trading import policy

    changes = {k: v for k, v in locals().items() if k != "account_id" and k != "policy" and v is not None}
    with engine_mod.connect(_settings()) as conn:
        try:
            after = policy.update(conn, account_id, **changes)
        except policy.PolicyError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    console.print(f"policy of {account_id} updated by {after.updated_by}: "
                  + ", ".join(f"{name}={value}" for name, value in sorted(changes.items())))


@policy_app.command("kill-switch")
def policy_kill_switch(account_id: str, state: OnOff = typer.Argument(..., case_sensitive=False)) -> None:
    """Engage or release an account's kill switch (takes effect at the next decision)."""
    from tradeflow.trading import policy

    state = state.lower()
    with engine_mod.connect(_settings()) as conn:
        try:
            policy.update(conn, account_id, kill_switch=state == "on")
        except policy.PolicyError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    console.print(f"kill switch of {account_id}: {state}")



@gate_app.command("run")
def gate_run(once: bool = typer.Option(False, help="Decide what is pending, then exit."),
             interval: float = typer.Option(1.0, help="Seconds between passes."),
             max_signal_age: float = typer.Option(120.0, help="Older signals (bar close to now, s) are STALE_SIGNAL."),
             metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /health on this port."),
             metrics_addr: str = typer.Option("127.0.0.1", help="Address for --metrics-port (0.0.0.0 for Docker)."),
             shadow: bool = typer.Option(False, help="Also trade every signal in its strategy's paper account."),
             wait_for_lease: bool = typer.Option(False, help="If another gate runs, wait for it to stop."),
             ) -> None:
    """Decide every new strategy signal, exactly once, until stopped. One gate at a time."""
    from datetime import timedelta

    from tradeflow.trading.daemon import run_gate, stop_on_signals
    from tradeflow.trading.lease import LeaseHeld

    settings = _settings()
    _ensure_deployed(settings)
    try:
        decided = run_gate(settings, once=once, interval=interval,
                           max_signal_age=timedelta(seconds=max_signal_age), stop=None if once else stop_on_signals(),
                           metrics_port=metrics_port, metrics_addr=metrics_addr, shadow=shadow,
                           wait_for_lease=wait_for_lease)
    except LeaseHeld as err:
        console.print(f"[red]{err}[/]")
        raise typer.Exit(2)
    console.print(f"decided {decided} signal(s)")


@adapter_app.command("run")
def adapter_run(broker: str = typer.Option("paper", help="paper, alpaca-paper, alpaca or ccxt:<exchange id>, e.g."
                                                         " ccxt:binance (docs/venues.md)."),
                once: bool = typer.Option(False, help="One step (submit, trade new bars, record), then exit."),
                interval: float = typer.Option(0.5, help="Longest wait for new orders per step (s)."),
                metrics_port: Optional[int] = typer.Option(None, help="Serve /metrics and /health on this port."),
                metrics_addr: str = typer.Option("127.0.0.1", help="Address for --metrics-port (0.0.0.0 for Docker)."),
                fill_at: Optional[str] = fill_flags.FILL_AT, slippage_bps: Optional[str] = fill_flags.SLIPPAGE_BPS,
                fee_bps: Optional[str] = fill_flags.FEE_BPS, fee_per_share: Optional[str] = fill_flags.FEE_PER_SHARE,
                min_fee: Optional[str] = fill_flags.MIN_FEE, fee_step: Optional[str] = fill_flags.FEE_STEP,
                fee_rounding: Optional[str] = fill_flags.FEE_ROUNDING,
                max_participation: Optional[str] = fill_flags.MAX_PARTICIPATION,
                lot_size: Optional[str] = fill_flags.LOT_SIZE, tick_size: Optional[str] = fill_flags.TICK_SIZE,
                session_end: Optional[str] = fill_flags.SESSION_END,
                ) -> None:
    """Follow accepted orders, submit them to the broker, record reports and fills. With a real
    broker, orders of paper accounts (paper:*, TRADEFLOW_PAPER_ACCOUNTS) still go to the paper broker,
    whose fill model and its defaults are the backtest's (the same flags)."""
    from adapters.paper import fill_model
    from adapters.venues import UnknownVenue, make_broker
    from tradeflow.ops.venue_keys import CredentialsError
    from tradeflow.trading.daemon import run_adapter, stop_on_signals

    settings = _settings()
    _ensure_deployed(settings)
    venue = None
    if broker != "paper":
        try:
            venue = make_broker(broker)
        except (UnknownVenue, CredentialsError) as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    try:
        config = fill_model(fill_flags.given(
            fill_at=fill_at, slippage_bps=slippage_bps, fee_bps=fee_bps, fee_per_share=fee_per_share,
            min_fee=min_fee, fee_step=fee_step, fee_rounding=fee_rounding, max_participation=max_participation,
            lot_size=lot_size, tick_size=tick_size, session_end=session_end))
    except (TypeError, ValueError) as err:
        raise typer.BadParameter(str(err))
    try:
        run_adapter(settings, once=once, interval=interval, stop=None if once else stop_on_signals(),
                    metrics_port=metrics_port, metrics_addr=metrics_addr, venue=venue, config=config)
    finally:
        if venue is not None:
            venue.inner.close()



@orders_app.command("list")
def orders_list(open_only: bool = typer.Option(False, "--open", help="Only orders not finished."),
                limit: int = typer.Option(200, min=1, help="Newest first, at most this many."),
                as_json: bool = AS_JSON, as_csv: bool = AS_CSV) -> None:
    """Latest state of each order."""
    _print_query(
        "orders",
        "SELECT client_order_id, account_id, strategy_id, symbol, side, qty, filled_qty, status, event_ts"
        " FROM orders WHERE NOT %s OR status NOT IN ('FILLED', 'CANCELLED', 'REJECTED', 'EXPIRED')"
        " ORDER BY event_ts DESC LIMIT %s", (open_only, limit), as_json=as_json, as_csv=as_csv)


@orders_app.command("submit")
def orders_submit(
    account_id: str, symbol: str, side: str = typer.Argument(..., help="BUY or SELL."),
    qty: str = typer.Argument(..., help="Quantity."),
    order_type: OrderType = typer.Option("MARKET", "--type"),
    limit_price: Optional[str] = typer.Option(None), stop_price: Optional[str] = typer.Option(None),
    time_in_force: TimeInForce = typer.Option("DAY", "--tif"),
    strategy: str = typer.Option("manual", help="Strategy the position belongs to (a SELL closes its long)."),
    reason: str = typer.Option("", help="Why, for the audit trail."),
    wait: float = typer.Option(10.0, help="Seconds to wait for the gate's decision (0: just queue it)."),
) -> None:
    """Queue an operator's order: the running decision gate decides it once, with the same routing
    limits and risk checks as a signal; audited with who, when and why."""
    from tradeflow.trading import orders

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
    from tradeflow.trading import orders

    with engine_mod.connect(_settings()) as conn:
        try:
            orders.request_cancel(conn, client_order_id, reason=reason)
        except orders.OrderCommandError as err:
            console.print(f"[red]{err}[/]")
            raise typer.Exit(2)
    console.print(f"cancel of {client_order_id} requested")


def weights(max_change: str = typer.Option("0.05", help="Most a weight may move per update."),
            show_only: bool = typer.Option(False, "--show", help="Print the current weights, change nothing.")) -> None:
    """Move each strategy's weight toward its scoreboard target (at most --max-change), append the
    new weights, and print them. Run it on a schedule (e.g. daily)."""
    from tradeflow.clock import utc_now
    from tradeflow.trading.accounts import operator
    from tradeflow.trading.weights import update_weights

    settings = _settings()
    if not show_only:
        with engine_mod.connect(settings) as conn:
            update_weights(conn, at=utc_now(), max_change=Decimal(max_change), updated_by=operator())
    _print_query("strategy weights", "SELECT w.strategy_id, w.weight, w.target, w.size_multiplier, w.at,"
                 " p.trades, p.shrunk_sharpe, p.t_stat FROM strategy_weights_latest w"
                 " LEFT JOIN strategy_perf_latest p USING (strategy_id) ORDER BY w.strategy_id", settings=settings)

