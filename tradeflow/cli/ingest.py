"""`tradeflow ingest ...` and `tradeflow dlq ...`: loading raw tables and the dead letters."""
from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tradeflow import engine as engine_mod
from tradeflow.cli._common import (AS_CSV, AS_JSON, METRICS_ADDR, METRICS_PORT, DlqKind, _ingest_process, _print_rows,
                                   _settings, console, group)

ingest_app = group("Load market data and execution reports into the raw tables.")
dlq_app = group("Inspect and replay rejected records.")


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
    from ingest.feeds import FeedError, FileFeed

    column_map = dict(item.split("=", 1) for item in map_)
    for path in paths:
        try:
            feed = FileFeed(path, column_map=column_map or None)
        except FeedError as err:
            _feed_error(err)
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


@ingest_app.command("live")
def ingest_live(
    source: str = typer.Option(..., help="alpaca or ccxt:binance (docs/venues.md: live candles are Binance's)."),
    symbols: str = typer.Option(..., help="Comma-separated symbols."),
    metrics_port: Optional[int] = METRICS_PORT, metrics_addr: str = METRICS_ADDR,
) -> None:
    """Live 1-minute bars from a venue until stopped: gaps backfilled over REST, reconnects with backoff."""
    from tradeflow.cli.data import run_live

    run_live(source, symbols, metrics_port, metrics_addr)


@ingest_app.command("execs")
def ingest_execs(
    paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="CSV, Parquet or JSON-lines files."),
    metrics_port: Optional[int] = METRICS_PORT, metrics_addr: str = METRICS_ADDR,
) -> None:
    """Ingest execution reports (fills) into exec_report_history (columns: see ingest/execs.py)."""
    from ingest.execs import ExecIngester
    from ingest.feeds import ExecFileFeed

    _ingest_files(paths, ExecFileFeed, ExecIngester, "exec", metrics_port, metrics_addr)


def _ingest_files(paths: list[Path], feed_class, ingester_class, kind: str, metrics_port: Optional[int],
                  metrics_addr: str) -> None:
    """Each file through its feed and ingester: a report per file; a file that cannot be read is one line, exit 2."""
    from ingest.feeds import FeedError

    for path in paths:
        try:
            feed = feed_class(path)
        except FeedError as err:
            _feed_error(err)
        with _ingest_process(metrics_port, metrics_addr) as settings, engine_mod.connect(settings) as conn:
            report = ingester_class(conn, settings, source=str(path)).ingest(feed.batches())
        console.print_json(json.dumps(report.as_dict()))
        if report.rejected:
            console.print(f"[yellow]{report.rejected} record(s) rejected: see `tradeflow dlq list --kind {kind}`[/]")



@ingest_app.command("instruments")
def ingest_instruments(paths: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="CSV files.")) -> None:
    """Load instrument reference data (columns: see ingest/instruments.py); a symbol's newest row is current."""
    from ingest.instruments import InstrumentFileFeed, InstrumentIngester

    _ingest_files(paths, InstrumentFileFeed, InstrumentIngester, "instrument", None, METRICS_ADDR)


def _feed_error(err: Exception) -> NoReturn:
    """A file that cannot be read as a feed: one line naming what is wrong, no traceback."""
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@dlq_app.command("list")
def dlq_list(kind: Optional[DlqKind] = typer.Option(None, case_sensitive=False),
             limit: int = typer.Option(50, min=1), as_json: bool = AS_JSON, as_csv: bool = AS_CSV) -> None:
    """Rejected records not yet replayed, with field and reason."""
    from ingest.dlq import pending

    with engine_mod.connect(_settings()) as conn:
        letters = pending(conn, kind=kind and kind.lower(), limit=limit)
    columns = ("dlq_id", "kind", "field", "reason_code", "reason", "payload", "source", "received_at")
    rows = [{"dlq_id": letter.dlq_id, "kind": letter.kind, "field": letter.field, "reason_code": letter.reason_code,
             "reason": letter.reason,
             "payload": letter.payload if as_json else json.dumps(letter.payload, sort_keys=True),
             "source": letter.source, "received_at": letter.received_at} for letter in letters]
    if as_json or as_csv:
        _print_rows("dead letters", columns, rows, as_json=as_json, as_csv=as_csv)
    else:
        _print_rows("dead letters", columns[:6], rows)


@dlq_app.command("replay")
def dlq_replay(
    ids: list[str] = typer.Argument(None, help="dlq ids (default: all pending of --kind)."),
    kind: DlqKind = typer.Option("price", case_sensitive=False),
    set_: list[str] = typer.Option([], "--set", help="Fix a field before replay: field=value."),
) -> None:
    """Re-validate pending records (optionally fixed with --set) and ingest those that now pass."""
    from ingest.replay import INGESTERS, replay

    overrides = dict(item.split("=", 1) for item in set_)
    settings = _settings()
    if kind.lower() not in INGESTERS:  # venue_report: a venue's own report, fixed at the venue, not replayed
        typer.echo(f"error: kind {kind.lower()!r} has no replay (replayable: {', '.join(INGESTERS)})", err=True)
        raise typer.Exit(2)
    with engine_mod.connect(settings) as conn:
        outcome = replay(conn, settings, kind=kind.lower(), ids=ids or [], overrides=overrides)
    console.print_json(json.dumps(outcome))

