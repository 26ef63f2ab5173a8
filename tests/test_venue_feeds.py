"""Alpaca market data (alpaca-py pointed at a fake Alpaca on 127.0.0.1): live
bars with a gap backfilled over REST, a reconnect backfilled, a re-sent bar
written once, a malformed message dead-lettered; downloads resumable by chunk,
to Parquet or through the price ingester."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from fakes.alpaca import KEY, SECRET, FakeAlpaca
from positions_helpers import rows
from typer.testing import CliRunner
from venue_helpers import until

from ingest.prices import PriceIngester
from ingest.validation import RAW_TEXT
from ingest.venue_feeds import AlpacaBars, LiveBarFeed
from tradeflow.cli import app
from tradeflow.ops.venue_keys import Secret

T = datetime(2024, 3, 4, 15, 0, tzinfo=timezone.utc)


def bar(minute: int, close: float = 100.0) -> dict:
    ts = (T + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z")
    return {"T": "b", "S": "AAPL", "o": close, "h": close + 1, "l": close - 1, "c": close, "v": 1000, "t": ts,
            "n": 10, "vw": close}


@pytest.fixture
def venue():
    fake = FakeAlpaca()
    yield fake
    fake.stop()


def source(venue: FakeAlpaca) -> AlpacaBars:
    return AlpacaBars(Secret("k", KEY), Secret("s", SECRET), url_override=venue.http,
                      stream_url_override=f"{venue.ws}/v2/iex", reconnect_min_backoff=0.05)


def test_live_bars_gaps_and_reconnects_are_backfilled_and_nothing_is_written_twice(conn, embedded_settings, venue):
    venue.bars["AAPL"] = [{k: v for k, v in bar(m).items() if k not in ("T", "S")} for m in range(6)]
    feed = LiveBarFeed(source(venue), ["AAPL"], clock=lambda: T + timedelta(minutes=5), idle=0.05)
    frames: list[pd.DataFrame] = []
    consumer = threading.Thread(target=lambda: frames.extend(feed.batches()))
    consumer.start()
    try:
        venue.wait_for(lambda: venue.data_connections == 1)
        venue.push_bars(bar(0))
        venue.push_bars(bar(3))  # minutes 1 and 2 never came: a gap
        until(lambda: feed.stats["messages"] == 2)
        venue.drop_streams()  # minute 4 is sent while we are away
        venue.wait_for(lambda: venue.data_connections == 2)
        until(lambda: feed.stats["backfilled"] == 3)
        venue.push_bars(bar(4))  # the venue sends it again after the reconnect
        venue.push_bars({"T": "b", "S": "AAPL", "o": 1})  # malformed: no time, high, low, close, volume
        until(lambda: feed.stats["messages"] == 4)
    finally:
        feed.stop.set()
        consumer.join(15)
    assert feed.stats == {"messages": 4, "gaps": 1, "backfilled": 3, "reconnects": 1, "malformed": 1}
    report = PriceIngester(conn, embedded_settings, source=feed.name).ingest(frames)
    assert (report.inserted, report.duplicates, report.rejected) == (5, 1, 1)
    stored = [r["ts"] for r in rows(conn, "SELECT ts FROM price_1m_history WHERE symbol = 'AAPL' ORDER BY ts")]
    assert stored == [T + timedelta(minutes=m) for m in range(5)]
    [letter] = rows(conn, "SELECT reason_code, payload FROM dead_letter WHERE kind = 'price'")
    assert letter["reason_code"] == "MALFORMED_RECORD" and '"o": 1' in letter["payload"][RAW_TEXT]


def test_download_to_parquet_is_resumable_by_chunk(venue, tmp_path, monkeypatch):
    venue.bars["AAPL"] = [{k: v for k, v in bar(m * 720).items() if k not in ("T", "S")} for m in range(6)]
    monkeypatch.setenv("APCA_API_KEY_ID", KEY)
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("TRADEFLOW_ALPACA_DATA_URL", venue.http)
    args = ["data", "download", "--source", "alpaca", "--symbols", "AAPL", "--from", "2024-03-04T15:00",
            "--to", "2024-03-07T15:00", "--chunk-days", "1", "--out", str(tmp_path)]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0 and '"fetched": 6' in first.output
    files = sorted((tmp_path / "AAPL").glob("*.parquet"))
    assert len(files) == 3
    assert len(pd.concat(pd.read_parquet(f) for f in files)) == 6
    requests = len(venue.requests)
    files[1].unlink()  # as if the run had stopped before this chunk
    second = CliRunner().invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0 and '"fetched": 2' in second.output
    assert len(venue.requests) == requests + 1  # only the missing chunk was fetched again


def test_download_through_the_price_ingester_resumes_from_the_newest_stored_bar(embedded_settings, venue,
                                                                                 monkeypatch):
    venue.bars["AAPL"] = [{k: v for k, v in bar(m * 720).items() if k not in ("T", "S")} for m in range(6)]
    for name, value in (("APCA_API_KEY_ID", KEY), ("APCA_API_SECRET_KEY", SECRET),
                        ("TRADEFLOW_ALPACA_DATA_URL", venue.http)):
        monkeypatch.setenv(name, value)
    args = ["data", "download", "--source", "alpaca", "--symbols", "AAPL", "--from", "2024-03-04T15:00",
            "--to", "2024-03-07T15:00", "--chunk-days", "1"]
    first = CliRunner().invoke(app, args, catch_exceptions=False)
    assert first.exit_code == 0 and '"inserted": 6' in first.output
    requests = len(venue.requests)
    second = CliRunner().invoke(app, args, catch_exceptions=False)
    assert second.exit_code == 0 and '"inserted": 0' in second.output and '"duplicates": 2' in second.output
    assert len(venue.requests) == requests + 1  # only the chunk holding the newest bar


def test_a_missing_key_is_one_line_naming_the_variable(monkeypatch):
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "TRADEFLOW_VENUE_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["data", "download", "--source", "alpaca", "--symbols", "AAPL",
                                      "--from", "2024-03-04", "--to", "2024-03-05"])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: missing credential: set APCA_API_KEY_ID"
                                     " (or in a file named by TRADEFLOW_VENUE_CREDENTIALS_FILE)")
