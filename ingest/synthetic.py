"""Deterministic synthetic 1-minute OHLCV bars for demos, tests and benchmarks.

The model, per trading day (weekdays from ``start``; exchange holidays are ignored):

* 390 one-minute bars per symbol, 14:30-21:00 UTC, ``ts`` = minute start.
* Log returns follow one market factor plus a fat-tailed (Student t, 5 dof)
  idiosyncratic part; each symbol's factor loading gives pairwise return
  correlations of roughly 0.3-0.6.
* Volatility and volume follow an intraday U shape (busy open and close);
  volume also rises with the size of the bar's move.
* Each day opens with an overnight gap drawn from the same factor structure.
* Prices are rounded to a 0.01 tick, never below one tick; volume is a
  positive whole number of shares.

Output depends only on ``(symbols, seed, start)`` and the day index: days are
drawn one after another from one seeded ``numpy.random.Generator``, each
consuming a fixed number of draws, so a longer run repeats a shorter one's days.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd

DEFAULT_START = dt.date(2024, 1, 2)
SESSION_OPEN = dt.time(14, 30)
BARS_PER_DAY = 390
TICK = 0.01

_MINUTES_PER_YEAR = 252 * BARS_PER_DAY
_T_DOF = 5  # Student t tails; scaled by sqrt((dof - 2) / dof) to unit variance


def symbol_names(n: int) -> list[str]:
    """``SYM0000``, ``SYM0001``, ...: unique, and sorted in index order (zero
    padding widens past 10,000 names so that stays true)."""
    width = max(4, len(str(n - 1)))
    return [f"SYM{i:0{width}d}" for i in range(n)]


def trading_days(start: dt.date, days: int) -> Iterator[dt.date]:
    day = start
    while days > 0:
        if day.weekday() < 5:
            yield day
            days -= 1
        day += dt.timedelta(days=1)


def _u_shape(open_weight: float, open_decay: float, close_weight: float, close_decay: float) -> np.ndarray:
    t = np.arange(BARS_PER_DAY)
    return 1 + open_weight * np.exp(-t / open_decay) + close_weight * np.exp(-(BARS_PER_DAY - 1 - t) / close_decay)


# Volatility peaks at the open, volume at the close (closing auction flows).
_VOL_SHAPE = _u_shape(2.0, 15, 0.8, 20)
_VOL_SHAPE /= np.sqrt(np.mean(_VOL_SHAPE**2))  # keeps each symbol's annual volatility as drawn
_VOLUME_SHAPE = _u_shape(2.5, 20, 3.0, 15)
_VOLUME_SHAPE /= _VOLUME_SHAPE.mean()


def _to_tick(prices: np.ndarray) -> np.ndarray:
    return np.maximum(np.round(prices, 2), TICK)


def generate_bars(
    symbols: int, days: int, seed: int, start: dt.date | None = None
) -> Iterator[pd.DataFrame]:
    """One DataFrame per trading day: ``symbol, ts, open, high, low, close,
    volume``, sorted by ts then symbol."""
    rng = np.random.default_rng(seed)
    names = np.array(symbol_names(symbols), dtype=object)

    # Per-symbol parameters, drawn once so every day shares them.
    log_price = rng.uniform(np.log(10), np.log(500), symbols)  # base prices log-uniform in 10..500
    annual_vol = rng.uniform(0.15, 0.6, symbols)
    loading = rng.uniform(np.sqrt(0.3), np.sqrt(0.6), symbols)  # corr(i, j) = loading_i * loading_j
    idio = np.sqrt(1 - loading**2)
    minute_vol = annual_vol / np.sqrt(_MINUTES_PER_YEAR)
    minute_drift = (rng.uniform(-0.05, 0.15, symbols) - annual_vol**2 / 2) / _MINUTES_PER_YEAR
    gap_vol = 0.4 * annual_vol / np.sqrt(252)  # overnight moves are smaller than a session's
    daily_volume = np.exp(rng.uniform(np.log(2e5), np.log(2e7), symbols))  # shares

    shape = (BARS_PER_DAY, symbols)
    bar_vol = _VOL_SHAPE[:, None] * minute_vol
    bar_volume = _VOLUME_SHAPE[:, None] * daily_volume / BARS_PER_DAY
    t_scale = np.sqrt((_T_DOF - 2) / _T_DOF)
    offsets = np.arange(BARS_PER_DAY) * np.timedelta64(60, "s")

    for day in trading_days(start or DEFAULT_START, days):
        gap = gap_vol * (loading * rng.standard_normal() + idio * rng.standard_normal(symbols))
        shocks = loading * rng.standard_normal((BARS_PER_DAY, 1)) + idio * t_scale * rng.standard_t(_T_DOF, shape)
        log_close = log_price + gap + np.cumsum(minute_drift + bar_vol * shocks, axis=0)
        log_open = np.vstack([log_price + gap, log_close[:-1]])
        log_price = log_close[-1]  # carried unrounded so ticks do not bias the walk

        # Wicks beyond the body. Rounding is monotone, so high >= max(open, close) and low <= min(open, close).
        upper = np.maximum(log_open, log_close) + 0.5 * bar_vol * np.abs(rng.standard_normal(shape))
        lower = np.minimum(log_open, log_close) - 0.5 * bar_vol * np.abs(rng.standard_normal(shape))
        # Busy days, noise and bigger moves trade more; each factor has mean ~1.
        activity = rng.lognormal(-0.045, 0.3, symbols) * rng.lognormal(-0.125, 0.5, shape)
        volume = bar_volume * activity * (0.5 + 0.625 * np.abs(shocks))

        session_open = np.datetime64(dt.datetime.combine(day, SESSION_OPEN), "ns")
        yield pd.DataFrame(
            {
                "symbol": np.tile(names, BARS_PER_DAY),
                "ts": pd.DatetimeIndex(np.repeat(session_open + offsets, symbols), tz="UTC"),
                "open": _to_tick(np.exp(log_open)).ravel(),
                "high": _to_tick(np.exp(upper)).ravel(),
                "low": _to_tick(np.exp(lower)).ravel(),
                "close": _to_tick(np.exp(log_close)).ravel(),
                "volume": np.maximum(np.rint(volume), 1).ravel(),
            }
        )
