"""Self-contained HTML backtest report: one file, inline CSS and SVG, one small inline script
(table sorting, allowed by its hash in the page's Content-Security-Policy), no network.

The backtest runner fills a `ReportData`; `render_report` turns it into an HTML string and
`write_report` saves it. Charts are SVG drawn here on a trading-time axis: x is the position
of a sample among the run's bar minutes, so nights, weekends and holidays take no width, and
the axis starts at the first bar. The equity curve is downsampled to at most
`MAX_CHART_POINTS` (keeping each bucket's minimum and maximum) so a long run stays a small file,
while the headline numbers and the drawdown are computed from every point. Every figure is
labelled with its definition (METRIC_DEFINITIONS; docs/performance-metrics.md).
"""
from __future__ import annotations

import base64
import hashlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from tradeflow.research.performance import drawdown

MAX_CHART_POINTS = 2000
MAX_TRADE_ROWS = 500
MAX_PRICE_CHARTS = 12
MAX_MARKERS = 400        # entry/exit markers per price chart
SMALL_SAMPLE_DAYS = 20   # annualized figures from fewer daily returns get a note
# Metric columns whose name contains one of these hold fractions and are shown as percentages.
FRACTION_HINTS = ("_pct", "return", "drawdown", "rate", "cagr", "volatility", "exposure")
DAY_HINTS = ("_duration",)  # ... and these hold calendar days
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
CHART_WIDTH = 1100
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 20, 12, 28

METRIC_DEFINITIONS = {
    "start": "First equity sample (UTC).",
    "end": "Last equity sample (UTC).",
    "days": "Daily returns: local calendar days (report time zone) with an equity sample.",
    "initial_equity": "Equity at the start (the accounts' capital).",
    "final_equity": "Closing equity of the last day.",
    "total_return": "Final equity / initial equity - 1.",
    "cagr": "Annualized: (final / initial) ^ (252 / days) - 1.",
    "annual_volatility": "Annualized: sample standard deviation of daily returns x sqrt(252).",
    "sharpe": "Annualized: mean daily return / its standard deviation x sqrt(252) (risk-free 0).",
    "sortino": "Annualized: mean daily return x 252 / (downside deviation over all days x sqrt(252)).",
    "max_drawdown": "Daily: largest fall of an end-of-day equity below its running peak.",
    "max_drawdown_duration": "Calendar days from the deepest daily drawdown's peak to its recovery (or the last day).",
    "trades": "Round trips: a position from flat back to flat (or to a flip).",
    "win_rate": "Round trips with net P&L > 0 / all round trips.",
    "profit_factor": "Sum of winning round trips' net P&L / |sum of losing ones'|.",
    "avg_win": "Mean net P&L of the winning round trips.",
    "avg_loss": "Mean net P&L of the losing round trips.",
    "realized_pnl": "Sum of the round trips' P&L net of fees.",
    "exposure_time": "Share of the run with a position open.",
    "turnover": "Traded notional / mean daily closing equity.",
    "fees_paid": "Every fill's fee, open positions' too.",
}
ANNUALIZED = ("cagr", "annual_volatility", "sharpe", "sortino")

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #1f2328; margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { margin-bottom: 4px; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
.meta, .note, .empty, .def { color: #59636e; } .empty { font-style: italic; } .def { font-size: 12px; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; padding: 6px 10px; border-radius: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 10px; border-bottom: 1px solid #eaeef2; }
th { background: #f6f8fa; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.neg { color: #cf222e; } .stats td:first-child, .params td:first-child { color: #59636e; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th::after { content: " \\2195"; color: #8c959f; }
#trade-table { font-size: 12px; } #trade-table td, #trade-table th { padding: 2px 6px; white-space: nowrap; }
svg.chart { width: 100%; height: auto; display: block; }
svg .series { fill: none; stroke: #0969da; stroke-width: 2; } svg .area { fill: #cf222e; fill-opacity: .35; stroke: none; }
svg .benchmark { fill: none; stroke: #8c959f; stroke-width: 1.5; stroke-dasharray: 6 4; }
svg .price { fill: none; stroke: #1f2328; stroke-width: 1; }
svg .entry { fill: #1a7f37; } svg .exit { fill: #cf222e; } svg .day { stroke: #f0f2f4; }
#drawdown-chart .series { stroke: #cf222e; stroke-width: 1.5; }
svg .grid { stroke: #eaeef2; } svg .axis { stroke: #8c959f; } svg text { font-size: 11px; fill: #59636e; }
.legend span { margin-right: 16px; } .legend .swatch { display: inline-block; width: 18px; height: 3px;
  vertical-align: middle; margin-right: 4px; }
"""

# Sorts a table.sortable by the clicked column (numbers by data-v, text otherwise); a page
# opened as report.html#sort=<column> starts sorted by it.
SORT_SCRIPT = """
(function () {
  function key(cell) { var v = cell.getAttribute('data-v'); return v === null ? cell.textContent : parseFloat(v); }
  function sortBy(th, descending) {
    var table = th.closest('table'), body = table.tBodies[0], i = th.cellIndex;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[i]), y = key(b.cells[i]);
      var c = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return descending ? -c : c;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    th.parentNode.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
  }
  document.querySelectorAll('table.sortable th').forEach(function (th) {
    th.addEventListener('click', function () { sortBy(th, th.getAttribute('aria-sort') === 'ascending'); });
  });
  var wanted = /^#sort=(-?)(.+)$/.exec(location.hash);
  if (wanted) {
    document.querySelectorAll('table.sortable th').forEach(function (th) {
      if (th.textContent === decodeURIComponent(wanted[2])) { sortBy(th, wanted[1] === '-'); }
    });
  }
})();
"""
SCRIPT_HASH = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()


@dataclass(frozen=True)
class ReportData:
    """What a backtest hands to the report.

    equity: columns ts (tz-aware) and equity, the whole run (any length).
    metrics_by_strategy / metrics_by_account: one row per strategy / account (the id as index or
        a column); every other column is a metric. Columns named after FRACTION_HINTS are fractions,
        after DAY_HINTS calendar days.
    monthly_returns: return fractions indexed by month (timestamps, periods or "YYYY-MM"), as a
        Series or a one-column DataFrame.
    trades: round trips (entry_ts, exit_ts, holding_time, account_id, strategy_id, symbol, side, qty,
        entry_price, exit_price, realized_pnl_gross, fees, realized_pnl, return_pct, mae_pct, mfe_pct;
        any columns are shown), up to MAX_TRADE_ROWS, sortable.
    rejects_by_code: reject_code, count and optionally stage (gate / broker), strategy_id, account_id.
    run_metrics: the run's headline figures (performance.Metrics fields, plus benchmark_return,
        alpha and beta), shown with their definitions.
    config: the run's resolved configuration, shown as a table.
    bars: symbol, ts, close of the run: the trading-time axis and the per-symbol price charts.
    benchmark: ts, equity of a buy-and-hold of the same symbols, drawn next to the equity.
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
    run_metrics: dict[str, object] = field(default_factory=dict)
    config: dict[str, object] = field(default_factory=dict)
    bars: pd.DataFrame | None = None
    benchmark: pd.DataFrame | None = None
    tz: str = "UTC"

    def __post_init__(self) -> None:
        for name, columns in (("equity", {"ts", "equity"}), ("rejects_by_code", {"reject_code", "count"})):
            frame = getattr(self, name)
            if not frame.empty and not columns <= set(frame.columns):
                raise ValueError(f"{name} needs columns {sorted(columns)}, got {list(frame.columns)}")
        if self.bars is not None and not self.bars.empty and not {"symbol", "ts", "close"} <= set(self.bars.columns):
            raise ValueError(f"bars needs columns ['close', 'symbol', 'ts'], got {list(self.bars.columns)}")


def render_report(data: ReportData) -> str:
    equity = _clean_equity(data.equity)
    axis = TradingAxis.of(data.bars, equity)
    sections = [
        _section("summary", "Summary", _small_sample_note(data) + _stats_table(data, equity)),
        _section("config", "Configuration", _params_table(data.parameters) + _config_table(data.config)),
        _section("equity", "Equity and drawdown", _equity_charts(equity, data.benchmark, axis)),
        _section("prices", "Prices and trades", _price_charts(data.bars, data.trades, axis)),
        _section("strategies", "By strategy", _metrics_table(data.metrics_by_strategy, "strategy-table",
                                                             "No strategy metrics.")),
        _section("accounts", "By account", _metrics_table(data.metrics_by_account, "account-table",
                                                          "No account metrics.")),
        _section("monthly-returns", "Monthly returns", _monthly_table(data.monthly_returns)),
        _section("trades", "Trades (round trips)", _trades(data.trades)),
        _section("rejects", "Rejects by stage and code", _table(
            _sorted(data.rejects_by_code, "count", ascending=False), "reject-table", empty="No rejects.")),
    ]
    period = f"{_fmt(data.period_start)} → {_fmt(data.period_end)}"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Belt and braces for "works offline": the page may load nothing and run only its own script.
        f"""<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline';"""
        f""" script-src 'sha256-{SCRIPT_HASH}'">""",
        f"<title>{escape(data.title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{escape(data.title)}</h1><p class="meta">run {escape(data.run_id)} · {escape(period)}</p></header>',
        *sections,
        f"<script>{SORT_SCRIPT}</script>",
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


class TradingAxis:
    """x positions on trading time: a timestamp's place among the run's bar minutes (or, without
    bars, among the equity samples), so time without bars takes no width."""

    def __init__(self, minutes: np.ndarray) -> None:
        self.minutes = minutes  # sorted unique datetime64[ns] (UTC, naive)

    @classmethod
    def of(cls, bars: pd.DataFrame | None, equity: pd.DataFrame) -> TradingAxis:
        source = bars.ts if bars is not None and not bars.empty else equity.ts
        ts = pd.to_datetime(source, utc=True).dt.tz_convert(None)
        return cls(np.unique(ts.to_numpy()))

    def fractions(self, ts: pd.Series) -> np.ndarray:
        """0..1 per timestamp; one between two minutes sits at the earlier one."""
        if len(self.minutes) < 2:
            return np.zeros(len(ts))
        at = pd.to_datetime(ts, utc=True).dt.tz_convert(None).to_numpy()
        index = np.clip(np.searchsorted(self.minutes, at, side="right") - 1, 0, len(self.minutes) - 1)
        return index / (len(self.minutes) - 1)

    def labels(self, count: int = 6) -> list[tuple[float, str]]:
        if not len(self.minutes):
            return []
        span = self.minutes[-1] - self.minutes[0]
        fmt = "%Y-%m-%d" if span > np.timedelta64(10, "D") else "%m-%d %H:%M"
        positions = np.linspace(0, 1, count if len(self.minutes) > 1 else 1)
        return [(p, pd.Timestamp(self.minutes[int(round(p * (len(self.minutes) - 1)))]).strftime(fmt))
                for p in positions]

    def day_starts(self, limit: int = 90) -> np.ndarray:
        """Where each UTC day after the first begins (thin separators), none past `limit` days."""
        days = self.minutes.astype("datetime64[D]")
        starts = np.flatnonzero(days[1:] != days[:-1]) + 1
        return starts / (len(self.minutes) - 1) if 0 < len(starts) <= limit else np.array([])


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


def _small_sample_note(data: ReportData) -> str:
    days = data.run_metrics.get("days")
    if days is None or pd.isna(days) or days >= SMALL_SAMPLE_DAYS:
        return ""
    return (f'<p class="warn" id="small-sample">Annualized figures ({", ".join(ANNUALIZED)}) rest on {int(days)}'
            f" daily return{'s' if days != 1 else ''} (fewer than {SMALL_SAMPLE_DAYS}): they say little about"
            " a year of trading.</p>")


def _stats_table(data: ReportData, equity: pd.DataFrame) -> str:
    m = data.run_metrics
    stats: list[tuple[str, object, str, str]] = []  # label, value, kind, definition
    if not equity.empty:
        first, last = equity["equity"].iloc[0], equity["equity"].iloc[-1]
        stats += [("Start equity", first, "", "Equity at the first bar."),
                  ("End equity", last, "", "Equity at the last sample."),
                  ("Total return", last / first - 1 if first > 0 else None, "fraction", METRIC_DEFINITIONS["total_return"])]
    for name, label in (("cagr", "CAGR"), ("annual_volatility", "Annual volatility"), ("sharpe", "Sharpe"),
                        ("sortino", "Sortino")):
        if name in m:
            stats.append((label, m[name], _kind(name), METRIC_DEFINITIONS[name] + f" {_tz_note(data)}"))
    if "max_drawdown" in m:
        stats.append(("Max drawdown (daily)", m["max_drawdown"], "fraction",
                      METRIC_DEFINITIONS["max_drawdown"] + f" {_tz_note(data)}"))
    if not equity.empty:
        stats.append(("Max drawdown (intraday)", equity["drawdown"].min(), "fraction",
                      "Largest fall of any equity sample (every bar with a position, every fill) below its running"
                      " peak: deeper than the daily figure when a trough recovers before the close."))
    if "max_drawdown_duration" in m:
        stats.append(("Max drawdown duration", m["max_drawdown_duration"], "days",
                      METRIC_DEFINITIONS["max_drawdown_duration"]))
    if "days" in m:
        stats.append(("Daily returns", m["days"], "", METRIC_DEFINITIONS["days"]))
    for name, label, definition in (
            ("benchmark_return", "Buy and hold return", "Equal-weight buy and hold of the run's symbols from their"
                                                        " first close, no costs."),
            ("alpha", "Alpha (annualized)", "(1 + mean(r - beta x b)) ^ 252 - 1, r and b the daily returns of the"
                                            " run and of buy and hold."),
            ("beta", "Beta", "cov(r, b) / var(b) of the daily returns of the run and of buy and hold.")):
        if name in m:
            stats.append((label, m[name], "fraction" if name != "beta" else "", definition))
    trades = data.trades
    stats.append(("Trades", m.get("trades", len(trades)), "", METRIC_DEFINITIONS["trades"]))
    for name, label in (("win_rate", "Win rate"), ("profit_factor", "Profit factor"),
                        ("realized_pnl", "Realized P&L"), ("fees_paid", "Fees paid")):
        if name in m:
            stats.append((label, m[name], _kind(name), METRIC_DEFINITIONS[name]))
    rejects = data.rejects_by_code
    for stage, label in (("gate", "Rejected by the gate"), ("broker", "Rejected by the broker")):
        if rejects.empty:
            count = 0
        elif "stage" in rejects.columns:
            count = int(rejects.loc[rejects["stage"] == stage, "count"].sum())
        else:
            count = int(rejects["count"].sum()) if stage == "gate" else 0
        stats.append((label, count, "", "Signals the decision gate refused (reason codes)." if stage == "gate"
                      else "Orders the broker refused (e.g. DAY orders after the session end)."))
    rows = "".join(f"<tr><td>{escape(label)}</td>{_cell(value, kind)}<td class=\"def\">{escape(definition)}</td></tr>"
                   for label, value, kind, definition in stats)
    return f'<div class="scroll"><table class="stats" id="stats-table">{rows}</table></div>'


def _tz_note(data: ReportData) -> str:
    return f"Days in {data.tz}."


def _params_table(parameters: dict[str, str]) -> str:
    if not parameters:
        return '<p class="empty">No parameters.</p>'
    rows = "".join(f"<tr><td>{escape(str(key))}</td><td>{escape(str(value))}</td></tr>"
                   for key, value in parameters.items())
    return f'<h3>Run</h3><table class="params" id="params-table">{rows}</table>'


def _config_table(config: dict[str, object]) -> str:
    """The resolved configuration, one key a row (mappings as key = value lines)."""
    if not config:
        return ""

    def text(value: object) -> str:
        if value is None or value == "" or value == {} or value == []:
            return "—"
        if isinstance(value, dict):
            return "; ".join(f"{k} = {text(v)}" for k, v in value.items())
        if isinstance(value, list):
            return ", ".join(text(v) for v in value)
        return str(value)

    rows = "".join(f"<tr><td>{escape(str(key))}</td><td>{escape(text(value))}</td></tr>"
                   for key, value in config.items())
    return ('<h3>Configuration</h3><p class="note">The resolved settings of this run: '
            "<code>tradeflow backtest --config</code> with these keys repeats it.</p>"
            f'<div class="scroll"><table class="params" id="config-table">{rows}</table></div>')


def _equity_charts(equity: pd.DataFrame, benchmark: pd.DataFrame | None, axis: TradingAxis) -> str:
    if equity.empty:
        return '<p class="empty">No equity data.</p>'
    points = downsample(equity)
    dd_points = downsample(equity, column="drawdown")
    note = (f'<p class="note">Charts drawn from {len(points):,} of {len(equity):,} points '
            "(minimum and maximum of each interval kept).</p>" if len(points) < len(equity) else "")
    extra = []
    legend = '<span><i class="swatch" style="background:#0969da"></i>equity</span>'
    if benchmark is not None and not benchmark.empty:
        bench = downsample(benchmark[["ts", "equity"]].dropna().reset_index(drop=True))
        extra.append(("benchmark", axis.fractions(bench["ts"]), bench["equity"].to_numpy(dtype=float)))
        legend += '<span><i class="swatch" style="background:#8c959f"></i>buy and hold (equal weight)</span>'
    return "\n".join([
        f'<p class="legend">{legend}</p>',
        _chart("equity-chart", "Equity", axis, axis.fractions(points["ts"]), points["equity"].to_numpy(), 340,
               _money_tick, extra=extra),
        "<h3>Drawdown (intraday)</h3>",
        _chart("drawdown-chart", "Drawdown", axis, axis.fractions(dd_points["ts"]), dd_points["drawdown"].to_numpy(),
               180, _percent_tick, area_to=0.0),
        '<p class="note">Time axis: trading time from the first bar; nights, weekends and holidays take no width'
        " (thin lines mark new days).</p>",
        note,
    ])


def _price_charts(bars: pd.DataFrame | None, trades: pd.DataFrame, axis: TradingAxis) -> str:
    """Per symbol, the close with each round trip's entry (triangle, up for a long) and exit (circle)."""
    if bars is None or bars.empty:
        return '<p class="empty">No price data.</p>'
    symbols = list(pd.unique(bars["symbol"]))
    has_trades = not trades.empty and {"symbol", "entry_ts", "exit_ts", "entry_price", "exit_price"} <= set(trades)
    if has_trades:  # the most traded symbols first
        counts = trades["symbol"].value_counts()
        symbols.sort(key=lambda s: (-counts.get(s, 0), str(s)))
    shown = symbols[:MAX_PRICE_CHARTS]
    out = ['<p class="legend"><span><svg width="12" height="12"><path class="entry" d="M6,1 L11,11 L1,11 Z"/>'
           '</svg> entry (up: long, down: short)</span><span><svg width="12" height="12"><circle class="exit" cx="6"'
           ' cy="6" r="4"/></svg> exit</span></p>']
    if len(symbols) > len(shown):
        out.append(f'<p class="note">The {len(shown)} most traded of {len(symbols)} symbols.</p>')
    for symbol in shown:
        series = bars[bars["symbol"] == symbol].sort_values("ts")[["ts", "close"]].reset_index(drop=True)
        series["close"] = series["close"].astype(float)
        series = downsample(series, column="close")
        markers = []
        if has_trades:
            own = trades[trades["symbol"] == symbol].head(MAX_MARKERS // 2)
            for row in own.itertuples(index=False):
                long = getattr(row, "side", "LONG") == "LONG"
                markers.append(("entry", row.entry_ts, float(row.entry_price), "up" if long else "down"))
                markers.append(("exit", row.exit_ts, float(row.exit_price), "dot"))
        out.append(f"<h3>{escape(str(symbol))}</h3>")
        out.append(_chart(f"price-{_slug(symbol)}", f"{symbol} close", axis, axis.fractions(series["ts"]),
                          series["close"].to_numpy(), 200, _money_tick, line_class="price", markers=markers))
    return "\n".join(out)


def _slug(text: object) -> str:
    return "".join(c if c.isalnum() else "-" for c in str(text))


def _metrics_table(frame: pd.DataFrame, table_id: str, empty: str) -> str:
    """Metrics as rows (with their definitions), one column per account / strategy: as wide as the keys."""
    if frame.empty:
        return f'<p class="empty">{escape(empty)}</p>'
    if isinstance(frame.index, pd.RangeIndex):
        frame = frame.set_index(frame.columns[0])
    keys = [str(k) for k in frame.index]
    head = "<th>metric</th>" + "".join(f"<th>{escape(k)}</th>" for k in keys) + "<th>definition</th>"
    rows = []
    for column in frame.columns:
        kind = _kind(str(column))
        cells = "".join(_cell(v, kind) for v in frame[column].tolist())
        definition = METRIC_DEFINITIONS.get(str(column), "")
        rows.append(f"<tr><td>{escape(str(column))}</td>{cells}<td class=\"def\">{escape(definition)}</td></tr>")
    return f'<div class="scroll"><table id="{table_id}"><tr>{head}</tr>{"".join(rows)}</table></div>'


def _trades(trades: pd.DataFrame) -> str:
    if trades.empty:
        return '<p class="empty">No trades.</p>'
    order = next((c for c in ("exit_ts", "match_ts") if c in trades.columns), None)
    shown = (_sorted(trades, order) if order else trades).head(MAX_TRADE_ROWS)
    note = (f'<p class="note">Showing the first {len(shown):,} of {len(trades):,} trades.</p>'
            if len(shown) < len(trades) else "")
    return (note + '<p class="note">Click a column to sort. holding_time: days, hours and minutes;'
            " mae/mfe: worst/best price reached while open vs the entry price.</p>"
            + f'<div class="scroll">{_table(shown, "trade-table", _kind, sortable=True)}</div>')


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
        rows.append(f"<tr><th>{year}</th>{cells}{_cell((1 + row.dropna()).prod() - 1, 'fraction')}</tr>")
    return f'<table id="monthly-table">{head}{"".join(rows)}</table>'


def _heat_cell(value: float | None, scale: float) -> str:
    if value is None or pd.isna(value):
        return '<td class="num">—</td>'
    rgb = "26,127,55" if value >= 0 else "207,34,46"
    alpha = 0.12 + 0.6 * min(abs(value) / scale, 1.0)
    return f'<td class="num" style="background:rgba({rgb},{alpha:.2f})">{escape(_fmt(value, "fraction"))}</td>'


# ---- tables and values ----------------------------------------------------------------------

def _table(frame: pd.DataFrame, table_id: str, kind: Callable[[str], str] = lambda _: "",
           empty: str = "No rows.", sortable: bool = False) -> str:
    if frame.empty:
        return f'<p class="empty">{escape(empty)}</p>'
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    columns = [str(c) for c in frame.columns]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    kinds = [kind(c) for c in columns]
    body = "".join("<tr>" + "".join(_cell(v, k, sortable) for v, k in zip(row, kinds)) + "</tr>"
                   for row in frame.itertuples(index=False))
    css = ' class="sortable"' if sortable else ""
    return f'<table id="{table_id}"{css}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _sorted(frame: pd.DataFrame, column: str, ascending: bool = True) -> pd.DataFrame:
    return frame.sort_values(column, ascending=ascending, kind="stable") if column in frame.columns else frame


def _kind(column: str) -> str:
    """How a metric column's numbers read: "fraction" (a percentage), "days", or "" (a number)."""
    name = column.lower()
    if any(hint in name for hint in DAY_HINTS):
        return "days"
    return "fraction" if any(hint in name for hint in FRACTION_HINTS) else ""


def _cell(value: object, kind: str = "", sort_key: bool = False) -> str:
    text = escape(_fmt(value, kind))
    number = _sort_number(value)
    data = f' data-v="{number!r}"' if sort_key and number is not None else ""
    if isinstance(value, numbers.Number) and not isinstance(value, bool) and not pd.isna(value):
        return f'<td class="num neg"{data}>{text}</td>' if value < 0 else f'<td class="num"{data}>{text}</td>'
    if isinstance(value, (timedelta, pd.Timedelta)) and not pd.isna(value):
        return f'<td class="num"{data}>{text}</td>'
    return f"<td{data}>{text}</td>"


def _sort_number(value: object) -> float | None:
    """The number a sortable column sorts by: numbers as they are, durations in seconds, times as epoch."""
    if value is None or isinstance(value, (str, bool)) or (not isinstance(value, datetime) and pd.isna(value)):
        return None
    if isinstance(value, (timedelta, pd.Timedelta)):
        return pd.Timedelta(value).total_seconds()
    if isinstance(value, datetime):
        return pd.Timestamp(value).timestamp()
    if isinstance(value, numbers.Number):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _fmt(value: object, kind: str = "") -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "—"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (timedelta, pd.Timedelta)):
        return _duration(pd.Timedelta(value))
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_)):
        number = float(value)
        if kind == "fraction":
            return f"{number:.2%}"
        if kind == "days":
            return f"{number:,.1f} days"
        if isinstance(value, numbers.Integral) or number.is_integer():
            return f"{number:,.0f}"
        return f"{number:,.2f}" if abs(number) >= 0.01 else f"{number:.3g}"
    return str(value)


def _duration(delta: pd.Timedelta) -> str:
    """1d 02:05 (days, hours, minutes); under a day 02:05."""
    minutes = int(delta.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    clock = f"{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}d {clock}" if days else clock


# ---- charts ---------------------------------------------------------------------------------

def _chart(svg_id: str, label: str, axis: TradingAxis, xs: np.ndarray, values: np.ndarray, height: int,
           tick_label: Callable[[float, float], str], area_to: float | None = None, line_class: str = "series",
           extra: list[tuple[str, np.ndarray, np.ndarray]] = (),
           markers: list[tuple[str, object, float, str]] = ()) -> str:
    """A line chart on the trading-time axis (xs: 0..1) with y grid and labels, time labels, day lines;
    optionally the area down (or up) to area_to, more lines (class, xs, values) and markers
    (class, ts, price, "up" / "down" / "dot")."""
    plot_w = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM
    every = np.concatenate([values.astype(float), *(v.astype(float) for _, _, v in extra),
                            np.array([m[2] for m in markers], dtype=float)])
    lo, hi = float(np.nanmin(every)), float(np.nanmax(every))
    if area_to is not None:
        lo, hi = min(lo, area_to), max(hi, area_to)
    if hi - lo <= 1e-9 * max(1.0, abs(hi)):
        pad = abs(hi) * 0.01 or 0.01
        lo, hi = lo - pad, hi + pad
    ticks, step = _nice_ticks(lo, hi)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])

    def y_of(v: float | np.ndarray) -> float | np.ndarray:
        return MARGIN_TOP + (hi - v) / (hi - lo) * plot_h

    def x_of(fraction: float | np.ndarray) -> float | np.ndarray:
        return MARGIN_LEFT + fraction * plot_w

    def path(x: np.ndarray, y: np.ndarray) -> str:
        return "M" + " L".join(f"{a:.1f},{b:.1f}" for a, b in zip(x, y))

    xs_px, ys = x_of(xs), y_of(values)
    line = path(xs_px, ys)
    bottom = MARGIN_TOP + plot_h
    out = [(f'<svg id="{svg_id}" class="chart" viewBox="0 0 {CHART_WIDTH} {height}" role="img" '
            f'aria-label="{escape(label)}">')]
    for day in axis.day_starts():
        out.append(f'<line class="day" x1="{x_of(day):.1f}" x2="{x_of(day):.1f}" y1="{MARGIN_TOP}" y2="{bottom}"/>')
    for tick in ticks:
        y = y_of(tick)
        out.append(f'<line class="grid" x1="{MARGIN_LEFT}" x2="{CHART_WIDTH - MARGIN_RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                   f'<text x="{MARGIN_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(tick_label(tick, step))}</text>')
    out.append(f'<line class="axis" x1="{MARGIN_LEFT}" x2="{CHART_WIDTH - MARGIN_RIGHT}" y1="{bottom}" y2="{bottom}"/>'
               f'<line class="axis" x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT}" y1="{MARGIN_TOP}" y2="{bottom}"/>')
    labels = axis.labels()
    for i, (fraction, text) in enumerate(labels):
        anchor = "start" if i == 0 else "end" if i == len(labels) - 1 else "middle"
        out.append(f'<text x="{x_of(fraction):.1f}" y="{height - 8}" text-anchor="{anchor}">{escape(text)}</text>')
    if area_to is not None:
        base = y_of(area_to)
        out.append(f'<path class="area" d="{line} L{xs_px[-1]:.1f},{base:.1f} L{xs_px[0]:.1f},{base:.1f} Z"/>')
    for css, x, v in extra:
        out.append(f'<path class="{css}" d="{path(x_of(x), y_of(v.astype(float)))}"/>')
    out.append(f'<path class="{line_class}" d="{line}"/>')
    if len(values) == 1:
        out.append(f'<circle class="series-point" cx="{xs_px[0]:.1f}" cy="{ys[0]:.1f}" r="3" fill="#0969da"/>')
    if markers:
        at = x_of(axis.fractions(pd.Series([m[1] for m in markers])))
        for (css, _, price, shape), x in zip(markers, at):
            y = y_of(price)
            if shape == "dot":
                out.append(f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="3.5"/>')
            else:
                tip = -6 if shape == "up" else 6
                out.append(f'<path class="{css} {shape}" d="M{x:.1f},{y + tip:.1f} L{x + 5:.1f},{y - tip:.1f}'
                           f' L{x - 5:.1f},{y - tip:.1f} Z"/>')
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


# ---- parameter sweeps -----------------------------------------------------------------------

def render_sweep_report(*, sweep_id: str, keys: list[str], metric: str, ranking: pd.DataFrame,
                        walk_forward: pd.DataFrame | None = None) -> str:
    """A sweep's heatmap of `metric` over its first two keys (the best value over any others), the
    ranking of every run (sortable; each run_id has its own results) and the walk-forward windows."""
    kind = _kind(metric)
    grid = ranking if walk_forward is None else ranking[ranking["window"] == ranking["window"].max()]
    rows_key, cols_key = keys[0], keys[1] if len(keys) > 1 else None
    lower_better = metric in ("max_drawdown_duration", "annual_volatility", "fees_paid", "turnover")
    pick = "min" if lower_better else "max"
    if cols_key is None:
        heat = grid.groupby(rows_key)[metric].agg(pick).to_frame().T
    else:
        heat = grid.pivot_table(index=rows_key, columns=cols_key, values=metric, aggfunc=pick)
    values = heat.to_numpy(dtype=float)
    finite = values[pd.notna(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)

    def shade(value: float) -> str:
        if pd.isna(value):
            return '<td class="num">—</td>'
        good = (value - lo) / (hi - lo) if hi > lo else 0.5
        good = 1 - good if lower_better else good
        rgb = "26,127,55" if good >= 0.5 else "207,34,46"
        alpha = 0.1 + 0.6 * abs(good - 0.5) * 2
        return f'<td class="num" style="background:rgba({rgb},{alpha:.2f})">{escape(_fmt(value, kind))}</td>'

    head = (f"<tr><th>{escape(rows_key)} \\ {escape(str(cols_key))}</th>" if cols_key else "<tr><th></th>")
    head += "".join(f"<th>{escape(_fmt(c))}</th>" for c in heat.columns) + "</tr>"
    body = "".join(f"<tr><th>{escape(_fmt(index) if cols_key else metric)}</th>"
                   + "".join(shade(v) for v in row) + "</tr>" for index, row in zip(heat.index, values))
    note = (f'<p class="note">Other swept keys ({", ".join(keys[2:])}): the best {escape(metric)} over them.</p>'
            if len(keys) > 2 else "")
    window_note = ('<p class="note">The last walk-forward window\'s in-sample runs.</p>'
                   if walk_forward is not None else "")
    sections = [
        _section("heatmap", f"{metric} by parameters", window_note + note
                 + f'<div class="scroll"><table id="heatmap-table">{head}{body}</table></div>'),
        _section("ranking", f"Runs ranked by {metric}", '<p class="note">Each run_id\'s results are stored'
                 " under it (backtest_runs, backtest_metrics, backtest_trades, ...). Click a column to sort.</p>"
                 + f'<div class="scroll">{_table(ranking, "ranking-table", _kind, sortable=True)}</div>'),
    ]
    if walk_forward is not None:
        sections.append(_section("walk-forward", "Walk-forward: out-of-sample runs of each in-sample winner",
                                 f'<div class="scroll">{_table(walk_forward, "walk-forward-table", _kind)}</div>'))
    title = f"Sweep {sweep_id}"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"""<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline';"""
        f""" script-src 'sha256-{SCRIPT_HASH}'">""",
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
        f'<header><h1>{escape(title)}</h1><p class="meta">{len(ranking)} runs · ranked by {escape(metric)}</p></header>',
        *sections, f"<script>{SORT_SCRIPT}</script>", "</body></html>",
    ])


def write_sweep_report(path: str | Path, **kwargs: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_sweep_report(**kwargs), encoding="utf-8")
    return path
