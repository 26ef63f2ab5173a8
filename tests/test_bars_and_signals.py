"""Multi-timeframe bars and strategy signals on the embedded engine,
checked against straightforward pandas recomputations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ingest.prices import PriceIngester
from ingest.synthetic import generate_bars

TIMEFRAME_MINUTES = {"5m": 5, "15m": 15, "1h": 60}


@pytest.fixture(scope="module")
def loaded(engine_settings):
    from tradeflow import engine

    with engine.connect(engine_settings) as conn:
        conn.execute("TRUNCATE price_1m_history, dead_letter, dead_letter_replay")
        bars = pd.concat(list(generate_bars(symbols=4, days=3, seed=3)), ignore_index=True)
        # drop the last 7 minutes of one symbol: its last 5m, 15m and 1h buckets stay open
        cut = (bars.symbol == bars.symbol.iloc[0]) & (bars.ts >= bars.ts.max() - pd.Timedelta(minutes=6))
        bars = bars[~cut]
        PriceIngester(conn, engine_settings, source="test").ingest([bars])

        def frame(query: str) -> pd.DataFrame:
            cur = conn.execute(query)
            return pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])

        yield {
            "bars": bars,
            "multi": frame("SELECT * FROM int_bars_multi_timeframe ORDER BY symbol, timeframe, bar_ts"),
            "indicators": frame("SELECT * FROM indicator_history ORDER BY symbol, timeframe, bar_ts"),
            "signals": frame("SELECT * FROM strategy_signal_history"),
            "latest": frame("SELECT * FROM indicator_latest"),
            "config": frame("SELECT * FROM strategy_config"),
        }


@pytest.mark.parametrize("timeframe", TIMEFRAME_MINUTES)
def test_higher_timeframes_aggregate_minute_bars(loaded, timeframe):
    minutes = TIMEFRAME_MINUTES[timeframe]
    bars = loaded["bars"].copy()
    bars["bucket"] = bars.ts.dt.floor(f"{minutes}min")
    expected = bars.sort_values("ts").groupby(["symbol", "bucket"]).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), minutes=("ts", "size")).reset_index()
    ours = loaded["multi"][loaded["multi"].timeframe == timeframe].reset_index(drop=True)
    assert len(ours) == len(expected)
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(ours[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-12)


def test_bucket_is_final_when_complete_or_overtaken(loaded):
    multi = loaded["multi"]
    last_bar = loaded["bars"].groupby("symbol").ts.max()
    for timeframe, minutes in TIMEFRAME_MINUTES.items():
        rows = multi[multi.timeframe == timeframe]
        for row in rows.itertuples():
            bucket_end = pd.Timestamp(row.bar_ts) + pd.Timedelta(minutes=minutes)
            complete = len(loaded["bars"][(loaded["bars"].symbol == row.symbol)
                                          & (loaded["bars"].ts >= row.bar_ts) & (loaded["bars"].ts < bucket_end)]) == minutes
            assert row.final == (complete or last_bar[row.symbol] >= bucket_end), row
    truncated = loaded["bars"].symbol.iloc[0]
    open_buckets = multi[(multi.symbol == truncated) & ~multi.final]
    assert set(open_buckets.timeframe) == {"5m", "15m", "1h"}


def test_indicator_latest_is_the_last_bar_per_series(loaded):
    last = loaded["indicators"].groupby(["symbol", "timeframe"]).bar_ts.max()
    latest = loaded["latest"].set_index(["symbol", "timeframe"]).bar_ts
    assert latest.sort_index().equals(last.sort_index())


def crossover(series: pd.DataFrame, fast: str, slow: str) -> pd.DataFrame:
    spread = series[fast] - series[slow]
    prev = spread.shift(1)
    action = np.select([(prev <= 0) & (spread > 0), (prev >= 0) & (spread < 0)], ["BUY", "SELL"], None)
    return series.assign(action=action)[lambda d: d.action.notna()]


def rsi_threshold(series: pd.DataFrame, lower: float, upper: float) -> pd.DataFrame:
    rsi, prev = series.rsi_14, series.rsi_14.shift(1)
    action = np.select([(prev < lower) & (rsi >= lower), (prev > upper) & (rsi <= upper)], ["BUY", "SELL"], None)
    return series.assign(action=action)[lambda d: d.action.notna()]


def green_candles(series: pd.DataFrame, count: int) -> pd.DataFrame:
    green = (series.close > series.open).astype(int)
    red = (series.close < series.open).astype(int)
    greens, reds = green.rolling(count).sum(), red.rolling(count).sum()
    action = np.select([(greens == count) & (green.shift(count) == 0), (reds == count) & (red.shift(count) == 0)],
                       ["BUY", "SELL"], None)
    return series.assign(action=action)[lambda d: d.action.notna()]


def momentum(series: pd.DataFrame, lookback: int, threshold: float) -> pd.DataFrame:
    roc = series.close / series.close.shift(lookback) - 1
    prev = roc.shift(1)
    action = np.select([(prev <= threshold) & (roc > threshold), (prev >= -threshold) & (roc < -threshold)],
                       ["BUY", "SELL"], None)
    return series.assign(action=action)[lambda d: d.action.notna()]


RULES = {
    "sma_crossover": lambda s, p: crossover(s, f"sma_{p['fast']}", f"sma_{p['slow']}"),
    "ma_50_200": lambda s, p: crossover(s, f"sma_{p['fast']}", f"sma_{p['slow']}"),
    "rsi_threshold": lambda s, p: rsi_threshold(s, p["lower"], p["upper"]),
    "green_candles": lambda s, p: green_candles(s, p["count"]),
    "momentum": lambda s, p: momentum(s, p["lookback"], p["threshold"]),
}


@pytest.mark.parametrize("strategy_id", RULES)
def test_strategy_signals_match_a_pandas_recomputation(loaded, strategy_id):
    config = loaded["config"].set_index("strategy_id").loc[strategy_id]
    indicators = loaded["indicators"]
    final_bars = indicators[(indicators.timeframe == config.timeframe) & indicators.final]
    expected = pd.concat([RULES[strategy_id](series.reset_index(drop=True), config.params)
                          for _, series in final_bars.groupby("symbol")])
    ours = loaded["signals"][loaded["signals"].strategy_id == strategy_id]
    key = lambda d, ts: sorted(zip(d.symbol, pd.to_datetime(d[ts], utc=True), d.action))  # noqa: E731
    assert key(ours, "signal_ts") == key(expected, "bar_ts")
    assert (ours.params_hash == config.params_hash).all()
    assert (ours.strategy_version == config.strategy_version).all()


def test_every_strategy_fires_on_this_data(loaded):
    assert set(loaded["signals"].strategy_id) == set(RULES)


def test_signals_come_only_from_final_bars(loaded):
    final = loaded["indicators"][loaded["indicators"].final]
    keys = set(zip(final.symbol, final.timeframe, final.bar_ts))
    assert all(k in keys for k in zip(loaded["signals"].symbol, loaded["signals"].timeframe, loaded["signals"].signal_ts))


def test_signal_ids_are_unique_and_deterministic(loaded):
    ids = loaded["signals"].signal_id
    assert ids.is_unique
    row = loaded["signals"].iloc[0]
    assert row.signal_id == f"{row.strategy_id}:{row.symbol}:{row.timeframe}:{int(pd.Timestamp(row.signal_ts).timestamp())}"
