from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from ingest.synthetic import BARS_PER_DAY, generate_bars, symbol_names

COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return pd.concat(generate_bars(symbols=12, days=5, seed=11), ignore_index=True)


def test_columns_and_dtypes(bars: pd.DataFrame) -> None:
    assert list(bars.columns) == COLUMNS
    assert pd.api.types.is_string_dtype(bars["symbol"])
    assert bars["ts"].dtype == "datetime64[ns, UTC]"
    for name in COLUMNS[2:]:
        assert bars[name].dtype == np.float64
    assert len(bars) == 12 * 5 * BARS_PER_DAY


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_same_arguments_same_bars(seed: int) -> None:
    first = list(generate_bars(5, 3, seed))
    second = list(generate_bars(5, 3, seed))
    assert len(first) == 3
    for a, b in zip(first, second):
        pd.testing.assert_frame_equal(a, b)


def test_seed_changes_bars() -> None:
    a, b = next(generate_bars(5, 1, seed=1)), next(generate_bars(5, 1, seed=2))
    assert not np.array_equal(a["close"].to_numpy(), b["close"].to_numpy())


@pytest.mark.parametrize(("short", "long"), [(1, 2), (3, 10)])
def test_longer_run_repeats_shorter_run(short: int, long: int) -> None:
    shorter = list(generate_bars(7, short, seed=3))
    longer = list(generate_bars(7, long, seed=3))
    assert len(longer) == long
    for a, b in zip(shorter, longer):
        pd.testing.assert_frame_equal(a, b)


def test_sorted_by_ts_then_symbol(bars: pd.DataFrame) -> None:
    keys = list(zip(bars["ts"], bars["symbol"]))
    assert keys == sorted(keys)
    assert not bars.duplicated(["symbol", "ts"]).any()


def test_ohlc_invariants(bars: pd.DataFrame) -> None:
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["low"] > 0).all()
    assert (bars["volume"] >= 1).all()
    assert (bars["volume"] == np.round(bars["volume"])).all()


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
def test_prices_on_the_tick(bars: pd.DataFrame, column: str) -> None:
    cents = bars[column].to_numpy() * 100
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)


def test_session_hours_and_weekdays(bars: pd.DataFrame) -> None:
    ts = bars["ts"]
    assert (ts.dt.second == 0).all()
    minutes = ts.dt.hour * 60 + ts.dt.minute
    assert minutes.min() == 14 * 60 + 30 and minutes.max() == 20 * 60 + 59
    per_day = bars.groupby([ts.dt.date, "symbol"]).size()
    assert (per_day == BARS_PER_DAY).all()
    assert (ts.dt.day_of_week < 5).all()


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (None, [dt.date(2024, 1, 2), dt.date(2024, 1, 3), dt.date(2024, 1, 4)]),
        (dt.date(2024, 1, 5), [dt.date(2024, 1, 5), dt.date(2024, 1, 8), dt.date(2024, 1, 9)]),  # Fri, Mon, Tue
        (dt.date(2024, 1, 6), [dt.date(2024, 1, 8), dt.date(2024, 1, 9), dt.date(2024, 1, 10)]),  # starts on a Sat
    ],
)
def test_one_frame_per_weekday(start: dt.date | None, expected: list[dt.date]) -> None:
    days = [frame["ts"].dt.date.unique().tolist() for frame in generate_bars(2, 3, seed=0, start=start)]
    assert days == [[d] for d in expected]


def test_base_prices_in_range() -> None:
    first_open = next(generate_bars(200, 1, seed=5)).groupby("symbol")["open"].first()
    assert first_open.between(5, 700).all()  # 10..500 plus one overnight gap
    assert first_open.min() < 30 and first_open.max() > 200


def test_returns_correlated_across_symbols(bars: pd.DataFrame) -> None:
    closes = bars.pivot(index="ts", columns="symbol", values="close")
    returns = np.log(closes).diff().dropna()
    corr = returns.corr().to_numpy()
    pairwise = corr[~np.eye(len(corr), dtype=bool)]
    assert 0.25 <= pairwise.mean() <= 0.6
    assert (pairwise > 0).all()


def test_u_shaped_volume_and_volatility(bars: pd.DataFrame) -> None:
    minute = (bars["ts"].dt.hour * 60 + bars["ts"].dt.minute - (14 * 60 + 30)).rename("minute")
    volume = bars.groupby(minute)["volume"].mean()
    midday, edges = volume.iloc[150:240].mean(), (volume.iloc[:15].mean(), volume.iloc[-15:].mean())
    assert min(edges) > 1.5 * midday

    relative_range = ((bars["high"] - bars["low"]) / bars["close"]).groupby(minute).mean()
    assert relative_range.iloc[:15].mean() > 1.3 * relative_range.iloc[150:240].mean()


def test_overnight_gaps() -> None:
    days = list(generate_bars(20, 2, seed=9))
    last_close = days[0].groupby("symbol")["close"].last()
    next_open = days[1].groupby("symbol")["open"].first()
    assert (next_open != last_close).sum() >= 15


@pytest.mark.parametrize("n", [1, 10, 1000, 10_000])
def test_symbol_names_unique_and_sorted(n: int) -> None:
    names = symbol_names(n)
    assert len(set(names)) == n
    assert names == sorted(names)
    assert symbol_names(n)[: min(n, 5)] == symbol_names(5)[: min(n, 5)]
