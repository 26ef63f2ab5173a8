"""Performance metrics (tradeflow.research.performance): agreement with empyrical on the same daily returns, hand-worked
golden cases for the trade and fill metrics, drawdown duration, exposure and the time-zone bucketing. No database."""
from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal as D

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradeflow.research import performance as perf

empyrical = pytest.importorskip("empyrical")

REL = 1e-9


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def equity_frame(points) -> pd.DataFrame:
    return pd.DataFrame({"ts": [utc(t) for t, _ in points], "equity": [v for _, v in points]})


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


# --------------------------------------------------------------------------- agreement with empyrical


def random_returns(seed: int, mu: float, sigma: float, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(mu, sigma, n)


def trending(n: int = 260) -> np.ndarray:
    return 0.002 + 0.0015 * np.sin(np.arange(n) / 3.0)


def long_drawdown(n: int = 400) -> np.ndarray:
    noise = np.random.default_rng(11).normal(0, 0.004, n)
    drift = np.concatenate([np.full(n // 4, 0.003), np.full(n // 2, -0.0025), np.full(n - n // 4 - n // 2, 0.001)])
    return drift + noise


SERIES = {
    "seed1": random_returns(1, 0.0005, 0.01, 300),
    "seed2-volatile": random_returns(2, 0.0002, 0.03, 500),
    "seed3-short": random_returns(3, -0.001, 0.02, 25),
    "trending": trending(),
    "long-drawdown": long_drawdown(),
}


def intraday_equity(returns: np.ndarray, initial: float, as_decimal: bool = False) -> pd.DataFrame:
    """Equity sampled three times a business day (Oslo 09:00, 12:00 and 23:30 local, the last one being the
    day's close), so that only the last sample of each local day matters."""
    closes = initial * np.cumprod(1 + returns)
    prev = np.concatenate([[initial], closes[:-1]])
    days = pd.bdate_range("2023-01-02", periods=len(returns))
    rows = []
    for d, p, c in zip(days, prev, closes, strict=True):
        local = pd.Timestamp(d).tz_localize("Europe/Oslo")
        rows.append((local + pd.Timedelta(hours=9), p * 1.013))
        rows.append((local + pd.Timedelta(hours=12), (p + c) / 2))
        rows.append((local + pd.Timedelta(hours=23, minutes=30), c))
    ts = pd.DatetimeIndex([t for t, _ in rows]).tz_convert("UTC")
    values = [D(repr(float(v))) if as_decimal else v for _, v in rows]
    # rows shuffled: the function sorts by time
    order = np.random.default_rng(0).permutation(len(rows))
    return pd.DataFrame({"ts": ts[order], "equity": [values[i] for i in order]})


def close(actual: float, expected: float, rel: float = REL) -> bool:
    return actual == pytest.approx(expected, rel=rel, abs=1e-12)


@pytest.mark.parametrize("name", list(SERIES))
@pytest.mark.parametrize("risk_free", [0.0, 0.03])
@pytest.mark.parametrize("periods_per_year", [252, 365])
def test_agrees_with_empyrical(name, risk_free, periods_per_year):
    returns = SERIES[name]
    equity = intraday_equity(returns, 250_000.0)
    m = perf.compute_metrics(equity, initial_equity=250_000, risk_free=risk_free, periods_per_year=periods_per_year)

    daily = perf.daily_returns(equity, initial_equity=250_000).to_numpy()
    np.testing.assert_allclose(daily, returns, rtol=0, atol=1e-13)
    rf = (1 + risk_free) ** (1 / periods_per_year) - 1
    ann = periods_per_year

    assert m.days == len(returns)
    assert close(m.total_return, empyrical.cum_returns_final(daily))
    assert close(m.cagr, empyrical.annual_return(daily, annualization=ann))
    assert close(m.cagr, empyrical.cagr(daily, annualization=ann))
    assert close(m.annual_volatility, empyrical.annual_volatility(daily, annualization=ann))
    assert close(m.sharpe, empyrical.sharpe_ratio(daily, risk_free=rf, annualization=ann))
    assert close(m.sortino, empyrical.sortino_ratio(daily, required_return=rf, annualization=ann))
    assert close(m.max_drawdown, empyrical.max_drawdown(daily))
    # and on the original returns (the equity round trip costs nothing measurable)
    assert close(m.sharpe, empyrical.sharpe_ratio(returns, risk_free=rf, annualization=ann), rel=1e-8)
    assert close(m.max_drawdown, empyrical.max_drawdown(returns), rel=1e-8)


@pytest.mark.parametrize("name", ["seed1", "long-drawdown"])
def test_decimal_equity_and_series_input_agree(name):
    returns = SERIES[name]
    as_float = perf.compute_metrics(intraday_equity(returns, 1e5), initial_equity=1e5)
    as_decimal = perf.compute_metrics(intraday_equity(returns, 1e5, as_decimal=True), initial_equity=D(100000))
    frame = intraday_equity(returns, 1e5)
    as_series = perf.compute_metrics(pd.Series(frame["equity"].to_numpy(), index=pd.DatetimeIndex(frame["ts"])),
                                     initial_equity=1e5)
    for other in (as_decimal, as_series):
        for field in ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "max_drawdown"):
            assert close(getattr(other, field), getattr(as_float, field)), field


# --------------------------------------------------------------------------- return-metric edge cases


def daily_points(values, start="2024-01-01"):
    """One sample a day at 12:00 UTC (13:00 in Oslo)."""
    days = pd.date_range(start, periods=len(values), freq="D", tz="UTC") + pd.Timedelta(hours=12)
    return pd.DataFrame({"ts": days, "equity": values})


def test_zero_volatility():
    # constant positive return: no dispersion, no downside
    m = perf.compute_metrics(daily_points([101.0, 102.01, 103.0301]), initial_equity=100)
    assert m.annual_volatility == 0.0
    assert math.isnan(m.sharpe)  # empyrical says +inf here; we say undefined
    assert m.sortino == math.inf
    assert m.max_drawdown == 0.0 and m.max_drawdown_duration == 0.0
    flat = perf.compute_metrics(daily_points([100.0, 100.0, 100.0]), initial_equity=100)
    assert flat.total_return == 0.0 and flat.cagr == 0.0 and flat.annual_volatility == 0.0
    assert math.isnan(flat.sharpe) and math.isnan(flat.sortino)


def test_one_day_and_no_data():
    one = perf.compute_metrics(daily_points([110.0]), initial_equity=100)
    assert one.days == 1
    assert one.total_return == pytest.approx(0.1)
    assert one.cagr == pytest.approx(1.1 ** 252 - 1)
    assert math.isnan(one.annual_volatility) and math.isnan(one.sharpe) and math.isnan(one.sortino)
    assert one.max_drawdown == 0.0
    none = perf.compute_metrics(None)
    assert none.days == 0 and none.start is None
    for field in ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "max_drawdown",
                  "max_drawdown_duration", "exposure_time", "turnover", "fees_paid", "win_rate"):
        assert math.isnan(getattr(none, field)), field
    empty = perf.compute_metrics(daily_points([]))
    assert empty.days == 0 and math.isnan(empty.total_return)


def test_ruin():
    m = perf.compute_metrics(daily_points([50.0, 0.0, 10.0]), initial_equity=100)
    returns = perf.daily_returns(daily_points([50.0, 0.0, 10.0]), initial_equity=100)
    assert returns.iloc[:2].tolist() == [-0.5, -1.0] and math.isnan(returns.iloc[2])
    assert m.total_return == pytest.approx(-0.9)
    assert m.max_drawdown == -1.0
    assert math.isnan(m.sharpe) and math.isnan(m.annual_volatility)
    gone = perf.compute_metrics(daily_points([50.0, 0.0]), initial_equity=100)
    assert gone.cagr == -1.0


def test_refusals():
    naive = pd.DataFrame({"ts": pd.date_range("2024-01-01", periods=2), "equity": [1.0, 2.0]})
    with pytest.raises(TypeError, match="tz-aware"):
        perf.daily_returns(naive)
    two_accounts = daily_points([1.0, 2.0]).assign(account_id=["A", "B"])
    with pytest.raises(ValueError, match="metrics_by"):
        perf.compute_metrics(two_accounts)
    with pytest.raises(ValueError, match="positive"):
        perf.daily_returns(daily_points([1.0]), initial_equity=0)


# --------------------------------------------------------------------------- drawdown duration


@pytest.mark.parametrize("closes, expected_dd, expected_days", [
    # peak 110 on day 1, trough 99 on day 2, back above 110 on day 4: 3 days
    ([110, 99, 105, 111, 120], -0.1, 3.0),
    # never recovered: from the peak (day 1) to the last day (day 5)
    ([110, 99, 105, 100, 104], -0.1, 4.0),
    # a loss on the first day: the initial equity (day 0, the day before the first) is the peak
    ([90, 95, 101], -0.1, 3.0),
    # equal peaks: the drawdown starts at the last of them (day 3)
    ([110, 104, 110, 99, 110], -0.1, 2.0),
    # the deepest drawdown (days 6..8, -20%) counts, not the longest (days 1..5, -5%)
    ([100, 95, 96, 97, 98, 101, 80.8, 102, 103], -0.2, 2.0),
])
def test_max_drawdown_and_duration(closes, expected_dd, expected_days):
    m = perf.compute_metrics(daily_points([float(c) for c in closes]), initial_equity=100)
    assert m.max_drawdown == pytest.approx(expected_dd)
    assert m.max_drawdown_duration == expected_days
    assert close(m.max_drawdown, empyrical.max_drawdown(perf.daily_returns(daily_points(closes), initial_equity=100)))


def test_drawdown_duration_counts_calendar_days():
    # Fri peak, Mon trough, Wed recovery: 5 calendar days, 3 daily returns apart
    equity = equity_frame([("2024-03-01T12:00Z", 110.0), ("2024-03-04T12:00Z", 99.0),
                           ("2024-03-05T12:00Z", 105.0), ("2024-03-06T12:00Z", 112.0)])
    m = perf.compute_metrics(equity, initial_equity=100)
    assert m.days == 4
    assert m.max_drawdown_duration == 5.0


# --------------------------------------------------------------------------- time-zone bucketing


def test_fill_at_2330_utc_is_next_oslo_day_in_winter():
    ts = pd.Series([utc("2024-01-15T22:59Z"), utc("2024-01-15T23:00Z"), utc("2024-01-15T23:30Z")])
    assert perf.local_day(ts).tolist() == [day("2024-01-15"), day("2024-01-16"), day("2024-01-16")]
    assert perf.local_day(ts, "UTC").tolist() == [day("2024-01-15")] * 3
    # in summer (UTC+2) the day changes at 22:00 UTC
    summer = pd.Series([utc("2024-07-01T21:59Z"), utc("2024-07-01T22:00Z")])
    assert perf.local_day(summer).tolist() == [day("2024-07-01"), day("2024-07-02")]


@pytest.mark.parametrize("samples, expected_days", [
    # spring forward 2024-03-31 (23-hour day): 23:00 UTC Mar 30 is 00:00 CET Mar 31, 22:00 UTC Mar 31 is
    # 00:00 CEST Apr 1
    (["2024-03-30T22:59Z", "2024-03-30T23:00Z", "2024-03-31T21:59Z", "2024-03-31T22:00Z"],
     ["2024-03-30", "2024-03-31", "2024-03-31", "2024-04-01"]),
    # fall back 2024-10-27 (25-hour day): 22:00 UTC Oct 26 is 00:00 CEST Oct 27, 23:00 UTC Oct 27 is 00:00 CET Oct 28
    (["2024-10-26T21:59Z", "2024-10-26T22:00Z", "2024-10-27T00:30Z", "2024-10-27T01:30Z", "2024-10-27T22:59Z",
      "2024-10-27T23:00Z"],
     ["2024-10-26", "2024-10-27", "2024-10-27", "2024-10-27", "2024-10-27", "2024-10-28"]),
])
def test_dst_switch_days(samples, expected_days):
    assert perf.local_day(pd.Series([utc(s) for s in samples])).tolist() == [day(d) for d in expected_days]


def test_daily_returns_bucket_in_oslo():
    equity = equity_frame([
        ("2024-01-15T10:00Z", 101.0),
        ("2024-01-15T22:00Z", 102.0),   # 23:00 Oslo: Monday's close
        ("2024-01-15T23:30Z", 99.96),   # 00:30 Oslo Tuesday
        ("2024-01-16T12:00Z", 104.04),  # Tuesday's close
    ])
    oslo = perf.daily_returns(equity, initial_equity=100)
    assert oslo.index.tolist() == [day("2024-01-15"), day("2024-01-16")]
    assert oslo.tolist() == pytest.approx([0.02, 0.02])
    in_utc = perf.daily_returns(equity, tz="UTC", initial_equity=100)
    assert in_utc.tolist() == pytest.approx([-0.0004, 104.04 / 99.96 - 1])
    closes = perf.daily_equity(equity, initial_equity=100)
    assert closes.index.tolist() == [day("2024-01-14"), day("2024-01-15"), day("2024-01-16")]
    assert closes.tolist() == [100.0, 102.0, 104.04]
    # no initial equity: the first sample is the anchor
    assert perf.daily_returns(equity).tolist() == pytest.approx([102 / 101 - 1, 0.02])


def test_daily_returns_on_dst_day():
    equity = equity_frame([("2024-03-30T22:59Z", 100.0), ("2024-03-30T23:00Z", 50.0),
                           ("2024-03-31T21:59Z", 110.0), ("2024-03-31T22:00Z", 121.0)])
    r = perf.daily_returns(equity, initial_equity=100)
    assert r.index.tolist() == [day("2024-03-30"), day("2024-03-31"), day("2024-04-01")]
    assert r.tolist() == pytest.approx([0.0, 0.1, 0.1])


# --------------------------------------------------------------------------- trades


def trades_frame(pnls, strategy="S1", account="A"):
    rows = []
    for i, pnl in enumerate(pnls):
        pnl = D(str(pnl))
        rows.append({"match_id": f"b{i}:1|s{i}:1", "account_id": account, "strategy_id": strategy, "symbol": "X",
                     "closed_side": "LONG", "matched_qty": D(1), "buy_price": D(100),
                     "sell_price": D(100) + pnl + D("0.5"), "realized_pnl_gross": pnl + D("0.5"),
                     "fee_share": D("0.5"), "realized_pnl": pnl, "match_ts": utc("2024-01-02T10:00Z")})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("pnls, expected", [
    # 2 wins (10, 20), 2 losses (-5, -15), 1 breakeven: counted as a trade, neither a win nor a loss
    ([10, -5, 0, 20, -15], {"trades": 5, "win_rate": 0.4, "profit_factor": 1.5, "avg_win": 15.0, "avg_loss": -10.0,
                            "realized_pnl": 10.0}),
    (["0.25", "1.75"], {"trades": 2, "win_rate": 1.0, "profit_factor": math.inf, "avg_win": 1.0,
                        "avg_loss": math.nan, "realized_pnl": 2.0}),
    ([-1, -3], {"trades": 2, "win_rate": 0.0, "profit_factor": 0.0, "avg_win": math.nan, "avg_loss": -2.0,
                "realized_pnl": -4.0}),
    ([0, 0], {"trades": 2, "win_rate": 0.0, "profit_factor": math.nan, "avg_win": math.nan, "avg_loss": math.nan,
              "realized_pnl": 0.0}),
    ([], {"trades": 0, "win_rate": math.nan, "profit_factor": math.nan, "avg_win": math.nan, "avg_loss": math.nan,
          "realized_pnl": 0.0}),
])
def test_trade_stats(pnls, expected):
    stats = perf.trade_stats(trades_frame(pnls))
    for key, value in expected.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(stats[key]), key
        else:
            assert stats[key] == pytest.approx(value), key
    m = perf.compute_metrics(None, trades_frame(pnls))
    assert m.trades == expected["trades"]


# --------------------------------------------------------------------------- fills: fees, turnover, exposure


def fills_frame(rows, account="A", strategy="S1"):
    return pd.DataFrame([{"ts": utc(ts), "account_id": account, "strategy_id": strategy, "symbol": sym, "side": side,
                          "qty": D(str(qty)), "price": D(str(price)), "fee": D(str(fee))}
                         for ts, sym, side, qty, price, fee in rows])


DAY_FILLS = [
    ("2024-01-02T09:00Z", "X", "BUY", 10, 100, "1"),
    ("2024-01-02T11:00Z", "X", "SELL", 10, 110, "1.1"),
    ("2024-01-02T14:00Z", "Y", "SELL", 5, 40, "0.2"),    # short Y from 14:00 ...
    ("2024-01-02T16:00Z", "X", "BUY", 3, 100, "0.3"),    # ... overlapping X from 16:00
    ("2024-01-02T17:00Z", "Y", "BUY", 5, 38, "0.19"),    # Y flat at 17:00, X still open at the end
]


def test_fees_turnover_exposure_golden():
    fills = fills_frame(DAY_FILLS)
    equity = equity_frame([("2024-01-02T08:00Z", 1000.0), ("2024-01-02T18:00Z", 1100.0),
                           ("2024-01-03T08:00Z", 1000.0)])
    m = perf.compute_metrics(equity, fills=fills, initial_equity=1000)
    assert m.fees_paid == pytest.approx(1 + 1.1 + 0.2 + 0.3 + 0.19)
    # notional 1000 + 1100 + 200 + 300 + 190 = 2790 over the average daily close (1100 + 1000) / 2
    assert m.turnover == pytest.approx(2790 / 1050)
    # window 08:00 Jan 2 .. 08:00 Jan 3 (24 h); open 09:00-11:00 and 14:00-end: 2 h + 18 h
    assert m.exposure_time == pytest.approx(20 / 24)


def test_position_intervals_flip_and_keys():
    fills = fills_frame([
        ("2024-01-02T09:00Z", "X", "BUY", 10, 100, 0),
        ("2024-01-02T10:00Z", "X", "SELL", 15, 100, 0),  # flips to short 5: still open
        ("2024-01-02T11:00Z", "X", "BUY", 5, 100, 0),    # flat
    ])
    other = fills_frame([("2024-01-02T09:30Z", "X", "SELL", 1, 100, 0), ("2024-01-02T12:00Z", "X", "BUY", 1, 100, 0)],
                        account="B")
    intervals = perf.position_intervals(pd.concat([fills, other], ignore_index=True))
    assert list(intervals.itertuples(index=False, name=None)) == [
        (utc("2024-01-02T09:00Z"), utc("2024-01-02T11:00Z")),
        (utc("2024-01-02T09:30Z"), utc("2024-01-02T12:00Z")),
    ]
    # union 09:00-12:00 of the 08:00-14:00 window
    assert perf.exposure_time(intervals, utc("2024-01-02T08:00Z"), utc("2024-01-02T14:00Z")) == pytest.approx(0.5)


def test_position_intervals_signed_float_qty():
    fills = pd.DataFrame({"ts": [utc("2024-01-02T09:00Z"), utc("2024-01-02T10:00Z"), utc("2024-01-02T11:00Z")],
                          "symbol": ["X"] * 3, "qty": [0.1, 0.2, -0.3], "price": [1.0] * 3, "fee": [0.0] * 3})
    intervals = perf.position_intervals(fills)
    assert list(intervals.itertuples(index=False, name=None)) == [(utc("2024-01-02T09:00Z"), utc("2024-01-02T11:00Z"))]


def test_exposure_inputs():
    start, end = utc("2024-01-02T00:00Z"), utc("2024-01-02T10:00Z")
    intervals = pd.DataFrame({"open_ts": [utc("2023-12-31T00:00Z"), utc("2024-01-02T05:00Z"), utc("2024-01-02T06:00Z")],
                              "close_ts": [utc("2024-01-02T01:00Z"), utc("2024-01-02T07:00Z"), pd.NaT]})
    # 00:00-01:00 (clipped) and 05:00-end (overlap counted once)
    assert perf.exposure_time(intervals, start, end) == pytest.approx(0.6)
    flags = pd.DataFrame({"ts": [utc(f"2024-01-02T{h:02d}:00Z") for h in (0, 2, 3, 8)],
                          "in_market": [True, False, True, True]})
    # 00-02 and 03-10
    assert perf.exposure_time(flags, start, end) == pytest.approx(0.9)
    assert perf.exposure_time(intervals.iloc[:0], start, end) == 0.0
    assert math.isnan(perf.exposure_time(intervals, start, start))
    m = perf.compute_metrics(daily_points([1.0, 1.0]), exposure=flags,
                             window=(start, end), initial_equity=1)
    assert m.exposure_time == pytest.approx(0.9)


def test_exec_report_rows_map_to_fills():
    reports = pd.DataFrame({"account_id": ["A"], "strategy_id": ["S"], "symbol": ["X"], "order_id": ["o"],
                            "fill_id": ["1"], "side": ["SELL"], "fill_qty": [D(2)], "fill_price": [D(10)],
                            "fee": [D("0.1")], "exec_ts": [utc("2024-01-02T09:00Z")]})
    fills = perf.fills_from_exec_reports(reports)
    assert list(fills.columns) == ["ts", "account_id", "strategy_id", "symbol", "side", "qty", "price", "fee"]
    m = perf.compute_metrics(None, fills=fills)
    assert m.fees_paid == pytest.approx(0.1) and math.isnan(m.turnover)


# --------------------------------------------------------------------------- per account / strategy / run


def test_combine_equity():
    equity = pd.DataFrame({
        "account_id": ["A", "A", "B", "B"],
        "ts": [utc("2024-01-02T09:00Z"), utc("2024-01-02T11:00Z"), utc("2024-01-02T10:00Z"), utc("2024-01-02T12:00Z")],
        "equity": [D(101), D(103), D(49), D(52)],
    })
    combined = perf.combine_equity(equity, "account_id", {"A": 100, "B": 50})
    assert combined["equity"].tolist() == [151.0, 150.0, 152.0, 155.0]
    assert combined.attrs["initial_equity"] == 150.0
    first_samples = perf.combine_equity(equity, "account_id")
    assert first_samples["equity"].tolist() == [150.0, 150.0, 152.0, 155.0]


def test_metrics_by_account_and_strategy():
    a = daily_points([110.0, 99.0, 121.0]).assign(account_id="A")
    b = daily_points([55.0, 60.5]).assign(account_id="B")
    equity = pd.concat([a, b], ignore_index=True)
    trades = pd.concat([trades_frame([10, -5], strategy="S1", account="A"),
                        trades_frame([4], strategy="S2", account="B")], ignore_index=True)
    fills = pd.concat([fills_frame(DAY_FILLS, account="A", strategy="S1"),
                       fills_frame(DAY_FILLS[:2], account="B", strategy="S2")], ignore_index=True)
    initial = {"A": 100, "B": 50}

    by_account = perf.metrics_by("account_id", equity, trades, fills, initial_equity=initial)
    assert by_account.index.tolist() == ["A", "B", perf.RUN_LABEL]
    assert list(by_account.columns) == list(perf.Metrics.__dataclass_fields__)
    alone = perf.compute_metrics(a, trades[trades.account_id == "A"], fills[fills.account_id == "A"],
                                 initial_equity=100)
    row = by_account.loc["A"]
    for field, value in alone.as_dict().items():
        assert row[field] == value or (isinstance(value, float) and math.isnan(value) and math.isnan(row[field]))
    assert by_account.loc["A", "total_return"] == pytest.approx(0.21)
    assert by_account.loc["B", "total_return"] == pytest.approx(0.21)
    run = by_account.loc[perf.RUN_LABEL]
    # run equity: A + B on the union of days; B stays 60.5 on day 3
    assert run["initial_equity"] == 150.0
    assert run["final_equity"] == pytest.approx(181.5)
    assert run["total_return"] == pytest.approx(0.21)
    assert run["max_drawdown"] == pytest.approx((99 + 60.5) / 165 - 1)
    assert run["trades"] == 3 and run["win_rate"] == pytest.approx(2 / 3)
    assert run["fees_paid"] == pytest.approx(2.79 + 2.1)

    # strategies: the equity has no strategy_id, so return metrics are NaN per strategy; the run row still has them
    by_strategy = perf.metrics_by("strategy_id", equity, trades, fills, initial_equity=initial)
    assert by_strategy.index.tolist() == ["S1", "S2", perf.RUN_LABEL]
    assert math.isnan(by_strategy.loc["S1", "sharpe"]) and math.isnan(by_strategy.loc["S1", "turnover"])
    assert by_strategy.loc["S1", "trades"] == 2 and by_strategy.loc["S1", "profit_factor"] == pytest.approx(2.0)
    assert by_strategy.loc["S2", "fees_paid"] == pytest.approx(2.1)
    # exposure of a strategy without equity is measured over the run's span
    assert by_strategy.loc["S2", "exposure_time"] == pytest.approx(2 / (2 * 24))
    assert by_strategy.loc[perf.RUN_LABEL, "total_return"] == pytest.approx(0.21)


def test_equity_from_pnl_timeseries():
    rows = pd.DataFrame({"account_id": ["A", "A"], "bar_ts": [utc("2024-01-02T09:00Z"), utc("2024-01-02T09:01Z")],
                         "cash": [D(50), D(50)], "market_value": [D(50), D(51)],
                         "equity": [D(100), D(101)]})
    equity = perf.equity_from_pnl_timeseries(rows)
    assert equity["equity"].dtype == "float64"
    m = perf.compute_metrics(equity, initial_equity=D(100))
    assert m.total_return == pytest.approx(0.01)


def test_datetimes_with_mixed_offsets():
    # what a database session in a DST zone returns: datetime objects with +01:00 and +02:00 offsets
    cet, cest = dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=2))
    equity = pd.DataFrame({"ts": [dt.datetime(2024, 3, 30, 23, 30, tzinfo=cet),
                                  dt.datetime(2024, 4, 1, 0, 30, tzinfo=cest)],
                           "equity": [D(110), D(121)]})
    r = perf.daily_returns(equity, initial_equity=100)
    assert r.index.tolist() == [day("2024-03-30"), day("2024-04-01")]
    assert r.tolist() == pytest.approx([0.1, 0.1])
    strings = pd.DataFrame({"ts": ["2024-01-15T23:30:00Z", "2024-01-16T12:00:00+01:00"], "equity": [1.0, 2.0]})
    assert perf.daily_returns(strings).index.tolist() == [day("2024-01-16")]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_alpha_and_beta_agree_with_empyrical(seed):
    rng = np.random.default_rng(seed)
    days = pd.date_range("2024-01-02", periods=60, freq="B")
    benchmark = pd.Series(rng.normal(0.0005, 0.01, 60), index=days)
    returns = 0.7 * benchmark + pd.Series(rng.normal(0.0002, 0.004, 60), index=days)
    alpha, beta = perf.alpha_beta(returns.iloc[1:], benchmark)  # aligned on the common days
    expected = empyrical.alpha_beta(returns.iloc[1:], benchmark.iloc[1:])
    assert alpha == pytest.approx(expected[0], rel=1e-9) and beta == pytest.approx(expected[1], rel=1e-9)
    assert all(math.isnan(v) for v in perf.alpha_beta(returns, benchmark * 0))  # a flat benchmark


def test_buy_and_hold_splits_the_money_evenly_at_each_first_close():
    ts = pd.date_range("2024-01-02 14:30", periods=3, freq="min", tz="UTC")
    bars = pd.DataFrame({"symbol": ["A", "A", "A", "B", "B"], "ts": [*ts, ts[1], ts[2]],
                         "close": [10.0, 11.0, 12.0, 50.0, 25.0]})
    out = perf.buy_and_hold(bars, 1000.0)
    # A: 50 shares from 10; B: 500 in cash until its first bar, then 10 shares from 50
    assert out.equity.tolist() == [1000.0, 550 + 500, 600 + 250]
    assert out.ts.tolist() == list(ts)


def _intervals_step_by_step(fills: pd.DataFrame) -> list[tuple]:
    """The definition, one fill at a time: per (account, symbol) in time order, an
    interval opens when the position leaves zero and closes when it is back."""
    out = []
    for _, group in fills.sort_values("ts", kind="stable").groupby(["account_id", "symbol"], sort=False):
        position, opened = D(0), None
        for ts, side, qty in zip(group.ts, group.side, group.qty):
            position += qty if side == "BUY" else -qty
            if opened is None and position != 0:
                opened = ts
            elif opened is not None and position == 0:
                out.append((opened, ts))
                opened = None
        if opened is not None:
            out.append((opened, None))
    return sorted(out, key=lambda row: (row[0], row[1] is None, row[1] or row[0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.sampled_from("AB"), st.sampled_from("XY"),
                          st.sampled_from(["BUY", "SELL"]), st.integers(1, 3)), min_size=1, max_size=40),
       st.booleans())
def test_position_intervals_match_the_step_by_step_definition(rows, as_float):
    fills = pd.DataFrame(rows, columns=["minute", "account_id", "symbol", "side", "qty"])
    fills["ts"] = pd.Timestamp("2024-01-02", tz="UTC") + pd.to_timedelta(fills.pop("minute"), unit="min")
    expected = _intervals_step_by_step(fills.assign(qty=fills.qty.map(D)))
    given_fills = fills.assign(qty=fills.qty * 0.1) if as_float else fills.assign(qty=fills.qty.map(D))
    got = perf.position_intervals(given_fills)
    assert [(a, b if pd.notna(b) else None) for a, b in zip(got.open_ts, got.close_ts)] == expected
