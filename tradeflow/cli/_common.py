"""What every command group shares: the console, settings, deploy-on-first-use, tables."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from tradeflow import engine as engine_mod
from tradeflow.config import Settings

# Tables are wider than the 80 columns rich assumes when output is not a terminal.
console = Console(width=None if Console().is_terminal else 140)
METRICS_PORT = typer.Option(None, "--metrics-port", help="Serve /metrics and /health on this port while running.")
METRICS_ADDR = typer.Option("127.0.0.1", "--metrics-addr", help="Address for --metrics-port.")


def _settings() -> Settings:
    return Settings()


def _ensure_deployed(settings: Settings) -> None:
    from tradeflow.dbt import deploy as dbt_deploy

    with engine_mod.connect(settings) as conn:
        if engine_mod.relation_exists(conn, settings.schema, "stg_prices"):
            return
    console.print("first use of this engine: deploying models")
    dbt_deploy(settings)
    with engine_mod.connect(settings) as conn:
        engine_mod.publish_search_path(conn, settings)


@contextmanager
def _ingest_process(metrics_port: Optional[int], metrics_addr: str):
    """Settings for an ingest run, deployed; with a port, /metrics and /health
    (ready once the engine answers and the models exist) while it runs."""
    settings = _settings()
    if metrics_port is None:
        _ensure_deployed(settings)
        yield settings
        return
    from tradeflow.ops.health import Bootstrap, HealthServer
    from tradeflow.ops.metrics import PROCESS_REGISTRY

    bootstrap = Bootstrap("engine", "models")
    server = HealthServer(PROCESS_REGISTRY, metrics_port, addr=metrics_addr, checks=bootstrap.checks)
    try:
        _ensure_deployed(settings)
        bootstrap.passed("engine")
        bootstrap.passed("models")
        yield settings
    finally:
        server.stop()



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

