"""Market data from real venues behind the feed port (ingest.feeds.BarFeed):
history over REST (downloads, and backfill) and live 1-minute bars over a
websocket, normalized to the raw bar contract (symbol, ts, open, high, low,
close, volume; ts = the bar's open, values as the venue sent them, so the
validator and the dead-letter table see the original).

Sources
-------
AlpacaBars (stocks, alpaca-py): REST GET /v2/stocks/bars (1Min), live bars
from StockDataStream (msgpack; a bar message is {T: "b", S, o, h, l, c, v, t}).
CcxtBars (crypto through ccxt, Binance first): ingest/ccxt_bars.py.

Live feed (LiveBarFeed)
-----------------------
Bars arrive on the SDK's thread and are yielded in arrival order, one frame
per message. Per symbol it keeps the last bar ts: a bar more than a minute
after it is a gap, and after every reconnect the span since it is one too;
both are filled from REST before the new bar goes on (a quiet minute, which
a venue simply does not send, costs one REST call that finds nothing). A bar
the venue sends twice, or a backfilled one the stream also sent, is a
duplicate the price ingester drops by (symbol, ts): nothing is written twice.
A message that cannot be read as a bar goes on as one malformed record
(validation.MALFORMED) and lands in the dead-letter table. Metrics:
feed_messages_total, feed_gaps_total, feed_backfilled_bars_total,
feed_reconnects_total, feed_lag_seconds (labelled by source).
"""
from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.stock import StockDataStream
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame

from adapters.venue_events import NotifiesConnect
from ingest.feeds import CANONICAL_COLUMNS
from ingest.validation import MALFORMED, RAW_TEXT
from tradeflow.ops.metrics import PROCESS_METRICS
from tradeflow.ops.venue_keys import Secret

log = logging.getLogger("tradeflow.venue.feed")
MINUTE = timedelta(minutes=1)
_ALPACA_FIELDS = {"S": "symbol", "t": "ts", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume"}


class BarSource(Protocol):
    name: str

    def history(self, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Bars of symbol with start <= ts < end, canonical columns, oldest first."""
        ...

    def stream(self, symbols: list[str], on_message: Callable[[Any], None],
               on_connected: Callable[[], None]) -> Callable[[], None]:
        """Start delivering live bar messages; returns the function that stops it."""
        ...

    def normalize(self, message: Any) -> dict[str, Any]:
        """A live message as a canonical record; raises (KeyError, TypeError, ValueError) if it is not a bar."""
        ...


class AlpacaBars:
    name = "alpaca"

    def __init__(self, api_key: Secret, secret_key: Secret, *, feed: str = "iex", url_override: str | None = None,
                 stream_url_override: str | None = None, reconnect_min_backoff: float = 1.0) -> None:
        self._key, self._secret = api_key, secret_key
        self._feed = DataFeed(feed)
        self._stream_url = stream_url_override
        self._reconnect_min_backoff = reconnect_min_backoff
        self._client = StockHistoricalDataClient(api_key.reveal(), secret_key.reveal(), raw_data=True,
                                                 url_override=url_override)

    def history(self, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
        request = StockBarsRequest(symbol_or_symbols=[symbol], timeframe=TimeFrame.Minute, start=start,
                                   end=end - timedelta(microseconds=1), feed=self._feed)
        bars = self._client.get_stock_bars(request).get(symbol, [])
        return pd.DataFrame([{"symbol": symbol, "ts": b["t"], "open": b["o"], "high": b["h"], "low": b["l"],
                              "close": b["c"], "volume": b["v"]} for b in bars], columns=list(CANONICAL_COLUMNS))

    def stream(self, symbols: list[str], on_message: Callable[[Any], None],
               on_connected: Callable[[], None]) -> Callable[[], None]:
        stream = _AlpacaStream(self._key.reveal(), self._secret.reveal(), raw_data=True, feed=self._feed,
                               url_override=self._stream_url, on_connected=on_connected)
        stream._reconnect_min_backoff = self._reconnect_min_backoff

        async def handler(message: dict) -> None:
            on_message(message)

        stream.subscribe_bars(handler, *symbols)
        thread = threading.Thread(target=stream.run, name="alpaca-bars", daemon=True)
        thread.start()

        def stop() -> None:
            loop = stream._loop
            if loop is not None and loop.is_running():
                stream.stop()
                # the SDK looks at its stop flag between 5 s receive timeouts: closing the socket wakes it now
                asyncio.run_coroutine_threadsafe(stream.close(), loop).result(5)
            thread.join(10)

        return stop

    def normalize(self, message: Any) -> dict[str, Any]:
        record = {name: message[key] for key, name in _ALPACA_FIELDS.items()}
        ts = record["ts"]
        # over msgpack the venue sends t as a msgpack Timestamp
        record["ts"] = ts.to_datetime() if hasattr(ts, "to_datetime") else ts
        return record


class _AlpacaStream(NotifiesConnect, StockDataStream):
    """StockDataStream that says when it (re)connects: a gap is backfilled then."""


class LiveBarFeed:
    """A BarFeed of live bars with gap backfill; see the module docstring.

    last_ts: the newest stored bar per symbol (from price_1m_history), so a
    restart backfills what it missed. stop: set to end batches()."""

    def __init__(self, source: BarSource, symbols: list[str], *, last_ts: dict[str, datetime] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 stop: threading.Event | None = None, idle: float = 0.5) -> None:
        self.source = source
        self.name = f"live:{source.name}"
        self.symbols = symbols
        self.last_ts = dict(last_ts or {})
        self.clock = clock
        self.stop = stop or threading.Event()
        self.idle = idle
        self.connections = 0
        self._inbox: queue.Queue[tuple[str, Any]] = queue.Queue()
        label = source.name
        self._messages = PROCESS_METRICS["feed_messages_total"].labels(label)
        self._gaps = PROCESS_METRICS["feed_gaps_total"].labels(label)
        self._backfilled = PROCESS_METRICS["feed_backfilled_bars_total"].labels(label)
        self._reconnects = PROCESS_METRICS["feed_reconnects_total"].labels(label)
        self._lag = PROCESS_METRICS["feed_lag_seconds"].labels(label)
        self.stats = {"messages": 0, "gaps": 0, "backfilled": 0, "reconnects": 0, "malformed": 0}

    def batches(self) -> Iterator[pd.DataFrame]:
        stop_stream = self.source.stream(self.symbols, lambda m: self._inbox.put(("bar", m)),
                                         lambda: self._inbox.put(("connected", None)))
        try:
            while not self.stop.is_set():
                try:
                    kind, message = self._inbox.get(timeout=self.idle)
                except queue.Empty:
                    continue
                if kind == "connected":
                    yield from self._on_connected()
                else:
                    yield from self._on_message(message)
        finally:
            stop_stream()

    def _on_connected(self) -> Iterator[pd.DataFrame]:
        self.connections += 1
        if self.connections == 1 and not self.last_ts:
            return
        if self.connections > 1:
            self.stats["reconnects"] += 1
            self._reconnects.inc()
            log.warning("%s reconnected: backfilling since the last bar of each symbol", self.name)
        # everything after the last bar up to the current minute may have been sent while we were away
        now = self.clock().replace(second=0, microsecond=0)
        for symbol in self.symbols:
            if symbol in self.last_ts and self.last_ts[symbol] + MINUTE < now:
                yield from self._backfill(symbol, self.last_ts[symbol] + MINUTE, now)

    def _on_message(self, message: Any) -> Iterator[pd.DataFrame]:
        self.stats["messages"] += 1
        self._messages.inc()
        try:
            record = self.source.normalize(message)
            ts = pd.Timestamp(record["ts"])
            ts = (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()
            symbol = record["symbol"]
            if not isinstance(symbol, str):
                raise TypeError("symbol is not text")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            self.stats["malformed"] += 1
            yield _malformed(message, f"{self.name}: not a bar message ({type(err).__name__}: {err})")
            return
        last = self.last_ts.get(symbol)
        if last is not None and ts > last + MINUTE:
            self.stats["gaps"] += 1
            self._gaps.inc()
            yield from self._backfill(symbol, last + MINUTE, ts)
        if last is None or ts > last:
            self.last_ts[symbol] = ts
        self._lag.set(max(0.0, (self.clock() - (ts + MINUTE)).total_seconds()))
        yield pd.DataFrame([record], columns=list(CANONICAL_COLUMNS), dtype=object)

    def _backfill(self, symbol: str, start: datetime, end: datetime) -> Iterator[pd.DataFrame]:
        bars = self.source.history(symbol, start, end)
        if not bars.empty:
            self.stats["backfilled"] += len(bars)
            self._backfilled.inc(len(bars))
            log.info("%s: backfilled %d bar(s) of %s in [%s, %s)", self.name, len(bars), symbol, start, end)
            newest = pd.Timestamp(bars["ts"].iloc[-1])
            newest = (newest.tz_localize("UTC") if newest.tzinfo is None else newest.tz_convert("UTC")).to_pydatetime()
            self.last_ts[symbol] = max(self.last_ts.get(symbol, newest), newest)
            yield bars


def _malformed(message: Any, problem: str) -> pd.DataFrame:
    try:
        raw = json.dumps(message, default=str)
    except (TypeError, ValueError):
        raw = repr(message)
    row = {name: None for name in CANONICAL_COLUMNS}
    row.update({MALFORMED: problem, RAW_TEXT: raw})
    return pd.DataFrame([row], dtype=object)


def chunks(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into consecutive windows of at most size."""
    out, at = [], start
    while at < end:
        out.append((at, min(at + size, end)))
        at += size
    return out


class ParquetChunks:
    """Download target: one Parquet file per (symbol, chunk) under out/<symbol>/, written
    to a temporary name and renamed, so a chunk is there whole or not at all."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def path(self, symbol: str, start: datetime, end: datetime) -> Path:
        # a pair's slash (BTC/USDT) would make two directories
        return self.out / symbol.replace("/", "-") / f"{start:%Y%m%dT%H%M}_{end:%Y%m%dT%H%M}.parquet"

    def done(self, symbol: str, start: datetime, end: datetime) -> bool:
        return self.path(symbol, start, end).exists()

    def write(self, symbol: str, start: datetime, end: datetime, bars: pd.DataFrame) -> None:
        target = self.path(symbol, start, end)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        bars.astype({"symbol": str, "ts": str}).to_parquet(partial, index=False)
        partial.replace(target)


def download(source: BarSource, symbols: list[str], start: datetime, end: datetime, *,
             write: Callable[[str, datetime, datetime, pd.DataFrame], None],
             done: Callable[[str, datetime, datetime], bool], chunk: timedelta = timedelta(days=5),
             on_chunk: Callable[[int], None] = lambda bars: None) -> int:
    """Fetch [start, end) per symbol in chunks, skipping the chunks done() says are
    stored (resume), writing each as it arrives; returns the bars fetched."""
    fetched = 0
    for symbol in symbols:
        for lo, hi in chunks(start, end, chunk):
            if not done(symbol, lo, hi):
                bars = source.history(symbol, lo, hi)
                write(symbol, lo, hi, bars)
                fetched += len(bars)
            on_chunk(fetched)
    return fetched
