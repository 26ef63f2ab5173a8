"""Crypto bars through ccxt, a BarSource for ingest.venue_feeds: downloads and
backfill use its history (any ccxt exchange with 1-minute fetchOHLCV), `ingest
live` its stream, through the same LiveBarFeed as Alpaca (gap and reconnect
backfill, duplicates dropped by (symbol, ts), malformed messages dead-lettered,
feed metrics).

Symbols are ccxt's unified names (BTC/USDT). Market data needs no keys.

history  fetch_ohlcv(symbol, "1m", since, limit, until) page by page, limit the
         exchange's most candles per request (ccxt's features; Binance 1000,
         GET /api/v3/klines; a short page ends the window, and without a known
         limit an empty one), kept to start <= ts < end; a rate limit or a
         dropped connection is retried with backoff (adapters.resilience.retry).
         ccxt hands OHLCV back as floats: Binance's decimal strings have at most
         15 significant digits, so the float's shortest repr is that string.
stream   one of three ways (live_method), all ending in the same loop: a failure
         (a dropped connection, a failed request) ends the session and a new
         one starts after 1 s doubling to 30 s, less up to half at random; a
         session that got as far as "connected" resets the backoff.
  kline  Binance: ccxt.pro's watch_ohlcv_for_symbols subscribes
         <symbol>@kline_1m on the combined stream. Binance pushes the open
         candle every 2 s; only the closing update ("x": true) is a bar, with
         its values as sent (strings). Every other message that is not a
         subscription reply goes to the feed, which dead-letters what is not a
         bar. "connected" is the SUBSCRIBE reply.
  watch  an exchange whose ccxt.pro class has watchOHLCV: one watch_ohlcv(symbol,
         "1m") per symbol. ccxt.pro keeps the candles in a cache by timestamp
         (ArrayCacheByTimestamp) and, with its default newUpdates, each call
         returns the candles updated since the last call: the open candle again
         and again, with the previous one when its last update and the next
         candle's first came together. A candle is a bar once a later candle of
         its symbol has started, or once its minute has been over for
         close_delay seconds (a quiet market starts no next candle); an update
         of a candle already passed on is dropped. "connected" is the session's
         first answer.
  poll   any other exchange: fetch_ohlcv of each symbol close_delay seconds
         after every minute ends, from the minute after its last bar (at first
         the last closed minute), through the same candle rule (the venue
         lists the open candle too). "connected" is the session's first
         answered round.
"""
from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import ccxt
import ccxt.pro
import pandas as pd

from adapters.ccxt_exchanges import check_bars, rest_exchange, stream_exchange
from adapters.resilience import retry
from ingest.feeds import CANONICAL_COLUMNS

log = logging.getLogger("tradeflow.venue.feed")
MINUTE_MS = 60_000
Emit = Callable[[str, list], None]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


def _now_ms() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1000)


def live_method(exchange: str) -> str:
    """'kline' (Binance), 'watch' (ccxt.pro's watchOHLCV) or 'poll' (fetchOHLCV): see the module docstring."""
    if exchange == "binance":
        return "kline"
    pro = getattr(ccxt.pro, exchange, None)
    return "watch" if pro is not None and pro().has.get("watchOHLCV") else "poll"


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


class CandleCloser:
    """Closed 1-minute candles out of a venue's candle updates, per symbol: a candle is passed on once a
    later one has started (update) or once its minute has been over for close_delay seconds (due), and
    only once. A candle whose timestamp is not an integer is passed on at once, for the feed to refuse."""

    def __init__(self, close_delay: float) -> None:
        self._delay_ms = int(close_delay * 1000)
        self._open: dict[str, list] = {}    # the newest candle of each symbol, not passed on yet
        self._passed: dict[str, int] = {}   # the timestamp of each symbol's newest candle passed on

    def update(self, symbol: str, candles: list) -> list[list]:
        closed = [c for c in candles if not (isinstance(c, list) and c and type(c[0]) is int)]
        for candle in sorted((c for c in candles if c not in closed), key=lambda c: c[0]):
            if candle[0] <= self._passed.get(symbol, -1):
                continue  # a late update of a candle already passed on
            current = self._open.get(symbol)
            if current is not None and candle[0] > current[0]:
                closed.append(self._pass(symbol))
            self._open[symbol] = list(candle)
        return closed

    def due(self, now_ms: int) -> list[tuple[str, list]]:
        return [(symbol, self._pass(symbol)) for symbol, candle in list(self._open.items())
                if candle[0] + MINUTE_MS + self._delay_ms <= now_ms]

    def resume_from(self, symbol: str) -> int | None:
        """The first candle a venue still has to say (the pending one, or the one after the last passed on)."""
        if symbol in self._open:
            return self._open[symbol][0]
        return self._passed[symbol] + MINUTE_MS if symbol in self._passed else None

    def _pass(self, symbol: str) -> list:
        candle = self._open.pop(symbol)
        self._passed[symbol] = candle[0]
        return candle


class CcxtBars:
    def __init__(self, exchange: str = "binance", rest_url: str | None = None, stream_url: str | None = None, *,
                 method: str | None = None, close_delay: float = 3.0, tick: float = 1.0,
                 reconnect_min_backoff: float = 1.0, reconnect_max_backoff: float = 30.0,
                 sleep: Callable[[float], None] | None = None, clock_ms: Callable[[], int] = _now_ms) -> None:
        """UnsupportedExchange (one line) for an exchange without 1-minute history. method: how the stream
        reads candles, live_method(exchange) unless given. tick: how often a watch looks for candles due."""
        self.name = f"ccxt:{exchange}"
        self._exchange = exchange
        self._rest = rest_exchange(exchange, rest_url=rest_url)
        check_bars(self._rest)
        self.method = method or live_method(exchange)
        spot = (self._rest.features or {}).get("spot") or {}
        self._page = (spot.get("fetchOHLCV") or {}).get("limit")  # the most candles per request, if ccxt knows
        self._rest_url, self._stream_url = rest_url, stream_url
        self._min_backoff, self._max_backoff = reconnect_min_backoff, reconnect_max_backoff
        self._close_delay, self._tick = close_delay, tick
        self._retry_sleep = sleep
        self._clock_ms = clock_ms

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
        connected = threading.Event()  # set by a session's "connected"; a good session resets the backoff
        loop = asyncio.new_event_loop()
        holder: dict[str, Any] = {}

        def session_connected() -> None:
            if not connected.is_set():
                connected.set()
                on_connected()

        def emit(symbol: str, candle: list) -> None:
            on_message({"symbol": symbol, "candle": candle})

        async def run() -> None:
            holder["task"] = asyncio.current_task()
            # made on its loop's thread: a ccxt.pro client keeps the loop it was made on
            if self.method == "kline":
                cls = lambda config: _KlineStream(config, on_message, session_connected)  # noqa: E731
                client = holder["client"] = stream_exchange(self._exchange, cls, rest_url=self._rest_url,
                                                            stream_url=self._stream_url)
                session = lambda: self._klines(client, symbols)  # noqa: E731
            else:
                client = holder["client"] = stream_exchange(self._exchange, rest_url=self._rest_url,
                                                            stream_url=self._stream_url)
                closer = CandleCloser(self._close_delay)  # kept across sessions: a candle is passed on once
                reads = self._watch if self.method == "watch" else self._poll
                session = lambda: reads(client, symbols, closer, emit, session_connected)  # noqa: E731
            attempt = 0
            while True:
                try:
                    await session()
                except (Exception, asyncio.CancelledError) as err:  # ccxt.pro ends a watch on any failure
                    if stopping.is_set():
                        return
                    attempt = 0 if connected.is_set() else attempt + 1
                    connected.clear()
                    wait = min(self._max_backoff, self._min_backoff * 2 ** attempt) * (1 - 0.5 * random.random())
                    log.warning("%s %s session ended (%s); starting again in %.2f s", self.name, self.method,
                                type(err).__name__, wait)
                    await asyncio.sleep(wait)

        thread = threading.Thread(target=loop.run_forever, name=f"{self.name}-bars", daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(run(), loop)

        async def shutdown() -> None:
            if "task" in holder:
                holder["task"].cancel()  # wakes run() wherever it waits: a watch, a poll, the backoff
                await asyncio.gather(holder["task"], return_exceptions=True)
            if "client" in holder:
                await holder["client"].close()

        def stop() -> None:
            stopping.set()
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

        return stop

    async def _klines(self, client: Any, symbols: list[str]) -> None:
        while True:  # the messages go to the feed from _KlineStream.handle_message; the watch only fails
            await client.watch_ohlcv_for_symbols([[s, "1m"] for s in symbols])

    async def _watch(self, client: Any, symbols: list[str], closer: CandleCloser, emit: Emit,
                     connected: Callable[[], None]) -> None:
        async def watch(symbol: str) -> None:
            while True:
                candles = await client.watch_ohlcv(symbol, "1m")
                connected()
                for candle in closer.update(symbol, candles):
                    emit(symbol, candle)

        async def close_quiet_minutes() -> None:
            while True:
                await asyncio.sleep(self._tick)
                for symbol, candle in closer.due(self._clock_ms()):
                    emit(symbol, candle)

        await _all_or_none([watch(s) for s in symbols] + [close_quiet_minutes()])

    async def _poll(self, client: Any, symbols: list[str], closer: CandleCloser, emit: Emit,
                    connected: Callable[[], None]) -> None:
        while True:
            now = self._clock_ms()
            answers = {symbol: await client.fetch_ohlcv(symbol, "1m", closer.resume_from(symbol)
                                                        or now - now % MINUTE_MS - MINUTE_MS, self._page)
                       for symbol in symbols}
            connected()
            for symbol, candles in answers.items():
                for candle in closer.update(symbol, candles):
                    emit(symbol, candle)
            for symbol, candle in closer.due(self._clock_ms()):
                emit(symbol, candle)
            await self._until(now - now % MINUTE_MS + MINUTE_MS + int(self._close_delay * 1000))

    async def _until(self, ms: int) -> None:
        """Wait until the clock reads ms, looking every tick (the clock need not be the loop's)."""
        while True:
            await asyncio.sleep(self._tick)
            if self._clock_ms() >= ms:
                return

    def normalize(self, message: Any) -> dict[str, Any]:
        if self.method != "kline":
            ms, o, h, lo, c, v = message["candle"]
            return {"symbol": message["symbol"], "ts": _utc(int(ms)), "open": o, "high": h, "low": lo, "close": c,
                    "volume": v}
        if message.get("e") != "kline":
            raise ValueError(f"not a kline event: e={message.get('e')!r}")
        kline = message["k"]
        if not self._rest.markets:
            self._rest.load_markets()
        return {"symbol": self._rest.markets_by_id[kline["s"]][0]["symbol"], "ts": _utc(int(kline["t"])),
                "open": kline["o"], "high": kline["h"], "low": kline["l"], "close": kline["c"], "volume": kline["v"]}


async def _all_or_none(jobs: list[Awaitable[None]]) -> None:
    """Run the jobs until the first fails (its error is raised), then cancel the rest."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
