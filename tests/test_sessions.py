"""Market sessions per symbol against exchange_calendars' published schedules:
holidays, early closes and daylight saving come from the calendar, not from us."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tradeflow.ops.sessions import CalendarError, SymbolCalendars


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("at, is_open, opens, closes", [
    ("2024-01-02T15:00", True, "2024-01-02T14:30", "2024-01-02T21:00"),   # winter: 9:30-16:00 New York
    ("2024-01-02T14:00", False, "2024-01-02T14:30", "2024-01-02T21:00"),  # before the open: today's session
    ("2024-03-11T13:45", True, "2024-03-11T13:30", "2024-03-11T20:00"),   # daylight saving time
    ("2024-07-03T17:30", False, "2024-07-05T13:30", "2024-07-05T20:00"),  # early close at 13:00, then a holiday
    ("2024-01-06T12:00", False, "2024-01-08T14:30", "2024-01-08T21:00"),  # Saturday
])
def test_new_york_sessions(at, is_open, opens, closes):
    market = SymbolCalendars().of("AAPL")
    assert (market.is_open(utc(at)), market.session_open(utc(at)), market.session_close(utc(at))) == (
        is_open, utc(opens), utc(closes))


def test_crypto_pairs_trade_around_the_clock_and_overrides_win():
    calendars = SymbolCalendars.from_env({"TRADEFLOW_SYMBOL_CALENDARS": "SAP=XETR, ETHUSD=24/7",
                                          "TRADEFLOW_DEFAULT_CALENDAR": "XLON"})
    assert [calendars.name(s) for s in ("BTC/USDT", "ETHUSD", "SAP", "VOD")] == ["24/7", "24/7", "XETR", "XLON"]
    saturday = utc("2024-01-06T12:00")
    assert calendars.of("BTC/USDT").is_open(saturday)
    assert calendars.of("BTC/USDT").session_close(saturday) == utc("2024-01-07T00:00")
    assert calendars.of("SAP").session_open(utc("2024-01-02T07:00")) == utc("2024-01-02T08:00")  # Xetra 9:00 CET


@pytest.mark.parametrize("env, match", [
    ({"TRADEFLOW_SYMBOL_CALENDARS": "AAPL"}, "not SYMBOL=CALENDAR"),
    ({"TRADEFLOW_DEFAULT_CALENDAR": "NOPE"}, "'NOPE': not an exchange_calendars name"),
])
def test_bad_calendar_settings_are_named(env, match):
    with pytest.raises(CalendarError, match=match):
        SymbolCalendars.from_env(env).of("AAPL")
