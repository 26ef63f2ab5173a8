"""Binance market data through ccxt (pointed at a fake Binance on 127.0.0.1): live
1m candles with a gap and a reconnect backfilled over REST, open-candle updates
ignored, a re-sent candle written once, malformed messages dead-lettered;
downloads paged, rate limits retried, resumable by chunk (Parquet or the price
ingester)."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from fakes.binance import FakeBinance, kline
from positions_helpers import rows
from typer.testing import CliRunner
from venue_helpers import until

from ingest.ccxt_bars import CcxtBars
from ingest.prices import PriceIngester
from ingest.validation import RAW_TEXT
from ingest.venue_feeds import LiveBarFeed
from tradeflow.cli import app

T = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)
T_MS = int(T.timestamp() * 1000)


def minute(m: int, close: str = "60000.00") -> list:
    return kline(T_MS + m * 60_000, close)


@pytest.fixture
def venue():
    fake = FakeBinance()
    yield fake
    fake.stop()


def source(venue: FakeBinance, **kwargs) -> CcxtBars:
    return CcxtBars("binance", rest_url=venue.http, stream_url=f"{venue.ws}/stream", reconnect_min_backoff=0.05,
                    **kwargs)


def test_history_pages_through_klines_and_keeps_the_window(venue):
    venue.klines["BTCUSDT"] = [minute(m) for m in range(2500)]
    bars = source(venue).history("BTC/USDT", T + timedelta(minutes=5), T + timedelta(minutes=2205))
    assert len(bars) == 2200 and list(bars.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert bars["ts"].iloc[0] == T + timedelta(minutes=5) and bars["ts"].iloc[-1] == T + timedelta(minutes=2204)
    assert bars["ts"].is_unique and {str(v) for v in bars["close"]} == {"60000.0"}
    assert len([r for r in venue.requests if r[1] == "/api/v3/klines"]) == 3  # 1000 a page


def test_history_retries_rate_limits_with_backoff(venue):
    venue.klines["BTCUSDT"] = [minute(m) for m in range(3)]
    waits: list[float] = []
    venue.rate_limited = 2
    bars = source(venue, sleep=waits.append).history("BTC/USDT", T, T + timedelta(minutes=3))
    assert len(bars) == 3 and len(waits) == 2


def test_live_candles_gaps_and_reconnects_are_backfilled_and_nothing_is_written_twice(conn, embedded_settings,
                                                                                      venue):
    venue.klines["BTCUSDT"] = [minute(m) for m in range(6)]
    feed = LiveBarFeed(source(venue), ["BTC/USDT"], clock=lambda: T + timedelta(minutes=5), idle=0.05)
    frames: list[pd.DataFrame] = []
    consumer = threading.Thread(target=lambda: frames.extend(feed.batches()))
    consumer.start()
    try:
        venue.wait_for(lambda: venue.stream_connections == 1)
        venue.push_kline("BTCUSDT", minute(0, "59990.00"), closed=False)  # the open candle: not a bar yet
        venue.push_kline("BTCUSDT", minute(0))
        venue.push_kline("BTCUSDT", minute(3))  # minutes 1 and 2 never came: a gap
        until(lambda: feed.stats["messages"] == 2)
        venue.drop_streams()  # minute 4 is sent while we are away
        venue.wait_for(lambda: venue.stream_connections == 2)
        until(lambda: feed.stats["backfilled"] == 3)
        venue.push_kline("BTCUSDT", minute(4))  # sent again after the reconnect
        venue.send_raw({"stream": "btcusdt@kline_1m", "data": {"e": "kline", "k": {"s": "BTCUSDT", "x": True}}})
        venue.send_raw({"stream": "btcusdt@kline_1m", "data": {"e": "24hrTicker", "s": "BTCUSDT"}})
        until(lambda: feed.stats["messages"] == 5)
    finally:
        feed.stop.set()
        consumer.join(15)
    assert feed.stats == {"messages": 5, "gaps": 1, "backfilled": 3, "reconnects": 1, "malformed": 2}
    report = PriceIngester(conn, embedded_settings, source=feed.name).ingest(frames)
    assert (report.inserted, report.duplicates, report.rejected) == (5, 1, 2)
    stored = rows(conn, "SELECT ts, close FROM price_1m_history WHERE symbol = 'BTC/USDT' ORDER BY ts")
    assert [r["ts"] for r in stored] == [T + timedelta(minutes=m) for m in range(5)]
    assert {r["close"] for r in stored} == {60000}  # the closed candle's, not the open update's 59990
    letters = rows(conn, "SELECT reason_code, payload FROM dead_letter WHERE kind = 'price' ORDER BY payload::text")
    assert [x["reason_code"] for x in letters] == ["MALFORMED_RECORD"] * 2
    assert any("24hrTicker" in x["payload"][RAW_TEXT] for x in letters)


def test_download_to_parquet_is_resumable_by_chunk(venue, tmp_path, monkeypatch):
    venue.klines["BTCUSDT"] = [minute(m * 720) for m in range(6)]
    monkeypatch.setenv("TRADEFLOW_BINANCE_URL", venue.http)
    args = ["data", "download", "--source", "ccxt:binance", "--symbols", "BTC/USDT", "--from", "2024-03-04T15:00",
            "--to", "2024-03-07T15:00", "--chunk-days", "1", "--out", str(tmp_path)]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0 and '"fetched": 6' in first.output
    files = sorted((tmp_path / "BTC-USDT").glob("*.parquet"))
    assert len(files) == 3 and len(pd.concat(pd.read_parquet(f) for f in files)) == 6
    requests = len(venue.requests)
    files[1].unlink()  # as if the run had stopped before this chunk
    second = CliRunner().invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0 and '"fetched": 2' in second.output
    klines = [r for r in venue.requests[requests:] if r[1] == "/api/v3/klines"]
    assert len(klines) == 1  # only the missing chunk was fetched again


def test_download_through_the_price_ingester_resumes_from_the_newest_stored_bar(embedded_settings, venue,
                                                                                 monkeypatch):
    venue.klines["BTCUSDT"] = [minute(m * 720) for m in range(6)]
    monkeypatch.setenv("TRADEFLOW_BINANCE_URL", venue.http)
    args = ["data", "download", "--source", "ccxt:binance", "--symbols", "BTC/USDT", "--from", "2024-03-04T15:00",
            "--to", "2024-03-07T15:00", "--chunk-days", "1"]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0 and '"inserted": 6' in first.output
    requests = len(venue.requests)
    second = CliRunner().invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0 and '"inserted": 0' in second.output and '"duplicates": 2' in second.output
    assert len([r for r in venue.requests[requests:] if r[1] == "/api/v3/klines"]) == 1
