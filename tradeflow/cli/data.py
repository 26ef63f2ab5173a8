"""`tradeflow data download` and the live venue feed behind `tradeflow ingest live`."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tradeflow import engine as engine_mod
from tradeflow.cli._common import _ingest_process, console

data_app = typer.Typer(no_args_is_help=True, help="Market data from real venues.")
SOURCES = ("alpaca", "ccxt:<exchange id>")


def bar_source(name: str):
    """The named venue's bar source, keys from the environment or TRADEFLOW_VENUE_CREDENTIALS_FILE;
    TRADEFLOW_ALPACA_DATA_URL / TRADEFLOW_ALPACA_DATA_STREAM_URL, TRADEFLOW_BINANCE_URL /
    TRADEFLOW_BINANCE_STREAM_URL, TRADEFLOW_BITSTAMP_URL point the SDKs elsewhere. An exchange
    without 1-minute history is one line naming what it lacks (live candles need nothing more)."""
    from adapters.ccxt_exchanges import UnsupportedExchange
    from ingest.venue_feeds import AlpacaBars
    from tradeflow.ops.venue_keys import CredentialsError, venue_secret

    try:
        if name == "alpaca":
            return AlpacaBars(venue_secret("APCA_API_KEY_ID"), venue_secret("APCA_API_SECRET_KEY"),
                              feed=os.environ.get("TRADEFLOW_ALPACA_FEED", "iex"),
                              url_override=os.environ.get("TRADEFLOW_ALPACA_DATA_URL"),
                              stream_url_override=os.environ.get("TRADEFLOW_ALPACA_DATA_STREAM_URL"))
        if name.startswith("ccxt:"):  # public market data: no keys
            from adapters.ccxt_exchanges import exchange_id, urls_from
            from ingest.ccxt_bars import CcxtBars

            exchange = exchange_id(name)
            return CcxtBars(exchange, *urls_from(exchange, os.environ))
    except (CredentialsError, UnsupportedExchange) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    typer.echo(f"error: source: {name!r} is not one of {', '.join(SOURCES)}", err=True)
    raise typer.Exit(2)


def _utc(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        typer.echo(f"error: {field}: {text!r} is not an ISO date or time", err=True)
        raise typer.Exit(2)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _last_stored(conn, symbols: list[str], start: datetime, end: datetime) -> dict[str, datetime]:
    return dict(conn.execute("SELECT symbol, max(ts) FROM price_1m_history WHERE symbol = ANY(%s)"
                             " AND ts >= %s AND ts < %s GROUP BY symbol", (symbols, start, end)).fetchall())


@data_app.command("download")
def data_download(
    source: str = typer.Option(..., help="alpaca or ccxt:<exchange id>, e.g. ccxt:binance (docs/venues.md)"),
    symbols: str = typer.Option(..., help="Comma-separated symbols, e.g. AAPL,MSFT."),
    from_: str = typer.Option(..., "--from", help="Start (ISO date or time, UTC unless an offset is given)."),
    to: str = typer.Option(..., help="End, exclusive."),
    out: Optional[Path] = typer.Option(None, help="Write Parquet here (one file per symbol and chunk) instead."),
    chunk_days: int = typer.Option(5, min=1, help="Days per request chunk (the unit of resumption)."),
) -> None:
    """Download 1-minute bars. Resumable: a rerun skips the chunks already written."""
    from ingest.prices import PriceIngester
    from ingest.validation import IngestReport
    from ingest.venue_feeds import ParquetChunks, chunks, download

    bars_source = bar_source(source)
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    start, end = _utc(from_, "--from"), _utc(to, "--to")
    total = len(names) * len(chunks(start, end, timedelta(days=chunk_days)))
    progress = Progress(TextColumn("[bold]download[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                        TimeElapsedColumn(), console=console)
    with progress:
        task = progress.add_task("chunks", total=total)
        if out is not None:
            target = ParquetChunks(out)
            fetched = download(bars_source, names, start, end, write=target.write, done=target.done,
                               chunk=timedelta(days=chunk_days), on_chunk=lambda _: progress.advance(task))
            report = {"fetched": fetched, "out": str(out)}
        else:
            with _ingest_process(None, "127.0.0.1") as settings, engine_mod.connect(settings) as conn:
                ingester = PriceIngester(conn, settings, source=f"download:{source}")
                last = _last_stored(conn, names, start, end)
                totals = IngestReport()

                def write(symbol, lo, hi, bars) -> None:
                    if not bars.empty:
                        totals.add(ingester.ingest_frame(bars))

                # chunks before a symbol's newest stored bar are done; the one holding it is fetched again
                fetched = download(bars_source, names, start, end, write=write,
                                   done=lambda s, lo, hi: s in last and hi <= last[s],
                                   chunk=timedelta(days=chunk_days), on_chunk=lambda _: progress.advance(task))
                report = {"fetched": fetched, **totals.as_dict()}
    console.print_json(json.dumps(report, default=str))


def run_live(source: str, symbols: str, metrics_port: Optional[int], metrics_addr: str) -> None:
    """`tradeflow ingest live`: live bars through the price ingester until stopped."""
    from ingest.prices import PriceIngester
    from ingest.venue_feeds import LiveBarFeed
    from tradeflow.trading.daemon import stop_on_signals

    bars_source = bar_source(source)
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    stop = stop_on_signals()
    with _ingest_process(metrics_port, metrics_addr) as settings, engine_mod.connect(settings) as conn:
        last = dict(conn.execute("SELECT symbol, max(ts) FROM price_1m_history WHERE symbol = ANY(%s)"
                                 " GROUP BY symbol", (names,)).fetchall())
        feed = LiveBarFeed(bars_source, names, last_ts=last, stop=stop)
        report = PriceIngester(conn, settings, source=feed.name).ingest(feed.batches())
    console.print_json(json.dumps({**report.as_dict(), **feed.stats}))
