"""Live candles from ccxt exchanges other than Binance's kline stream: ccxt.pro's
watch_ohlcv (a real ccxt.pro client on the fake Binance's websocket) and REST polling
of fetch_ohlcv (ccxt's bitstamp on a fake Bitstamp), through the same LiveBarFeed:
a candle is a bar once a later one started or its minute is over, gaps and reconnects
backfilled, nothing written twice, malformed candles dead-lettered."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fakes.binance import FakeBinance, kline
from fakes.bitstamp import FakeBitstamp, candle
from positions_helpers import rows
from venue_helpers import consuming, until

from ingest.ccxt_bars import CandleCloser, CcxtBars, live_method
from ingest.prices import PriceIngester
from ingest.venue_feeds import LiveBarFeed

T = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)
T_MS = int(T.timestamp() * 1000)
T_S = T_MS // 1000
MIN = 60_000


class Clock:
    """The venue's and the feed's wall clock, moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def ms(self) -> int:
        return int(self.at.timestamp() * 1000)

    def now(self) -> datetime:
        return self.at


@pytest.mark.parametrize(("exchange", "method"), [("binance", "kline"), ("kraken", "watch"), ("okx", "watch"),
                                                  ("bybit", "watch"), ("bitstamp", "poll"), ("coinbase", "poll")])
def test_the_live_method_follows_what_ccxt_gives_the_exchange(exchange, method):
    assert live_method(exchange) == method


@pytest.mark.parametrize(("updates", "now_ms", "passed"), [
    ([[[0, 1, 2, 0, 1, 5]], [[0, 1, 3, 0, 2, 6]]], 0, []),                      # the open candle, updated
    ([[[0, 1, 2, 0, 1, 5]], [[0, 1, 3, 0, 2, 6], [MIN, 2, 2, 2, 2, 1]]], 0,     # its last update with the next
     [[0, 1, 3, 0, 2, 6]]),
    ([[[0, 1, 2, 0, 1, 5]], [[MIN, 2, 2, 2, 2, 1]], [[0, 9, 9, 9, 9, 9]]], 0,   # a late update: dropped
     [[0, 1, 2, 0, 1, 5]]),
    ([[[0, 1, 2, 0, 1, 5]]], MIN + 2_999, []),                                  # over, but not close_delay ago
    ([[[0, 1, 2, 0, 1, 5]]], MIN + 3_000, [[0, 1, 2, 0, 1, 5]]),                # a quiet minute, over
    ([[[None, 1, 2, 0, 1, 5]]], 0, [[None, 1, 2, 0, 1, 5]]),                    # no timestamp: for the feed to refuse
])
def test_a_candle_is_passed_on_once_a_later_one_started_or_its_minute_is_over(updates, now_ms, passed):
    closer = CandleCloser(close_delay=3.0)
    out = [c for batch in updates for c in closer.update("BTC/USD", batch)]
    out += [c for _, c in closer.due(now_ms)]
    assert out == passed
    later = [c for _, c in closer.due(now_ms + 10 * MIN)]  # what is still open passes on when its minute ends
    assert len({c[0] for c in out + later}) == len(out + later) == len({c[0] for batch in updates for c in batch})


@pytest.fixture
def bitstamp():
    fake = FakeBitstamp()
    yield fake
    fake.stop()


@pytest.fixture
def binance():
    fake = FakeBinance()
    yield fake
    fake.stop()


def stored(conn, symbol: str) -> list[tuple[datetime, float]]:
    return [(r["ts"], float(r["close"])) for r in
            rows(conn, "SELECT ts, close FROM price_1m_history WHERE symbol = %s ORDER BY ts", (symbol,))]


def test_polled_candles_are_bars_once_closed_with_gaps_and_a_failed_poll_backfilled(conn, embedded_settings,
                                                                                   bitstamp):
    clock = Clock(T + timedelta(minutes=2, seconds=4))
    venue = bitstamp.candles["btcusd"] = [candle(T_S), candle(T_S + 60), candle(T_S + 120, "59990")]
    bars = CcxtBars("bitstamp", rest_url=bitstamp.http, clock_ms=clock.ms, tick=0.01, reconnect_min_backoff=0.05)
    assert bars.method == "poll"
    feed = LiveBarFeed(bars, ["BTC/USD"], clock=clock.now, idle=0.05)
    with consuming(feed) as frames:
        until(lambda: feed.stats["messages"] == 1)  # minute 1; minute 2 is open (minute 0 is before the start)
        venue[2] = candle(T_S + 120)  # minute 2's last trade, then minute 3
        venue += [candle(T_S + 180), candle(T_S + 300, "60010")]
        clock.at = T + timedelta(minutes=5, seconds=4)
        until(lambda: feed.stats["messages"] == 3)  # 2 and 3; 5 is open
        venue.append(candle(T_S + 360))
        clock.at = T + timedelta(minutes=6, seconds=4)
        until(lambda: len(frames) == 4)  # 5, after a quiet minute 4: a gap, backfilled (nothing found)
        assert (feed.stats["gaps"], feed.stats["backfilled"]) == (1, 0)
        venue.append(candle(T_S + 420))
        bitstamp.unavailable = 1  # the next poll fails: the session starts again after a backoff
        clock.at = T + timedelta(minutes=7, seconds=4)
        until(lambda: feed.stats["reconnects"] == 1 and feed.stats["messages"] == 5)  # 6 (also backfilled); 7 open
        clock.at = T + timedelta(minutes=8, seconds=4)  # a quiet minute 8: minute 7 is over
        until(lambda: feed.stats["messages"] == 6)
    assert feed.stats == {"messages": 6, "gaps": 1, "backfilled": 1, "reconnects": 1, "malformed": 0}
    report = PriceIngester(conn, embedded_settings, source=feed.name).ingest(frames)
    assert (report.inserted, report.duplicates, report.rejected) == (6, 1, 0)
    assert stored(conn, "BTC/USD") == [(T + timedelta(minutes=m), 60010.0 if m == 5 else 60000.0)
                                       for m in (1, 2, 3, 5, 6, 7)]  # minute 2's last close, not 59990


def test_watched_candles_are_bars_once_closed_with_a_reconnect_backfilled_and_malformed_ones_dead_lettered(
        conn, embedded_settings, binance):
    clock = Clock(T + timedelta(minutes=1, seconds=30))
    binance.klines["BTCUSDT"] = [kline(T_MS + m * MIN, "60000.00") for m in range(5)]
    bars = CcxtBars("binance", rest_url=binance.http, stream_url=f"{binance.ws}/stream", method="watch",
                    clock_ms=clock.ms, tick=0.01, reconnect_min_backoff=0.05)
    feed = LiveBarFeed(bars, ["BTC/USDT"], clock=clock.now, idle=0.05)
    with consuming(feed) as frames:
        binance.wait_for(lambda: binance.stream_connections == 1)
        binance.push_kline("BTCUSDT", kline(T_MS, "59990.00"), closed=False)  # ccxt.pro keeps every update
        binance.push_kline("BTCUSDT", kline(T_MS, "60000.00"))
        binance.push_kline("BTCUSDT", kline(T_MS + MIN, "59980.00"), closed=False)  # minute 1 started: 0 is a bar
        until(lambda: feed.stats["messages"] == 1)
        binance.push_kline("BTCUSDT", kline(T_MS + MIN, "60000.00"), closed=False)
        clock.at = T + timedelta(minutes=2, seconds=4)  # no trade in minute 2 yet: minute 1 is over
        until(lambda: feed.stats["messages"] == 2)
        binance.drop_streams()  # minutes 2 and 3 traded while we were away
        clock.at = T + timedelta(minutes=4, seconds=10)
        binance.wait_for(lambda: binance.stream_connections == 2)
        binance.push_kline("BTCUSDT", kline(T_MS + MIN, "1.00"), closed=False)  # a late update of a bar passed on
        binance.push_kline("BTCUSDT", kline(T_MS + 4 * MIN, "60000.00"), closed=False)
        until(lambda: feed.stats["backfilled"] == 2)
        binance.send_raw({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": T_MS, "s": "BTCUSDT", "k": {
            "s": "BTCUSDT", "i": "1m", "o": "1", "h": "1", "l": "1", "c": "1", "v": "1", "x": False}}})  # no "t"
        until(lambda: feed.stats["malformed"] == 1)
        clock.at = T + timedelta(minutes=5, seconds=4)
        until(lambda: feed.stats["messages"] == 4)
    assert feed.stats == {"messages": 4, "gaps": 0, "backfilled": 2, "reconnects": 1, "malformed": 1}
    report = PriceIngester(conn, embedded_settings, source=feed.name).ingest(frames)
    assert (report.inserted, report.rejected) == (5, 1)
    assert stored(conn, "BTC/USDT") == [(T + timedelta(minutes=m), 60000.0) for m in range(5)]
