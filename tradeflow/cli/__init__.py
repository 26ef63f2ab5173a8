"""The `tradeflow` command: one module per command group, assembled here."""
from __future__ import annotations

from typing import Optional

import typer

from tradeflow.cli.data import data_app
from tradeflow.cli.engine import dbt, deploy, engine_app
from tradeflow.cli.ingest import dlq_app, ingest_app
from tradeflow.cli.research import DEMO_ACCOUNTS, DEMO_PAPER, DEMO_SCHEMA, backtest, demo
from tradeflow.cli.trading import accounts_app, adapter_app, gate_app, orders_app, policy_app, weights
from tradeflow.cli.views import metrics_app, pnl, positions, reasons, show_app, trace

app = typer.Typer(no_args_is_help=True, add_completion=False, help="SQL-first streaming trading engine.")
for group, name in ((engine_app, "engine"), (ingest_app, "ingest"), (dlq_app, "dlq"), (show_app, "show"),
                    (accounts_app, "accounts"), (policy_app, "policy"), (gate_app, "gate"),
                    (adapter_app, "adapter"), (orders_app, "orders"), (metrics_app, "metrics"), (data_app, "data")):
    app.add_typer(group, name=name)
for command in (deploy, weights, trace, positions, pnl, reasons, backtest, demo):
    app.command()(command)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(dbt)


@app.callback()
def main(log_format: Optional[str] = typer.Option(None, envvar="TRADEFLOW_LOG_FORMAT",
                                                  help="text or json (structured logs with signal/order/fill ids)."),
         log_level: str = typer.Option("INFO", envvar="TRADEFLOW_LOG_LEVEL")) -> None:
    from tradeflow.ops import logs

    logs.configure(log_format, log_level)


__all__ = ["DEMO_ACCOUNTS", "DEMO_PAPER", "DEMO_SCHEMA", "app"]
