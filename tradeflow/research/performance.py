"""Performance metrics of a backtest or a live run, from dataframes (pure pandas/numpy, no database access).

Definitions, annualisation and edge cases: docs/performance-metrics.md.

Input contract
--------------
``equity``
    A mark-to-market equity series: columns ``ts`` (tz-aware timestamps; naive ones are refused) and ``equity``
    (float, int or ``decimal.Decimal``), one row per bar or per fill, in any order. A pandas Series indexed by a
    tz-aware DatetimeIndex is accepted too. It may carry a key column (``account_id`` / ``strategy_id``), but
    :func:`daily_returns` and :func:`compute_metrics` take one series: a frame whose key column holds several
    values is refused (use :func:`metrics_by` or :func:`combine_equity`). In the product it is the view
    ``pnl_timeseries(account_id, bar_ts, cash, market_value, equity)``: :func:`equity_from_pnl_timeseries` renames
    ``bar_ts`` to ``ts`` (the equity at the close of the bar that starts at ``bar_ts``; the bar belongs to the local
    day in which it starts).
``trades``
    Rows of the view ``trades`` (round trips) or ``trade_match_history``: match_id, account_id, strategy_id, symbol, closed_side
    ('LONG'/'SHORT'), matched_qty, buy_price, sell_price, realized_pnl_gross, fee_share, realized_pnl (net of fees),
    match_ts. Only ``realized_pnl`` is required (plus the key column for :func:`metrics_by`). NUMERIC columns may
    arrive as ``decimal.Decimal``: they are converted to float. One row is one trade: in the product a round
    trip (rows of the view ``trades``: a position cycle from flat to flat, net ``realized_pnl``), not a FIFO
    match segment.
``fills``
    Executions: columns ``ts``, ``symbol``, ``qty``, ``price``, ``fee``, optionally ``side`` ('BUY'/'SELL') and the
    key columns ``account_id`` / ``strategy_id``. Without ``side`` a negative ``qty`` is a sell. Notional is
    ``|qty| * price``. :func:`fills_from_exec_reports` maps ``exec_report_history`` / ``stg_execs`` rows
    (exec_ts, fill_qty, fill_price) to this shape. Fills give turnover, fees paid and, when no ``exposure`` is
    passed, the exposure time (positions are rebuilt per (account_id, strategy_id, symbol) from them).
``exposure`` (optional)
    Either intervals with a position open, columns ``open_ts`` and ``close_ts`` (NaT: still open at the end of the
    window), or flags per sample, columns ``ts`` and ``in_market`` (bool-ish: the state holds from its sample to the
    next one, the last one to the end of the window). Overlapping intervals count once.

Public functions
----------------
:func:`daily_returns`, :func:`daily_equity`, :func:`local_day`, :func:`compute_metrics`, :func:`metrics_by`,
:func:`trade_stats`, :func:`position_intervals`, :func:`exposure_time`, :func:`combine_equity`,
:func:`equity_from_pnl_timeseries`, :func:`fills_from_exec_reports`, :func:`buy_and_hold`, :func:`alpha_beta`;
the :class:`Metrics` dataclass.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_TZ = "Europe/Oslo"
PERIODS_PER_YEAR = 252
KEY_COLUMNS = ("account_id", "strategy_id")
RUN_LABEL = "(run)"

__all__ = [
    "DEFAULT_TZ", "METRIC_FIELDS", "PERIODS_PER_YEAR", "RUN_LABEL", "Metrics", "alpha_beta", "buy_and_hold",
    "combine_equity", "compute_metrics", "daily_equity",
    "daily_returns", "drawdown", "equity_from_pnl_timeseries", "exposure_time", "fills_from_exec_reports", "local_day",
    "metrics_by", "position_intervals", "trade_stats",
]


@dataclass(frozen=True, slots=True)
class Metrics:
    """Metrics of one equity series and its trades and fills. NaN marks an undefined value (see the docs)."""

    start: pd.Timestamp | None  # first equity sample (UTC)
    end: pd.Timestamp | None  # last equity sample (UTC)
    days: int  # number of daily returns (local calendar days with an equity sample)
    initial_equity: float
    final_equity: float
    total_return: float
    cagr: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float  # negative fraction (0.0 with no drawdown)
    max_drawdown_duration: float  # calendar days, peak to recovery or to the last day
    trades: int
    win_rate: float
    profit_factor: float
    avg_win: float
    avg_loss: float  # negative
    realized_pnl: float  # sum of trades' realized_pnl (net of fees)
    exposure_time: float  # fraction of [start, end] with a position open
    turnover: float  # traded notional / average daily closing equity
    fees_paid: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


METRIC_FIELDS = tuple(f.name for f in fields(Metrics))


# --------------------------------------------------------------------------- conversions


def _floats(values: Any) -> pd.Series:
    """A numeric float64 series from floats, ints or Decimals (None -> NaN)."""
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if series.dtype == object:
        series = series.map(lambda v: np.nan if v is None else float(v))
    return series.astype("float64")


def _utc(values: Any, what: str) -> pd.Series:
    ts = values if isinstance(values, pd.Series) else pd.Series(values)
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        first = ts.dropna().iloc[0] if ts.notna().any() else None
        aware = getattr(first, "tzinfo", None) is not None or (isinstance(first, str) and _has_offset(first))
        # mixed UTC offsets (rows from a database session in a DST zone) need utc=True
        ts = pd.to_datetime(ts, utc=True) if aware else pd.to_datetime(ts)
        if not isinstance(ts.dtype, pd.DatetimeTZDtype):
            raise TypeError(f"{what} must be tz-aware timestamps (got {ts.dtype})")
    return ts.dt.tz_convert("UTC")


def _has_offset(text: str) -> bool:
    stamp = pd.Timestamp(text)
    return stamp.tzinfo is not None


def _scalar(value: Any) -> float:
    return float(value) if value is not None else math.nan


def equity_from_pnl_timeseries(frame: pd.DataFrame) -> pd.DataFrame:
    """``pnl_timeseries`` rows -> the equity contract (``bar_ts`` -> ``ts``, equity as float)."""
    out = frame.rename(columns={"bar_ts": "ts"}).copy()
    out["equity"] = _floats(out["equity"]).to_numpy()
    return out


def fills_from_exec_reports(frame: pd.DataFrame) -> pd.DataFrame:
    """``exec_report_history`` / ``stg_execs`` rows -> the fills contract (ts, qty, price, fee, side, keys)."""
    out = frame.rename(columns={"exec_ts": "ts", "fill_qty": "qty", "fill_price": "price"})
    keep = [c for c in ("ts", *KEY_COLUMNS, "symbol", "side", "qty", "price", "fee") if c in out.columns]
    return out[keep].copy()


def _equity_frame(equity: pd.DataFrame | pd.Series) -> pd.DataFrame:
    """Validated equity samples: columns ts (UTC), equity (float), sorted by ts (stable: a later row wins a tie)."""
    if isinstance(equity, pd.Series):
        if not isinstance(equity.index, pd.DatetimeIndex):
            raise TypeError("an equity Series must be indexed by timestamps")
        frame = pd.DataFrame({"ts": equity.index, "equity": equity.to_numpy()})
    else:
        missing = {"ts", "equity"} - set(equity.columns)
        if missing:
            raise ValueError(f"equity needs columns ts and equity (missing {sorted(missing)})")
        for key in KEY_COLUMNS:
            if key in equity.columns and equity[key].nunique(dropna=False) > 1:
                raise ValueError(f"equity holds several {key} values: use metrics_by() or combine_equity()")
        frame = equity[["ts", "equity"]]
    out = pd.DataFrame({"ts": _utc(frame["ts"].reset_index(drop=True), "equity.ts"),
                        "equity": _floats(frame["equity"].reset_index(drop=True))})
    return out.sort_values("ts", kind="stable", ignore_index=True)


# --------------------------------------------------------------------------- daily bucketing


def local_day(ts: Any, tz: str = DEFAULT_TZ) -> pd.Series:
    """The local calendar day of each tz-aware timestamp, as a naive midnight Timestamp (23:30 UTC on a winter
    evening is the next day in Oslo; DST switch days are 23 or 25 hours long)."""
    utc = _utc(ts if isinstance(ts, pd.Series) else pd.Series(ts), "ts")
    return utc.dt.tz_convert(tz).dt.tz_localize(None).dt.normalize()


def daily_equity(equity: pd.DataFrame | pd.Series, tz: str = DEFAULT_TZ,
                 initial_equity: float | Decimal | None = None) -> pd.Series:
    """Closing equity per local calendar day, preceded by the initial equity labelled with the day before the
    first one (the anchor). ``initial_equity`` None: the first sample is the anchor."""
    frame = _equity_frame(equity)
    if frame.empty:
        return pd.Series(dtype="float64", index=pd.DatetimeIndex([], name="day"), name="equity")
    anchor = float(frame["equity"].iloc[0]) if initial_equity is None else float(initial_equity)
    if not anchor > 0:
        raise ValueError(f"initial equity must be positive (got {anchor})")
    days = local_day(frame["ts"], tz)
    closes = frame["equity"].groupby(days.to_numpy()).last()
    first = closes.index[0] - pd.Timedelta(days=1)
    out = pd.concat([pd.Series([anchor], index=[first]), closes])
    out.index = pd.DatetimeIndex(out.index, name="day")
    out.name = "equity"
    return out


def _returns_from_closes(closes: pd.Series) -> pd.Series:
    prev = closes.shift(1).iloc[1:]
    cur = closes.iloc[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(prev.to_numpy() > 0, cur.to_numpy() / prev.to_numpy() - 1.0, np.nan)
    return pd.Series(ret, index=cur.index, name="return")


def daily_returns(equity: pd.DataFrame | pd.Series, tz: str = DEFAULT_TZ,
                  initial_equity: float | Decimal | None = None) -> pd.Series:
    """Simple return per local calendar day: last equity of the day / previous day's close - 1, the first day
    against ``initial_equity`` (None: the first sample). Days without a sample are absent (the next return is
    against the last close seen). A return after a close <= 0 is NaN. Index: naive local-midnight Timestamps."""
    return _returns_from_closes(daily_equity(equity, tz, initial_equity))


# --------------------------------------------------------------------------- return-based metrics


def _per_period_rate(annual_rate: float, periods_per_year: float) -> float:
    return (1.0 + annual_rate) ** (1.0 / periods_per_year) - 1.0


def _constant(values: np.ndarray) -> bool:
    return bool(values.max() == values.min())


def _sharpe(returns: np.ndarray, rf: float, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    excess = returns - rf
    if np.isnan(excess).any() or _constant(excess):
        return math.nan
    return float(excess.mean() / excess.std(ddof=1) * math.sqrt(periods_per_year))


def _sortino(returns: np.ndarray, target: float, periods_per_year: float) -> float:
    if len(returns) < 2:
        return math.nan
    excess = returns - target
    if np.isnan(excess).any():
        return math.nan
    mean = excess.mean() * periods_per_year
    downside = math.sqrt(float(np.mean(np.square(np.minimum(excess, 0.0))))) * math.sqrt(periods_per_year)
    if downside == 0.0:
        return math.inf if mean > 0 else math.nan
    return float(mean / downside)


def _annual_volatility(returns: np.ndarray, periods_per_year: float) -> float:
    if len(returns) < 2 or np.isnan(returns).any():
        return math.nan
    if _constant(returns):
        return 0.0
    return float(returns.std(ddof=1) * math.sqrt(periods_per_year))


def _cagr(growth: float, periods: int, periods_per_year: float) -> float:
    if periods < 1 or math.isnan(growth) or growth < 0:
        return math.nan
    if growth == 0:
        return -1.0
    return growth ** (periods_per_year / periods) - 1.0


def drawdown(equity: pd.Series) -> pd.Series:
    """Fraction below the running peak (0 at a new high, negative below it)."""
    peak = equity.cummax()
    return (equity / peak - 1).where(peak > 0, 0.0)


def _drawdown(closes: pd.Series) -> tuple[float, float]:
    """(max drawdown as a negative fraction, its duration in calendar days from the peak to the recovery, or to
    the last day when not recovered). The anchor counts as a peak."""
    values = closes.to_numpy(dtype="float64")
    if len(values) < 2:
        return math.nan, math.nan
    peaks = np.maximum.accumulate(values)
    dd = drawdown(closes.astype("float64")).to_numpy()
    trough = int(np.argmin(dd))
    depth = float(dd[trough])
    if not depth < 0:
        return 0.0, 0.0
    peak_value = peaks[trough]
    peak = int(np.flatnonzero(values[: trough + 1] == peak_value)[-1])
    recovered = np.flatnonzero(values[trough + 1:] >= peak_value)
    end = trough + 1 + int(recovered[0]) if len(recovered) else len(values) - 1
    days = closes.index[end] - closes.index[peak]
    return depth, float(days / pd.Timedelta(days=1))


# --------------------------------------------------------------------------- trades, fills, exposure


def trade_stats(trades: pd.DataFrame | None) -> dict[str, float | int]:
    """Trade count, win rate, profit factor, average win and loss and the realized P&L sum from
    ``trade_match_history`` rows (net ``realized_pnl``; a zero P&L trade is neither a win nor a loss but counts in
    the win-rate denominator). No trades: win_rate, profit_factor, avg_win, avg_loss NaN, realized_pnl 0."""
    if trades is None:
        return {"trades": 0, "win_rate": math.nan, "profit_factor": math.nan, "avg_win": math.nan,
                "avg_loss": math.nan, "realized_pnl": math.nan}
    pnl = _floats(trades["realized_pnl"].reset_index(drop=True)).to_numpy() if len(trades) else np.array([])
    n = len(pnl)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    if gross_loss > 0:
        profit_factor = gross_win / gross_loss
    else:
        profit_factor = math.inf if gross_win > 0 else math.nan
    return {
        "trades": n,
        "win_rate": len(wins) / n if n else math.nan,
        "profit_factor": profit_factor,
        "avg_win": float(wins.mean()) if len(wins) else math.nan,
        "avg_loss": float(losses.mean()) if len(losses) else math.nan,
        "realized_pnl": float(pnl.sum()),
    }


def _signed_qty(fills: pd.DataFrame) -> pd.Series:
    """Quantities signed by side (BUY +, SELL -); Decimals stay Decimals (an object Series)."""
    qty = fills["qty"].reset_index(drop=True)
    if "side" not in fills.columns:
        return qty
    side = fills["side"].reset_index(drop=True).astype(str).str.upper()
    unknown = ~side.isin(("BUY", "SELL"))
    if unknown.any():
        raise ValueError(f"fill side must be BUY or SELL (got {fills['side'].iloc[int(np.argmax(unknown))]!r})")
    magnitude = qty.map(abs) if qty.dtype == object else qty.abs()
    return magnitude.where(side == "BUY", -magnitude)


def position_intervals(fills: pd.DataFrame) -> pd.DataFrame:
    """Intervals (open_ts, close_ts) during which a position is open, per (account_id, strategy_id, symbol) — the
    key columns present — rebuilt from fills in (ts, row) order. A flip keeps the interval open; a position still
    open has close_ts NaT. Decimal and integer quantities are summed exactly; float ones are flat within 1e-9 of the
    largest fill of their key. Running sums per key, not a Python step per fill (a backtest has 100,000s)."""
    columns = ["open_ts", "close_ts"]
    if fills is None or fills.empty:
        return pd.DataFrame({c: pd.Series(dtype="datetime64[ns, UTC]") for c in columns})
    frame = pd.DataFrame({"ts": _utc(fills["ts"].reset_index(drop=True), "fills.ts"), "signed": _signed_qty(fills)})
    keys = [c for c in (*KEY_COLUMNS, "symbol") if c in fills.columns]
    for key in keys:
        frame[key] = fills[key].reset_index(drop=True)
    # by key, then time; ties keep the rows' order
    frame = frame.sort_values([*keys, "ts"], kind="stable", ignore_index=True) if keys else \
        frame.sort_values("ts", kind="stable", ignore_index=True)
    group = frame.groupby(keys, sort=False, dropna=False).ngroup().to_numpy() if keys else np.zeros(len(frame), int)
    signed = frame["signed"]
    exact = pd.api.types.is_integer_dtype(signed) or (
        signed.dtype == object and all(isinstance(q, (Decimal, int, np.integer)) for q in signed))
    if exact:
        # exact running sums per key (Decimals: Python addition, one pass)
        totals: dict[int, Any] = {}
        flat = np.empty(len(frame), dtype=bool)
        for i, (g, q) in enumerate(zip(group, signed.tolist())):
            totals[g] = totals.get(g, 0) + q
            flat[i] = totals[g] == 0
    else:
        values = signed.astype("float64")
        position = values.groupby(group).cumsum().to_numpy()
        tolerance = 1e-9 * values.abs().groupby(group).transform("max").to_numpy()
        flat = np.abs(position) <= tolerance
    first_of_key = np.r_[True, group[1:] != group[:-1]]
    was_flat = np.r_[True, flat[:-1]] | first_of_key
    opens = np.flatnonzero(was_flat & ~flat)
    closes = np.flatnonzero(~was_flat & flat)
    # within a key opens and closes alternate: an open's close is the next close, if of its key
    after = np.searchsorted(closes, opens)
    has_close = after < len(closes)
    has_close[has_close] &= group[closes[after[has_close]]] == group[opens[has_close]]
    ts = frame["ts"]
    # taken as Series: to_numpy() makes an object array of Timestamps from tz-aware times
    close_at = closes[np.minimum(after, len(closes) - 1)] if len(closes) else np.zeros(len(opens), dtype=int)
    out = pd.DataFrame({
        "open_ts": ts.iloc[opens].reset_index(drop=True),
        "close_ts": ts.iloc[close_at].reset_index(drop=True).where(has_close),
    })
    for c in columns:
        out[c] = pd.to_datetime(out[c], utc=True)
    return out.sort_values(columns, ignore_index=True)


def _intervals_from_flags(flags: pd.DataFrame, end: pd.Timestamp) -> pd.DataFrame:
    frame = pd.DataFrame({"ts": _utc(flags["ts"].reset_index(drop=True), "exposure.ts"),
                          "in_market": flags["in_market"].reset_index(drop=True).fillna(False).astype(bool)})
    frame = frame.sort_values("ts", kind="stable", ignore_index=True)
    nxt = frame["ts"].shift(-1)
    nxt = nxt.where(nxt.notna(), max(end, frame["ts"].iloc[-1]) if len(frame) else end)
    sel = frame["in_market"].to_numpy()
    return pd.DataFrame({"open_ts": frame["ts"][sel].to_numpy(), "close_ts": nxt[sel].to_numpy()})


def exposure_time(exposure: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> float:
    """Fraction of [start, end] covered by the union of the open intervals (``open_ts``/``close_ts``; NaT close =
    open to the end) or by the ``ts``/``in_market`` flags. NaN when end <= start."""
    start, end = pd.Timestamp(start), pd.Timestamp(end)
    if not end > start:
        return math.nan
    if "in_market" in exposure.columns:
        exposure = _intervals_from_flags(exposure, end)
    if exposure.empty:
        return 0.0
    opens = _utc(exposure["open_ts"].reset_index(drop=True), "exposure.open_ts")
    closes = pd.to_datetime(exposure["close_ts"].reset_index(drop=True), utc=True).fillna(end)
    # epoch nanoseconds; the union as blocks of overlapping intervals in start order
    lo = opens.clip(lower=start, upper=end).dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    hi = closes.clip(lower=start, upper=end).dt.tz_convert("UTC").dt.tz_localize(None).to_numpy("datetime64[ns]")
    lo, hi = lo.view("i8"), hi.view("i8")
    keep = hi > lo
    order = np.argsort(lo[keep], kind="stable")
    lo, hi = lo[keep][order], hi[keep][order]
    if not len(lo):
        return 0.0
    starts = np.flatnonzero(np.r_[True, lo[1:] > np.maximum.accumulate(hi)[:-1]])
    covered = int((np.maximum.reduceat(hi, starts) - lo[starts]).sum())
    return float(pd.Timedelta(covered, unit="ns") / (end - start))


def _fill_totals(fills: pd.DataFrame | None) -> tuple[float, float]:
    """(traded notional sum |qty| * price, fees sum); NaN, NaN without fills."""
    if fills is None:
        return math.nan, math.nan
    if fills.empty:
        return 0.0, 0.0
    qty = _floats(fills["qty"].reset_index(drop=True)).abs()
    price = _floats(fills["price"].reset_index(drop=True))
    fees = _floats(fills["fee"].reset_index(drop=True)) if "fee" in fills.columns else pd.Series([0.0])
    return float((qty * price).sum()), float(fees.fillna(0.0).sum())


# --------------------------------------------------------------------------- metrics


def compute_metrics(
    equity: pd.DataFrame | pd.Series | None,
    trades: pd.DataFrame | None = None,
    fills: pd.DataFrame | None = None,
    exposure: pd.DataFrame | None = None,
    *,
    initial_equity: float | Decimal | None = None,
    tz: str = DEFAULT_TZ,
    risk_free: float = 0.0,
    periods_per_year: float = PERIODS_PER_YEAR,
    window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
) -> Metrics:
    """Every metric of one equity series and its trades and fills (see docs/performance-metrics.md).

    ``risk_free`` is an annual rate, applied per daily return as (1 + rf) ** (1 / periods_per_year) - 1 (the Sharpe
    excess and the Sortino target). ``periods_per_year`` (252; 365 for markets that trade every day) annualises
    CAGR, volatility, Sharpe and Sortino. ``window`` (start, end) is the span for exposure time, by default the first
    and last equity sample. ``equity`` None: return-based metrics are NaN and trade/fill ones still computed.
    """
    if equity is not None:
        frame = _equity_frame(equity)
    else:
        frame = pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "equity": pd.Series(dtype="float64")})
    if frame.empty:
        closes = pd.Series(dtype="float64")
        start = end = None
    else:
        closes = daily_equity(frame, tz, initial_equity)
        start, end = frame["ts"].iloc[0], frame["ts"].iloc[-1]
    returns = _returns_from_closes(closes).to_numpy() if len(closes) else np.array([])
    n = len(returns)
    rf = _per_period_rate(risk_free, periods_per_year)

    if n:
        initial, final = float(closes.iloc[0]), float(closes.iloc[-1])
        growth = final / initial
        total_return = growth - 1.0
    else:
        initial = _scalar(initial_equity)
        final = growth = total_return = math.nan
    max_dd, dd_days = _drawdown(closes) if n else (math.nan, math.nan)

    notional, fees = _fill_totals(fills)
    avg_equity = float(closes.iloc[1:].mean()) if n else math.nan
    turnover = notional / avg_equity if n and avg_equity > 0 and not math.isnan(notional) else math.nan

    span = window if window is not None else (start, end)
    if span[0] is None or span[1] is None:
        exposed = math.nan
    elif exposure is not None:
        exposed = exposure_time(exposure, span[0], span[1])
    elif fills is not None:
        exposed = exposure_time(position_intervals(fills), span[0], span[1])
    else:
        exposed = math.nan

    return Metrics(
        start=start,
        end=end,
        days=n,
        initial_equity=initial,
        final_equity=final,
        total_return=total_return,
        cagr=_cagr(growth, n, periods_per_year),
        annual_volatility=_annual_volatility(returns, periods_per_year),
        sharpe=_sharpe(returns, rf, periods_per_year),
        sortino=_sortino(returns, rf, periods_per_year),
        max_drawdown=max_dd,
        max_drawdown_duration=dd_days,
        exposure_time=exposed,
        turnover=turnover,
        fees_paid=fees,
        **trade_stats(trades),
    )


def combine_equity(equity: pd.DataFrame, by: str,
                   initial_equity: float | Decimal | Mapping[Any, float | Decimal] | None = None) -> pd.DataFrame:
    """One equity series summing the series of each ``by`` value on the union of their timestamps: each carries its
    last value forward, and before its first sample counts its initial equity (None: its first sample). Returns
    (ts, equity) and the combined initial equity in ``frame.attrs['initial_equity']``."""
    frame = equity[[by, "ts", "equity"]].copy()
    frame["ts"] = _utc(frame["ts"], "equity.ts")
    frame["equity"] = _floats(frame["equity"]).to_numpy()
    frame = frame.sort_values("ts", kind="stable").drop_duplicates([by, "ts"], keep="last")
    wide = frame.pivot(index="ts", columns=by, values="equity").sort_index().ffill()
    initials = {}
    for key in wide.columns:
        given = _initial_for(initial_equity, key)
        initials[key] = float(frame.loc[frame[by] == key, "equity"].iloc[0]) if given is None else float(given)
        wide[key] = wide[key].fillna(initials[key])
    out = pd.DataFrame({"ts": wide.index, "equity": wide.sum(axis=1).to_numpy()})
    out.attrs["initial_equity"] = float(sum(initials.values()))
    return out


def _initial_for(initial_equity: Any, key: Any) -> Any:
    if isinstance(initial_equity, Mapping):
        return initial_equity.get(key)
    return initial_equity


def _subset(frame: pd.DataFrame | None, column: str, value: Any) -> pd.DataFrame | None:
    if frame is None or column not in frame.columns:
        return None
    return frame[frame[column] == value]


def metrics_by(
    group_col: str,
    equity: pd.DataFrame | None,
    trades: pd.DataFrame | None = None,
    fills: pd.DataFrame | None = None,
    exposure: pd.DataFrame | None = None,
    *,
    initial_equity: float | Decimal | Mapping[Any, float | Decimal] | None = None,
    tz: str = DEFAULT_TZ,
    risk_free: float = 0.0,
    periods_per_year: float = PERIODS_PER_YEAR,
    run_label: Any = RUN_LABEL,
) -> pd.DataFrame:
    """One row of metrics per value of ``group_col`` (account_id or strategy_id) plus a whole-run row labelled
    ``run_label``, indexed by ``group_col``.

    A frame without ``group_col`` gives the groups nothing (metrics from it are NaN in the group rows, the trade
    count 0) and counts whole in the run row. The run's equity combines the equity series per ``group_col`` when ``equity`` has that
    column, else per ``account_id`` when it has that one (:func:`combine_equity`), else takes it as one series.
    ``initial_equity``: a scalar (each series' start), a mapping by key, or None (first samples). A group's exposure
    window is its own equity span, else the run's.
    """
    groups: set[Any] = set()
    for frame in (equity, trades, fills, exposure):
        if frame is not None and group_col in frame.columns:
            groups.update(frame[group_col].dropna().unique())
    common = {"tz": tz, "risk_free": risk_free, "periods_per_year": periods_per_year}

    run_equity: pd.DataFrame | None = equity
    run_initial: Any = initial_equity
    if equity is not None and not equity.empty:
        key = group_col if group_col in equity.columns else "account_id" if "account_id" in equity.columns else None
        if key is not None:
            run_equity = combine_equity(equity, key, initial_equity)
            run_initial = run_equity.attrs["initial_equity"]
        elif isinstance(initial_equity, Mapping):
            raise ValueError("a mapping initial_equity needs a key column in equity")
    run = compute_metrics(run_equity, trades, fills, exposure, initial_equity=run_initial, **common)
    run_window = (run.start, run.end) if run.start is not None else None

    rows, labels = [], []
    for group in sorted(groups, key=str):
        group_equity = _subset(equity, group_col, group)
        if group_equity is not None and group_equity.empty:
            group_equity = None
        window = None if group_equity is not None else run_window
        group_fills = _subset(fills, group_col, group)
        group_exposure = _subset(exposure, group_col, group)
        metrics = compute_metrics(
            group_equity, _subset(trades, group_col, group), group_fills, group_exposure,
            initial_equity=_initial_for(initial_equity, group) if group_equity is not None else None,
            window=window, **common)
        rows.append(metrics.as_dict())
        labels.append(group)
    rows.append(run.as_dict())
    labels.append(run_label)
    out = pd.DataFrame(rows, columns=list(METRIC_FIELDS))
    out.index = pd.Index(labels, name=group_col)
    return out



# --------------------------------------------------------------------------- benchmark


def buy_and_hold(bars: pd.DataFrame, initial_equity: float) -> pd.DataFrame:
    """Equity of an equal-weight buy-and-hold of the bars' symbols: ``initial_equity`` split evenly at each
    symbol's first close, fractional shares, no costs, each symbol valued at its last close so far. Returns
    (ts, equity) on every bar time of ``bars`` (columns symbol, ts, close)."""
    if bars.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "equity": pd.Series(dtype="float64")})
    closes = bars.pivot_table(index="ts", columns="symbol", values="close", aggfunc="last").sort_index().ffill()
    shares = float(initial_equity) / closes.shape[1] / closes.bfill().iloc[0]
    # before a symbol's first bar its share of the money is still cash
    value = (closes * shares).fillna(float(initial_equity) / closes.shape[1]).sum(axis=1)
    return pd.DataFrame({"ts": _utc(pd.Series(closes.index), "bars.ts"), "equity": value.to_numpy()})


def alpha_beta(returns: pd.Series, benchmark: pd.Series, periods_per_year: float = PERIODS_PER_YEAR
               ) -> tuple[float, float]:
    """(alpha, beta) of daily ``returns`` against ``benchmark`` returns on the days both have (empyrical's
    definitions, risk-free 0): beta = cov / var of the benchmark, alpha = (1 + mean(r - beta * b)) ** periods - 1
    (annualised). NaN with fewer than 2 common days or a constant benchmark."""
    both = pd.concat([returns.rename("r"), benchmark.rename("b")], axis=1, join="inner").dropna()
    if len(both) < 2 or _constant(both["b"].to_numpy()):
        return math.nan, math.nan
    r, b = both["r"].to_numpy(), both["b"].to_numpy()
    beta = float(np.mean((r - r.mean()) * (b - b.mean())) / np.var(b))
    alpha = float((1 + np.mean(r - beta * b)) ** periods_per_year - 1)
    return alpha, beta
