"""Market sessions per symbol, from exchange_calendars (holidays, early closes,
daylight saving): when each symbol's market is open, and when the session an
instant falls in (or the next one) closes.

Which calendar a symbol trades on:
  TRADEFLOW_SYMBOL_CALENDARS   per-symbol overrides, "SYMBOL=CALENDAR,..."
                               (e.g. "SAP=XETR,ES=CMES,ETH-USD=24/7")
  a symbol with a "/"          "24/7": crypto pairs (BTC/USDT) trade around the clock
  TRADEFLOW_DEFAULT_CALENDAR   every other symbol; default XNYS (New York Stock Exchange)
Calendar names are exchange_calendars' (`exchange_calendars.get_calendar_names()`);
"24/7" sessions run midnight to midnight UTC. Lunch breaks are not modelled: a
session is open from its open to its close.

The calendars cover 1990 to about a year ahead; an instant outside that range is
treated as in an always-open market whose sessions end at midnight UTC.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Mapping

import numpy as np

ALWAYS_OPEN = "24/7"
DEFAULT_CALENDAR = "XNYS"
FIRST_SESSION = "1990-01-01"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


class CalendarError(ValueError):
    """An unknown calendar name or a malformed TRADEFLOW_SYMBOL_CALENDARS; the message names it."""


@dataclass(frozen=True)
class Sessions:
    """One calendar's session opens and closes, as sorted UTC nanosecond arrays."""
    name: str
    opens: np.ndarray
    closes: np.ndarray

    def _index(self, at: datetime) -> int | None:
        """The session `at` is in, or the next one; None outside the calendar's range."""
        ns = _ns(at)
        i = int(np.searchsorted(self.closes, ns, side="right"))
        if i == len(self.closes) or ns < self.opens[0]:
            return None
        return i

    def is_open(self, at: datetime) -> bool:
        i = self._index(at)
        return True if i is None else bool(self.opens[i] <= _ns(at))

    def session_open(self, at: datetime) -> datetime:
        """The open of the session `at` is in (or of the next one when the market is closed)."""
        i = self._index(at)
        return _midnight(at) if i is None else _dt(self.opens[i])

    def session_close(self, at: datetime) -> datetime:
        """The close of the session `at` is in (or of the next one when the market is closed)."""
        i = self._index(at)
        return _midnight(at) + timedelta(days=1) if i is None else _dt(self.closes[i])


@lru_cache(maxsize=None)
def sessions(name: str) -> Sessions:
    import exchange_calendars  # a second or two to import: only where a session is asked for

    try:
        with warnings.catch_warnings():  # its own deprecation warnings from pandas: not ours to act on
            warnings.simplefilter("ignore")
            schedule = exchange_calendars.get_calendar(name, start=FIRST_SESSION).schedule
    except exchange_calendars.errors.InvalidCalendarName:
        raise CalendarError(f"calendar {name!r}: not an exchange_calendars name (e.g. XNYS, XLON, 24/7)") from None
    return Sessions(name, schedule["open"].to_numpy(dtype="datetime64[ns]").astype(np.int64),
                    schedule["close"].to_numpy(dtype="datetime64[ns]").astype(np.int64))


@dataclass(frozen=True)
class SymbolCalendars:
    """Which calendar each symbol trades on (see the module docstring)."""
    default: str = DEFAULT_CALENDAR
    overrides: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SymbolCalendars:
        env = os.environ if environ is None else environ
        overrides = {}
        for item in filter(None, (part.strip() for part in env.get("TRADEFLOW_SYMBOL_CALENDARS", "").split(","))):
            symbol, sep, name = item.partition("=")
            if not sep or not symbol.strip() or not name.strip():
                raise CalendarError(f"TRADEFLOW_SYMBOL_CALENDARS: {item!r} is not SYMBOL=CALENDAR")
            overrides[symbol.strip()] = name.strip()
        return cls(env.get("TRADEFLOW_DEFAULT_CALENDAR") or DEFAULT_CALENDAR, overrides)

    def name(self, symbol: str) -> str:
        if symbol in self.overrides:
            return self.overrides[symbol]
        return ALWAYS_OPEN if "/" in symbol else self.default

    def of(self, symbol: str) -> Sessions:
        return sessions(self.name(symbol))


def _ns(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError(f"{at}: a session instant needs a time zone")
    return (at - EPOCH) // MICROSECOND * 1000


def _dt(ns: np.int64) -> datetime:
    return EPOCH + int(ns) // 1000 * MICROSECOND


def _midnight(at: datetime) -> datetime:
    return datetime.combine(at.astimezone(UTC).date(), datetime.min.time(), UTC)


__all__ = ["ALWAYS_OPEN", "CalendarError", "Sessions", "SymbolCalendars", "sessions"]
