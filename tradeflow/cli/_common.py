"""What every command group shares: the console, settings, deploy-on-first-use, tables."""
from __future__ import annotations

import csv
import json
import sys
from contextlib import contextmanager
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Literal, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table

from tradeflow import engine as engine_mod
from tradeflow.config import Settings

# Tables are wider than the 80 columns rich assumes when output is not a terminal.
console = Console(width=None if Console().is_terminal else 140)
METRICS_PORT = typer.Option(None, "--metrics-port", help="Serve /metrics and /health on this port while running.")
METRICS_ADDR = typer.Option("127.0.0.1", "--metrics-addr", help="Address for --metrics-port.")
AS_JSON = typer.Option(False, "--json", help="Print JSON (numbers as exact decimal strings).")
AS_CSV = typer.Option(False, "--csv", help="Print CSV with a header row.")
# -h as well as --help; plain click help wraps option names and text at the
# terminal's width (rich's help tables cut long option names at 80 columns)
CONTEXT = {"help_option_names": ["-h", "--help"]}


def group(help_text: str) -> typer.Typer:
    """A command group with the CLI's help conventions."""
    return typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode=None, context_settings=CONTEXT,
                       help=help_text)


# Allowed values of options and arguments (typed so, any other value is a usage
# error that lists them; lower-case ones are given case_sensitive=False)
DlqKind = Literal["price", "exec", "instrument", "venue_report"]  # venue_report: listed only, no replay (docs/venues.md)
OnOff = Literal["on", "off"]
OrderType = Literal["MARKET", "LIMIT", "STOP"]
TimeInForce = Literal["DAY", "GTC", "IOC"]
Timeframe = Literal["1m", "5m", "15m", "1h"]  # int_bars_multi_timeframe's


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



Rows = list[dict[str, object]]


def rows_of(cur) -> Rows:
    """A cursor's rows as {column: value}."""
    names = [column.name for column in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _print_query(title: str, query: str, params: tuple = (), settings: Settings | None = None, *,
                 as_json: bool = False, as_csv: bool = False) -> None:
    """A query's rows as a table, or with as_json / as_csv in that format."""
    with engine_mod.connect(settings or _settings()) as conn:
        cur = conn.execute(query, params)
        names = [column.name for column in cur.description]
        rows = rows_of(cur)
    _print_rows(title, names, rows, as_json=as_json, as_csv=as_csv)


def _print_rows(title: str, names: Sequence[str], rows: Rows, *, as_json: bool = False, as_csv: bool = False) -> None:
    if as_json and as_csv:
        raise typer.BadParameter("choose one of --json and --csv")
    if as_json:
        print(to_json(rows))
    elif as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_plain(row[name]) for name in names] for row in rows)
    else:
        table = Table(title=title)
        for name in names:
            table.add_column(name, no_wrap=True)
        for row in rows:
            table.add_row(*[_fmt(row[name]) for name in names])
        console.print(table)


def _plain(value: object) -> object:
    """A value as JSON and CSV carry it: decimals as their exact text, times in ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def to_json(value: object) -> str:
    return json.dumps(value, default=lambda v: _plain(v) if isinstance(v, (Decimal, datetime, date)) else str(v))


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, (float, Decimal)):
        return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.4f}"
    return str(value)
