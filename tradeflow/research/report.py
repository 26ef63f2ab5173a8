"""Self-contained HTML backtest report: one file, inline CSS and SVG, no script, no network.

The backtest runner fills a `ReportData`; `render_report` turns it into an HTML string and
`write_report` saves it. Charts are SVG drawn here: the equity curve is downsampled to at most
`MAX_CHART_POINTS` (keeping each bucket's minimum and maximum) so a long run stays a small file,
while the headline numbers and the drawdown are computed from every point.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from tradeflow.research.performance import drawdown

MAX_CHART_POINTS = 2000
MAX_TRADE_ROWS = 500
# Metric columns whose name contains one of these hold fractions and are shown as percentages.
FRACTION_HINTS = ("_pct", "return", "drawdown", "rate")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CHART_WIDTH = 1100
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 20, 12, 28

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #1f2328; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
.meta, .note, .empty { color: #59636e; } .empty { font-style: italic; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 10px; border-bottom: 1px solid #eaeef2; }
th { background: #f6f8fa; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.neg { color: #cf222e; } .stats td:first-child, .params td:first-child { color: #59636e; }
svg.chart { width: 100%; height: auto; display: block; }
svg .series { fill: none; stroke: #0969da; stroke-width: 2; } svg .area { fill: #cf222e; fill-opacity: .35; stroke: none; }
#drawdown-chart .series { stroke: #cf222e; stroke-width: 1.5; }
svg .grid { stroke: #eaeef2; } svg .axis { stroke: #8c959f; } svg text { font-size: 11px; fill: #59636e; }
"""


@dataclass(frozen=True)
class ReportData:
    """What a backtest hands to the report.

    equity: columns ts (tz-aware) and equity, the whole run (any length).
    metrics_by_strategy / metrics_by_account: one row per strategy / account (the id as index or
        a column); every other column is a metric. Columns named after FRACTION_HINTS are fractions.
    monthly_returns: return fractions indexed by month (timestamps, periods or "YYYY-MM"), as a
        Series or a one-column DataFrame.
    trades: closed trades (match_ts, account_id, strategy_id, symbol, closed_side, matched_qty,
        buy_price, sell_price, realized_pnl, fee_share), shown as given up to MAX_TRADE_ROWS.
    rejects_by_code: reject_code, count and optionally strategy_id / account_id.
    """

    run_id: str
    title: str
    period_start: datetime
    period_end: datetime
    parameters: dict[str, str]
    equity: pd.DataFrame
    metrics_by_strategy: pd.DataFrame
    metrics_by_account: pd.DataFrame
    monthly_returns: pd.Series | pd.DataFrame
    trades: pd.DataFrame
    rejects_by_code: pd.DataFrame

    def __post_init__(self) -> None:
        for name, columns in (("equity", {"ts", "equity"}), ("rejects_by_code", {"reject_code", "count"})):
            frame = getattr(self, name)
            if not frame.empty and not columns <= set(frame.columns):
                raise ValueError(f"{name} needs columns {sorted(columns)}, got {list(frame.columns)}")


def render_report(data: ReportData) -> str:
    equity = _clean_equity(data.equity)
    sections = [
        _section("summary", "Summary", _stats_table(data, equity) + _params_table(data.parameters)),
        _section("equity", "Equity and drawdown", _equity_charts(equity)),
        _section("strategies", "By strategy", _table(data.metrics_by_strategy, "strategy-table", _is_fraction,
                                                     "No strategy metrics.")),
        _section("accounts", "By account", _table(data.metrics_by_account, "account-table", _is_fraction,
                                                  "No account metrics.")),
        _section("monthly-returns", "Monthly returns", _monthly_table(data.monthly_returns)),
        _section("trades", "Trades", _trades(data.trades)),
        _section("rejects", "Rejects by code", _table(_sorted(data.rejects_by_code, "count", ascending=False),
                                                      "reject-table", empty="No rejects.")),
    ]
    period = f"{_fmt(data.period_start)} → {_fmt(data.period_end)}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Belt and braces for "works offline": the page may load nothing and run nothing.
        """<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">""",
        f"<title>{escape(data.title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{escape(data.title)}</h1><p class="meta">run {escape(data.run_id)} · {escape(period)}</p></header>',
        *sections,
        "</body></html>",
    ])


def write_report(data: ReportData, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path


def downsample(equity: pd.DataFrame, max_points: int = MAX_CHART_POINTS, column: str = "equity") -> pd.DataFrame:
    """At most max_points rows in time order: the first, the last, and each bucket's min and max."""
    if len(equity) <= max_points:
        return equity
    values = equity[column].to_numpy(dtype=float)
    keep = {0, len(values) - 1}
    for bucket in np.array_split(np.arange(len(values)), (max_points - 2) // 2):
        keep.update((bucket[values[bucket].argmin()], bucket[values[bucket].argmax()]))
    return equity.iloc[sorted(keep)]


# ---- sections -------------------------------------------------------------------------------

def _section(section_id: str, heading: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{escape(heading)}</h2>\n{body}\n</section>'


def _clean_equity(equity: pd.DataFrame) -> pd.DataFrame:
    if equity.empty:
        return pd.DataFrame({"ts": pd.Series(dtype="datetime64[ns, UTC]"), "equity": pd.Series(dtype=float)})
    clean = equity[["ts", "equity"]].dropna().sort_values("ts", kind="stable").reset_index(drop=True)
    clean["equity"] = clean["equity"].astype(float)
    clean["drawdown"] = drawdown(clean["equity"])
    return clean


def _stats_table(data: ReportData, equity: pd.DataFrame) -> str:
    stats: list[tuple[str, object, bool]] = []
    if not equity.empty:
        first, last = equity["equity"].iloc[0], equity["equity"].iloc[-1]
        stats += [("Start equity", first, False), ("End equity", last, False),
                  ("Total return", last / first - 1 if first > 0 else None, True),
                  ("Max drawdown", equity["drawdown"].min(), True)]
    stats.append(("Closed trades", len(data.trades), False))
    if "realized_pnl" in data.trades.columns:
        stats.append(("Realized P&L", data.trades["realized_pnl"].astype(float).sum(), False))
    rejects = data.rejects_by_code
    stats.append(("Rejected orders", int(rejects["count"].sum()) if not rejects.empty else 0, False))
    rows = "".join(f"<tr><td>{escape(label)}</td>{_cell(value, fraction)}</tr>" for label, value, fraction in stats)
    return f'<table class="stats" id="stats-table">{rows}</table>'


def _params_table(parameters: dict[str, str]) -> str:
    if not parameters:
        return '<p class="empty">No parameters.</p>'
    rows = "".join(f"<tr><td>{escape(str(key))}</td><td>{escape(str(value))}</td></tr>"
                   for key, value in parameters.items())
    return f'<h3>Parameters</h3><table class="params" id="params-table">{rows}</table>'


def _equity_charts(equity: pd.DataFrame) -> str:
    if equity.empty:
        return '<p class="empty">No equity data.</p>'
    points = downsample(equity)
    dd_points = downsample(equity, column="drawdown")
    note = (f'<p class="note">Charts drawn from {len(points):,} of {len(equity):,} points '
            "(minimum and maximum of each interval kept).</p>" if len(points) < len(equity) else "")
    return "\n".join([
        _chart("equity-chart", "Equity", points["ts"], points["equity"].to_numpy(), 340, _money_tick),
        "<h3>Drawdown</h3>",
        _chart("drawdown-chart", "Drawdown", dd_points["ts"], dd_points["drawdown"].to_numpy(), 180, _percent_tick,
               area_to=0.0),
        note,
    ])


def _trades(trades: pd.DataFrame) -> str:
    if trades.empty:
        return '<p class="empty">No trades.</p>'
    shown = _sorted(trades, "match_ts").head(MAX_TRADE_ROWS)
    note = (f'<p class="note">Showing the first {len(shown):,} of {len(trades):,} trades.</p>'
            if len(shown) < len(trades) else "")
    return note + _table(shown, "trade-table")


def _monthly_table(returns: pd.Series | pd.DataFrame) -> str:
    if isinstance(returns, pd.DataFrame):
        returns = returns.set_index("month") if "month" in returns.columns else returns
        returns = returns.iloc[:, 0] if len(returns.columns) else pd.Series(dtype=float)
    returns = returns.dropna().astype(float)
    if returns.empty:
        return '<p class="empty">No monthly returns.</p>'
    index = returns.index if isinstance(returns.index, pd.PeriodIndex) else pd.DatetimeIndex(pd.to_datetime(returns.index))
    grid = pd.Series(returns.to_numpy(), index=pd.MultiIndex.from_arrays([index.year, index.month]))
    grid = grid.groupby(level=[0, 1]).apply(lambda r: (1 + r).prod() - 1).unstack()
    scale = float(np.nanmax(np.abs(grid.to_numpy()))) or 1.0
    head = "<tr><th>Year</th>" + "".join(f"<th>{m}</th>" for m in MONTHS) + "<th>Year</th></tr>"
    rows = []
    for year, row in grid.iterrows():
        cells = "".join(_heat_cell(row.get(month), scale) for month in range(1, 13))
        rows.append(f"<tr><th>{year}</th>{cells}{_cell((1 + row.dropna()).prod() - 1, True)}</tr>")
    return f'<table id="monthly-table">{head}{"".join(rows)}</table>'


def _heat_cell(value: float | None, scale: float) -> str:
    if value is None or pd.isna(value):
        return '<td class="num">—</td>'
    rgb = "26,127,55" if value >= 0 else "207,34,46"
    alpha = 0.12 + 0.6 * min(abs(value) / scale, 1.0)
    return f'<td class="num" style="background:rgba({rgb},{alpha:.2f})">{escape(_fmt(value, True))}</td>'


# ---- tables and values ----------------------------------------------------------------------

def _table(frame: pd.DataFrame, table_id: str, fraction: Callable[[str], bool] = lambda _: False,
           empty: str = "No rows.") -> str:
    if frame.empty:
        return f'<p class="empty">{escape(empty)}</p>'
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    columns = [str(c) for c in frame.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    flags = [fraction(c) for c in columns]
    body = "".join("<tr>" + "".join(_cell(v, f) for v, f in zip(row, flags)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<table id="{table_id}"><tr>{head}</tr>{body}</table>'


def _sorted(frame: pd.DataFrame, column: str, ascending: bool = True) -> pd.DataFrame:
    return frame.sort_values(column, ascending=ascending, kind="stable") if column in frame.columns else frame


def _is_fraction(column: str) -> bool:
    return any(hint in column.lower() for hint in FRACTION_HINTS)


def _cell(value: object, fraction: bool = False) -> str:
    text = escape(_fmt(value, fraction))
    if isinstance(value, numbers.Number) and not isinstance(value, bool) and not pd.isna(value):
        return f'<td class="num neg">{text}</td>' if value < 0 else f'<td class="num">{text}</td>'
    return f"<td>{text}</td>"


def _fmt(value: object, fraction: bool = False) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
        if fraction:
            return f"{number:.2%}"
        if isinstance(value, numbers.Integral) or number.is_integer():
            return f"{number:,.0f}"
        return f"{number:,.2f}" if abs(number) >= 0.01 else f"{number:.3g}"
    return str(value)


# ---- charts ---------------------------------------------------------------------------------

def _chart(svg_id: str, label: str, ts: pd.Series, values: np.ndarray, height: int,
           tick_label: Callable[[float, float], str], area_to: float | None = None) -> str:
    """A line chart with y grid and labels, time labels, and optionally the area down (or up) to area_to."""
    plot_w = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    seconds = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    span = seconds[-1] or 1.0
    lo, hi = float(values.min()), float(values.max())
    if area_to is not None:
        lo, hi = min(lo, area_to), max(hi, area_to)
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.01 or 0.01
        lo, hi = lo - pad, hi + pad
    ticks, step = _nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def y_of(v: float | np.ndarray) -> float | np.ndarray:
        return MARGIN_TOP + (hi - v) / (hi - lo) * plot_h

    xs = MARGIN_LEFT + seconds / span * plot_w
    ys = y_of(values)
    line = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    out = [(f'<svg id="{svg_id}" class="chart" viewBox="0 0 {CHART_WIDTH} {height}" role="img" '
            f'aria-label="{escape(label)}">')]
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{CHART_WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(tick_label(tick, step))}</text>')
    bottom = MARGIN_TOP + plot_h
    out.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{CHART_WIDTH - MARGIN_RIGHT}" y1="{bottom}" y2="{bottom}"/>'
               f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{bottom}"/>')
    time_format = "%Y-%m-%d" if span > 2 * 86400 else "%m-%d %H:%M"
    for i in range(6 if len(ts) > 1 else 1):
        when = ts.iloc[0] + (ts.iloc[-1] - ts.iloc[0]) * (i / 5)
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        out.append(f'<text x="{MARGIN_LEFT + plot_w * i / 5:.1f}" y="{height - 8}" text-anchor="{anchor}">'
                   f"{escape(when.strftime(time_format))}</text>")
    if area_to is not None:
        base = y_of(area_to)
        out.append(f'<path class="area" d="{line} L{xs[-1]:.1f},{base:.1f} L{xs[0]:.1f},{base:.1f} Z"/>')
    out.append(f'<path class="series" d="{line}"/>')
    if len(values) == 1:
        out.append(f'<circle class="series-point" cx="{xs[0]:.1f}" cy="{ys[0]:.1f}" r="3" fill="#0969da"/>')
    out.append("</svg>")
    return "\n".join(out)


def _nice_ticks(lo: float, hi: float, target: int = 5) -> tuple[list[float], float]:
    """Round tick values covering [lo, hi] with a 1/2/5 x 10^k step."""
    raw = (hi - lo) / target
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= step * m)
    first = math.floor(lo / step) * step
    count = math.ceil((hi - first) / step - 1e-9)
    return [first + i * step for i in range(count + 1)], step


def _money_tick(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step)))
    return f"{value:,.{decimals}f}"


def _percent_tick(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step * 100)))
    return f"{value:.{decimals}%}"
