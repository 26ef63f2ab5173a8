"""Price ingest against the embedded engine: validation, dead letters,
idempotent re-ingest, conflicting duplicates, replay."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ingest.dlq import pending
from ingest.prices import NUMERIC_FIELDS, PriceIngester, plain_valid_bars, validate_bars
from ingest.replay import replay
from tradeflow.config import Settings
from tradeflow.reasons import ReasonCode

NOW = datetime(2024, 3, 1, 21, 0, tzinfo=timezone.utc)


def bar(ts: str = "2024-03-01T14:30:00Z", symbol: str = "AAA", open_: str = "10.0", high: str = "10.5",
        low: str = "9.5", close: str = "10.2", volume: str = "1000") -> dict[str, str]:
    return {"symbol": symbol, "ts": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume}


def minute_bars(n: int, symbol: str = "AAA") -> list[dict[str, str]]:
    start = datetime(2024, 3, 1, 14, 30, tzinfo=timezone.utc)
    return [bar(ts=(start + timedelta(minutes=i)).isoformat(), symbol=symbol, close=f"{10 + (i % 5) / 10:.2f}")
            for i in range(n)]


def ingest(conn, settings, records):
    ingester = PriceIngester(conn, settings, source="test", clock=lambda: NOW)
    return ingester.ingest([pd.DataFrame(records, dtype=object)])


def count(conn, relation: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]


def test_valid_bars_are_counted_and_stored(conn, embedded_settings):
    report = ingest(conn, embedded_settings, minute_bars(30))
    assert report.as_dict() == {"read": 30, "inserted": 30, "duplicates": 0, "rejected": 0, "rejected_by_reason": {}}
    assert count(conn, "stg_prices") == 30


@pytest.mark.parametrize(("record", "field", "code"), [
    (bar(symbol=""), "symbol", ReasonCode.MISSING_FIELD),
    ({k: v for k, v in bar().items() if k != "volume"}, "volume", ReasonCode.MISSING_FIELD),
    (bar(ts="yesterday-ish"), "ts", ReasonCode.UNPARSEABLE_TIMESTAMP),
    (bar(ts="2024-03-01T14:30:30Z"), "ts", ReasonCode.NOT_ON_MINUTE),
    (bar(ts="2024-03-02T14:30:00Z"), "ts", ReasonCode.FUTURE_TIMESTAMP),
    (bar(close="ten"), "close", ReasonCode.NOT_A_NUMBER),
    (bar(high="inf"), "high", ReasonCode.NON_FINITE),
    (bar(open_="NaN"), "open", ReasonCode.NON_FINITE),
    (bar(volume="1e200"), "volume", ReasonCode.OUT_OF_RANGE),
    (bar(low="-1", open_="0", close="0.5", high="1"), "open", ReasonCode.NON_POSITIVE_PRICE),
    (bar(volume="-5"), "volume", ReasonCode.NEGATIVE_VOLUME),
    (bar(high="9.0", low="9.5", open_="9.2", close="9.2"), "high", ReasonCode.HIGH_BELOW_LOW),
    (bar(open_="11.0"), "open", ReasonCode.OPEN_OUTSIDE_RANGE),
    (bar(close="9.0"), "close", ReasonCode.CLOSE_OUTSIDE_RANGE),
])
def test_bad_record_goes_to_dead_letter_with_payload_field_and_reason(conn, embedded_settings, record, field, code):
    good = minute_bars(3, symbol="BBB")
    report = ingest(conn, embedded_settings, good + [record])
    assert (report.read, report.inserted, report.rejected) == (4, 3, 1)
    assert report.reasons == {str(code): 1}
    [letter] = pending(conn, kind="price")
    assert (letter.field, letter.reason_code) == (field, str(code))
    assert letter.payload == {**{k: None for k in ("symbol", "ts", "open", "high", "low", "close", "volume")}, **record}
    assert field in letter.reason
    assert count(conn, "stg_prices") == 3


def test_reingesting_the_same_records_changes_nothing(conn, embedded_settings):
    records = minute_bars(60)
    ingest(conn, embedded_settings, records)
    before = conn.execute("SELECT * FROM indicator_history ORDER BY symbol, timeframe, bar_ts").fetchall()
    report = ingest(conn, embedded_settings, records)
    assert (report.inserted, report.duplicates, report.rejected) == (0, 60, 0)
    assert count(conn, "price_1m_history") == 60
    assert conn.execute("SELECT * FROM indicator_history ORDER BY symbol, timeframe, bar_ts").fetchall() == before


def test_duplicates_within_one_chunk_are_collapsed(conn, embedded_settings):
    records = minute_bars(5)
    report = ingest(conn, embedded_settings, records + records[:2])
    assert (report.inserted, report.duplicates) == (5, 2)


def test_conflicting_duplicate_is_rejected_not_overwritten(conn, embedded_settings):
    ingest(conn, embedded_settings, [bar(close="10.2")])
    report = ingest(conn, embedded_settings, [bar(close="10.4")])
    assert (report.inserted, report.rejected) == (0, 1)
    assert report.reasons == {"CONFLICTING_DUPLICATE": 1}
    assert float(conn.execute("SELECT close FROM stg_prices").fetchone()[0]) == pytest.approx(10.2)


def test_same_bad_file_twice_lists_each_dead_letter_once(conn, embedded_settings):
    ingest(conn, embedded_settings, [bar(close="ten")])
    ingest(conn, embedded_settings, [bar(close="ten")])
    assert len(pending(conn, kind="price")) == 1


def test_replay_after_fix_inserts_and_clears_the_dead_letter(conn, embedded_settings):
    ingest(conn, embedded_settings, [bar(close="ten"), bar(ts="2024-03-01T14:31:00Z", volume="-1")])
    [first, second] = sorted(pending(conn, kind="price"), key=lambda letter: letter.field)
    outcome = replay(conn, embedded_settings, kind="price", ids=[first.dlq_id], overrides={"close": "10.1"})
    assert outcome["inserted"] == 1
    assert [letter.dlq_id for letter in pending(conn, kind="price")] == [second.dlq_id]
    assert float(conn.execute("SELECT close FROM stg_prices").fetchone()[0]) == pytest.approx(10.1)
    # replaying the still-broken one keeps it pending and says why
    outcome = replay(conn, embedded_settings, kind="price")
    assert outcome["rejected"] == 1 and "NEGATIVE_VOLUME" in outcome["still_rejected"][0]["reason"]
    assert len(pending(conn, kind="price")) == 1


# -- the short way for live batches (plain_valid_bars): never looser than validate_bars ---------------------------

LIVE_TS = datetime(2024, 3, 1, 14, 30, tzinfo=timezone.utc)
PLAIN_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-2 ** 80, max_value=2 ** 80),
    st.sampled_from([0, 0.0, -0.0, 1e-12, 9.99e-13, 1e-28, 1e-29, 5e-324, 1e15, 1e15 - 1, True, False, None,
                     np.float32(1.5), np.int64(7), np.float32("nan"), "10", Decimal("10")]),
    st.floats(min_value=9.0, max_value=11.0))
PLAIN_STAMPS = st.one_of(
    st.sampled_from([LIVE_TS, LIVE_TS.replace(tzinfo=None), LIVE_TS + timedelta(seconds=1),
                     LIVE_TS + timedelta(microseconds=1), pd.Timestamp(LIVE_TS) + pd.Timedelta(1, "ns"),
                     pd.NaT, None, "2024-03-01T14:30:00Z", datetime(1, 1, 1), datetime(1969, 12, 31, 23, 59),
                     datetime(2200, 1, 1), datetime(2024, 3, 2, 14, 30, tzinfo=timezone.utc),
                     datetime(2024, 3, 1, 16, 30, tzinfo=timezone(timedelta(hours=2))), date(2024, 3, 1)]),
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2300, 1, 1), timezones=st.just(timezone.utc)))
PLAIN_SYMBOLS = st.one_of(st.sampled_from(["AAA", " BBB ", "", "   ", "A\x00B", "S" * 200, "\udc80", None, 7, b"AAA"]),
                          st.text(max_size=5))


def plain_record(draw) -> dict[str, object]:
    """A valid live bar with each field swapped, one time in six, for an edge value."""
    pools = {"symbol": PLAIN_SYMBOLS, "ts": PLAIN_STAMPS, **{name: PLAIN_NUMBERS for name in NUMERIC_FIELDS}}
    record = {"symbol": "AAA", "ts": LIVE_TS + timedelta(minutes=draw(st.integers(0, 3))), "open": 10.0,
              "high": 10.5, "low": 9.5, "close": 10.2, "volume": 1000}
    return {name: draw(pools[name]) if draw(st.integers(0, 5)) == 0 else value for name, value in record.items()}


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_live_batches_short_way_agrees_with_the_rules(data):
    """Whatever plain_valid_bars accepts, validate_bars accepts too, with the same typed values."""
    records = [plain_record(data.draw) for _ in range(data.draw(st.integers(1, 3)))]
    try:  # as a live feed builds it (types inferred), or as a file reader does (objects)
        raw = pd.DataFrame(records, dtype=object if data.draw(st.booleans()) else None)
    except UnicodeEncodeError:  # text pandas cannot infer as strings
        raw = pd.DataFrame(records, dtype=object)
    settings_ = Settings()
    rows = plain_valid_bars(raw, now=NOW, settings=settings_)
    valid, rejections = validate_bars(raw, now=NOW, settings=settings_)
    event("short way" if rows is not None else "full way")
    if rows is None:
        return
    assert rejections == []
    assert rows == list(zip(valid["symbol"], valid["ts"], *(valid[name] for name in NUMERIC_FIELDS)))


def test_a_plain_live_batch_takes_the_short_way():
    raw = pd.DataFrame([{"symbol": s, "ts": pd.Timestamp(LIVE_TS), "open": 10.0, "high": 10.5, "low": 9.5,
                         "close": 10.2, "volume": 1000} for s in ("AAA", "BBB")])
    assert plain_valid_bars(raw, now=NOW, settings=Settings()) == [
        (s, pd.Timestamp(LIVE_TS), 10.0, 10.5, 9.5, 10.2, 1000.0) for s in ("AAA", "BBB")]


@pytest.mark.parametrize(("second", "expected"), [
    # a new bar: the short way
    ({"ts": LIVE_TS + timedelta(minutes=1), "close": 10.3}, {"inserted": 1, "duplicates": 0, "rejected": 0}),
    # an exact re-send, a conflicting one, a bar older than the newest: the full way, as for files
    ({"ts": LIVE_TS, "close": 10.2}, {"inserted": 0, "duplicates": 1, "rejected": 0}),
    ({"ts": LIVE_TS, "close": 10.4}, {"inserted": 0, "duplicates": 0, "rejected": 1}),
    ({"ts": LIVE_TS - timedelta(minutes=1), "close": 10.1}, {"inserted": 1, "duplicates": 0, "rejected": 0}),
    # a bad record among good ones
    ({"ts": LIVE_TS + timedelta(minutes=1), "close": 12.0}, {"inserted": 0, "duplicates": 0, "rejected": 1}),
])
def test_live_batches_count_resends_conflicts_and_rejections(conn, embedded_settings, second, expected):
    ingester = PriceIngester(conn, embedded_settings, source="live", clock=lambda: NOW)
    first = {"symbol": "AAA", "ts": LIVE_TS, "open": 10.0, "high": 10.5, "low": 9.5, "close": 10.2, "volume": 1000.0}
    ingester.ingest_frame(pd.DataFrame([first]))
    report = ingester.ingest_frame(pd.DataFrame([{**first, **second}]))
    assert {k: report.as_dict()[k] for k in expected} == expected
    assert count(conn, "price_1m_history") == 1 + expected["inserted"]
    assert len(pending(conn, kind="price")) == expected["rejected"]
