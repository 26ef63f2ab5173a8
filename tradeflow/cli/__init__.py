"""The `tradeflow` command: one module per command group, assembled here."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Optional

import typer

from tradeflow.cli.data import data_app
from tradeflow.cli._common import CONTEXT
from tradeflow.cli.engine import dbt, deploy, engine_app
from tradeflow.cli.ingest import dlq_app, ingest_app
from tradeflow.cli.research import DEMO_ACCOUNTS, DEMO_PAPER, DEMO_SCHEMA, backtest, demo
from tradeflow.cli.trading import accounts_app, adapter_app, gate_app, orders_app, policy_app, weights
from tradeflow.cli.views import metrics_app, pnl, positions, reasons, show_app, trace

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None, context_settings=CONTEXT,
                  help="SQL-first streaming trading engine.")
for group, name in ((engine_app, "engine"), (ingest_app, "ingest"), (dlq_app, "dlq"), (show_app, "show"),
                    (accounts_app, "accounts"), (policy_app, "policy"), (gate_app, "gate"),
                    (adapter_app, "adapter"), (orders_app, "orders"), (metrics_app, "metrics"), (data_app, "data")):
    app.add_typer(group, name=name)
for command in (deploy, weights, trace, positions, pnl, reasons, backtest, demo):
    app.command()(command)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(dbt)


def _version(show: bool) -> None:
    if show:
        try:
            print(f"tradeflow {version('tradeflow')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            print("tradeflow (not installed)")
        raise typer.Exit()


# Commands that run until stopped and report as they go: INFO by default. The rest show a
# progress bar or print a result, which is their output: WARNING by default.
DAEMON_GROUPS = {"gate", "adapter", "metrics"}


@app.callback()
def main(ctx: typer.Context, log_format: Optional[str] = typer.Option(None, envvar="TRADEFLOW_LOG_FORMAT",
                                                  help="text or json (structured logs with signal/order/fill ids)."),
         log_level: Optional[str] = typer.Option(
             None, envvar="TRADEFLOW_LOG_LEVEL",
             help="DEBUG, INFO, WARNING, ERROR or CRITICAL. Default: INFO for daemons, WARNING for commands"
                  " that show a progress bar or a result."),
         verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v: INFO, -vv: DEBUG."),
         quiet: bool = typer.Option(False, "--quiet", "-q", help="Errors only."),
         _: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                help="Print the version and exit.")) -> None:
    from tradeflow.ops import logs

    if log_level is None and (verbose or quiet):
        log_level = "ERROR" if quiet else ("DEBUG" if verbose > 1 else "INFO")
    try:
        logs.configure(log_format, log_level)
    except logs.LogSettingError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    if ctx.invoked_subcommand not in DAEMON_GROUPS:
        logs.quiet_by_default()


__all__ = ["DEMO_ACCOUNTS", "DEMO_PAPER", "DEMO_SCHEMA", "app"]
