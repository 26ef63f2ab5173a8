"""Crypto bars through ccxt, a BarSource for ingest.venue_feeds: downloads and
backfill use its history (any ccxt exchange with 1-minute fetchOHLCV), `ingest
live` its stream (Binance only) through the same LiveBarFeed as Alpaca (gap and
reconnect backfill, duplicates dropped by (symbol, ts), malformed messages
dead-lettered, feed metrics).

Symbols are ccxt's unified names (BTC/USDT). Market data needs no keys.

history  fetch_ohlcv(symbol, "1m", since, limit, until) page by page, limit the
         exchange's most candles per request (ccxt's features; Binance 1000,
         GET /api/v3/klines; a short page ends the window, and without a known
         limit an empty one), kept to start <= ts < end; a rate limit or a
         dropped connection is retried with backoff (adapters.resilience.retry).
         ccxt hands OHLCV back as floats: Binance's decimal strings have at most
         15 significant digits, so the float's shortest repr is that string.
stream   ccxt.pro's watch_ohlcv_for_symbols subscribes <symbol>@kline_1m on the
         combined stream. Binance pushes the open candle every 2 s; only the
         closing update ("x": true) is a bar, with its values as sent (strings).
         Every other message that is not a subscription reply goes to the feed,
         which dead-letters what is not a bar. ccxt.pro does not reconnect by
         itself: a dropped connection ends the watch and this loop subscribes
         again after 1 s doubling to 30 s, less up to half at random; "connected"
         is the SUBSCRIBE reply, after which the feed backfills.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import ccxt
import ccxt.pro
import pandas as pd

from adapters.ccxt_exchanges import UnsupportedExchange, check_bars, rest_exchange, stream_exchange
from adapters.resilience import retry
from ingest.feeds import CANONICAL_COLUMNS

log = logging.getLogger("tradeflow.venue.feed")
MINUTE_MS = 60_000


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


class _KlineStream(ccxt.pro.binance):
    """ccxt.pro's Binance client, whose messages go to the feed (raw, values as sent) instead of its caches."""

    def __init__(self, config: dict, on_message: Callable[[Any], None], on_connected: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_message = on_message
        self._on_connected = on_connected

    def handle_message(self, client: Any, message: Any) -> None:
        data = message.get("data", message) if isinstance(message, dict) and "stream" in message else message
        if isinstance(data, dict) and "id" in data and "result" in data:
            super().handle_message(client, message)
            self._on_connected()
        elif isinstance(data, dict) and data.get("e") == "kline" and isinstance(data.get("k"), dict) \
                and data["k"].get("x") is False:
            return  # the open candle's running update: not a bar yet
        else:
            self._on_message(data)


class CcxtBars:
    def __init__(self, exchange: str = "binance", rest_url: str | None = None, stream_url: str | None = None, *,
                 live: bool = False, reconnect_min_backoff: float = 1.0, reconnect_max_backoff: float = 30.0,
                 sleep: Callable[[float], None] | None = None) -> None:
        """UnsupportedExchange (one line) for an exchange without 1-minute history, or with live
        for one other than Binance: its kline stream is the only one read here."""
        self.name = f"ccxt:{exchange}"
        self._rest = rest_exchange(exchange, rest_url=rest_url)
        check_bars(self._rest)
        if live and exchange != "binance":
            raise UnsupportedExchange(f"ccxt exchange {exchange!r}: live candles are built for ccxt:binance only"
                                      " (history and backfill work: tradeflow data download)")
        spot = (self._rest.features or {}).get("spot") or {}
        self._page = (spot.get("fetchOHLCV") or {}).get("limit")  # the most candles per request, if ccxt knows
        self._rest_url, self._stream_url = rest_url, stream_url
        self._min_backoff, self._max_backoff = reconnect_min_backoff, reconnect_max_backoff
        self._retry_sleep = sleep

    def history(self, symbol: str, start: datetime, end: datetime) -> pd.DataFrame:
        since, until = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
        rows: list[list] = []
        while since < until:
            page = retry(lambda: self._rest.fetch_ohlcv(symbol, "1m", since, self._page, {"until": until - 1}),
                         attempts=5, base_delay=0.5, max_delay=10.0, retry_on=(ccxt.OperationFailed,),
                         **({"sleep": self._retry_sleep} if self._retry_sleep else {}))
            short = self._page is not None and len(page) < self._page
            page = [row for row in page if since <= row[0] < until]
            rows += page
            if short or not page:
                break  # fewer than a page (or none): the venue had no more in the window
            since = page[-1][0] + MINUTE_MS
        return pd.DataFrame([{"symbol": symbol, "ts": _utc(ms), "open": o, "high": h, "low": lo, "close": c,
                              "volume": v} for ms, o, h, lo, c, v in rows], columns=list(CANONICAL_COLUMNS))

    def stream(self, symbols: list[str], on_message: Callable[[Any], None],
               on_connected: Callable[[], None]) -> Callable[[], None]:
        stopping = threading.Event()
        connected = threading.Event()  # set by the SUBSCRIBE reply; a good connection resets the backoff
        loop = asyncio.new_event_loop()
        holder: dict[str, Any] = {}

        def subscribed() -> None:
            connected.set()
            on_connected()

        async def run() -> None:
            # made on its loop's thread: a ccxt.pro client keeps the loop it was made on
            client = holder["client"] = stream_exchange(lambda config: _KlineStream(config, on_message, subscribed),
                                                        rest_url=self._rest_url, stream_url=self._stream_url)
            attempt = 0
            while not stopping.is_set():
                try:
                    await client.watch_ohlcv_for_symbols([[s, "1m"] for s in symbols])
                except (Exception, asyncio.CancelledError) as err:  # ccxt.pro ends the watch on any failure
                    if stopping.is_set():
                        break
                    attempt = 0 if connected.is_set() else attempt + 1
                    connected.clear()
                    wait = min(self._max_backoff, self._min_backoff * 2 ** attempt) * (1 - 0.5 * random.random())
                    log.warning("%s stream ended (%s); subscribing again in %.2f s", self.name,
                                type(err).__name__, wait)
                    await asyncio.sleep(wait)

        thread = threading.Thread(target=loop.run_forever, name=f"{self.name}-bars", daemon=True)
        thread.start()
        running = asyncio.run_coroutine_threadsafe(run(), loop)

        async def shutdown() -> None:
            if "client" in holder:
                await holder["client"].close()  # wakes the pending watch: run() sees the stop and returns

        def stop() -> None:
            stopping.set()
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            running.result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

        return stop

    def normalize(self, message: Any) -> dict[str, Any]:
        if message.get("e") != "kline":
            raise ValueError(f"not a kline event: e={message.get('e')!r}")
        kline = message["k"]
        if not self._rest.markets:
            self._rest.load_markets()
        return {"symbol": self._rest.markets_by_id[kline["s"]][0]["symbol"], "ts": _utc(int(kline["t"])),
                "open": kline["o"], "high": kline["h"], "low": kline["l"], "close": kline["c"], "volume": kline["v"]}
