"""The HTML backtest report: sections, escaping, downsampling, empty inputs, and a real render in headless Chromium."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
from datetime import UTC, datetime
from html import escape
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image  # in the test environment through backtesting -> bokeh

from tradeflow.research.report import (
    MAX_CHART_POINTS,
    MAX_TRADE_ROWS,
    METRIC_DEFINITIONS,
    SCRIPT_HASH,
    ReportData,
    TradingAxis,
    downsample,
    render_report,
    render_sweep_report,
    write_report,
)

START = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"
SECTIONS = ("summary", "config", "equity", "prices", "strategies", "accounts", "monthly-returns", "trades", "rejects")
SERIES_BLUE = (9, 105, 218)  # the equity line's stroke in the report's CSS


def equity_curve(points: int, seed: int = 1) -> pd.DataFrame:
    steps = np.random.default_rng(seed).normal(0, 25, points)
    return pd.DataFrame({"ts": pd.date_range(START, periods=points, freq="min"), "equity": 100_000 + steps.cumsum()})


def trades_frame(count: int, symbol: str = "AAPL") -> pd.DataFrame:
    """Round trips as the trades view gives them."""
    rng = np.random.default_rng(2)
    entry = rng.uniform(90, 110, count)
    exit_ = entry + rng.normal(0, 2, count)
    entry_ts = pd.Series(pd.date_range(START, periods=count, freq="17min"))
    holding = pd.to_timedelta(rng.integers(1, 3000, count), unit="min")
    return pd.DataFrame({
        "entry_ts": entry_ts, "exit_ts": entry_ts + holding, "holding_time": holding,
        "account_id": "ACC1", "strategy_id": "sma_cross", "symbol": symbol, "side": "LONG", "qty": 10,
        "entry_price": entry, "exit_price": exit_, "realized_pnl_gross": (exit_ - entry) * 10, "fees": 0.5,
        "realized_pnl": (exit_ - entry) * 10 - 0.5, "return_pct": (exit_ / entry - 1), "mae_pct": -0.01,
        "mfe_pct": 0.02,
    })


def report_data(**overrides) -> ReportData:
    data = ReportData(
        run_id="run-42", title="SMA cross backtest", period_start=START, period_end=START + pd.Timedelta(days=90),
        parameters={"fast": "10", "slow": "30", "symbols": "AAPL,MSFT"},
        equity=equity_curve(100_000),
        metrics_by_strategy=pd.DataFrame({"total_return": [0.0421, -0.013], "max_drawdown": [-0.052, float("nan")],
                                          "win_rate": [0.55, None], "sharpe": [1.31, -0.2], "trades": [120, 33]},
                                         index=pd.Index(["sma_cross", "breakout"], name="strategy_id")),
        metrics_by_account=pd.DataFrame({"account_id": ["ACC1"], "realized_pnl": [1234.5], "total_return": [0.012]}),
        monthly_returns=pd.Series([0.01, -0.02, 0.03, 0.015], index=pd.to_datetime(
            ["2024-01-31", "2024-02-29", "2024-03-31", "2025-01-31"], utc=True)),
        trades=trades_frame(40),
        rejects_by_code=pd.DataFrame({"reject_code": ["MAX_OPEN_SYMBOLS", "KILL_SWITCH"], "count": [3, 12],
                                      "account_id": ["ACC1", "ACC2"]}),
    )
    return dataclasses.replace(data, **overrides)


EMPTY = {"equity": pd.DataFrame(), "metrics_by_strategy": pd.DataFrame(), "metrics_by_account": pd.DataFrame(),
         "monthly_returns": pd.Series(dtype=float), "trades": pd.DataFrame(), "rejects_by_code": pd.DataFrame()}


class ChartPaths(HTMLParser):
    """Path data by svg id and path class."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.svg: str | None = None
        self.paths: dict[str, dict[str, str]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "svg":
            self.svg = attributes.get("id")
        elif tag == "path" and self.svg:
            self.paths.setdefault(self.svg, {})[attributes.get("class") or ""] = attributes.get("d") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self.svg = None


def test_sections_charts_and_offline():
    html = render_report(report_data())
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    paths = ChartPaths(html).paths
    assert paths["equity-chart"]["series"].startswith("M")
    assert paths["drawdown-chart"]["area"].endswith("Z")
    assert paths["equity-chart"]["series"].count("L") < MAX_CHART_POINTS
    for needle in ("http://", "https://", "src=", "href=", "url(", "@import"):
        assert needle not in html
    # one inline script (table sorting), allowed by its hash and nothing else
    assert html.count("<script") == 1 and f"script-src 'sha256-{SCRIPT_HASH}'" in html
    assert len(html) < 250_000, "a 100k-point run must stay a small file"


def test_values_are_formatted():
    html = render_report(report_data())
    assert "<th>sma_cross</th>" in html  # metrics are rows, strategies columns
    assert ">4.21%<" in html and ">55.00%<" in html  # fraction metrics as percentages
    assert ">1.31<" in html and ">-0.20<" in html and ">120<" in html  # other numbers as numbers
    assert html.count(">—<") >= 2  # NaN and None
    assert html.index("KILL_SWITCH") < html.index("MAX_OPEN_SYMBOLS")  # rejects by count, largest first
    monthly = html[html.index('id="monthly-table"'):]
    assert "<th>2024</th>" in monthly and "<th>2025</th>" in monthly
    assert ">-2.00%<" in monthly and f">{(1.01 * 0.98 * 1.03 - 1):.2%}<" in monthly  # the year compounds


@pytest.mark.parametrize("monthly", [
    pd.Series([0.01, -0.02], index=pd.period_range("2024-01", periods=2, freq="M")),
    pd.Series([0.01, -0.02], index=["2024-01", "2024-02"]),
    pd.DataFrame({"month": pd.to_datetime(["2024-01-01", "2024-02-01"]), "return": [0.01, -0.02]}),
    pd.DataFrame({"return": [0.01, -0.02]}, index=pd.date_range("2024-01-31", periods=2, freq="ME", tz="UTC")),
], ids=["periods", "strings", "month column", "tz-aware index"])
def test_monthly_returns_accept_the_usual_shapes(monthly):
    html = render_report(report_data(monthly_returns=monthly))
    row = html[html.index("<th>2024</th>"):]
    assert row.index(">1.00%<") < row.index(">-2.00%<") < row.index("—")


@pytest.mark.parametrize("field", ["symbol", "title", "run_id", "parameter", "strategy", "reject_code"])
def test_hostile_strings_are_escaped(field):
    overrides = {
        "symbol": {"trades": trades_frame(3, symbol=HOSTILE)},
        "title": {"title": HOSTILE},
        "run_id": {"run_id": HOSTILE},
        "parameter": {"parameters": {HOSTILE: HOSTILE}},
        "strategy": {"metrics_by_strategy": pd.DataFrame({"trades": [1]}, index=pd.Index([HOSTILE], name="s"))},
        "reject_code": {"rejects_by_code": pd.DataFrame({"reject_code": [HOSTILE], "count": [1]})},
    }[field]
    html = render_report(report_data(**overrides))
    assert HOSTILE not in html and html.count("<script") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_downsampling_keeps_the_extremes_in_time_order():
    curve = equity_curve(100_000)
    curve.loc[31_337, "equity"] = 1e6
    curve.loc[77_777, "equity"] = -1e6
    small = downsample(curve)
    assert len(small) <= MAX_CHART_POINTS
    assert small["equity"].max() == curve["equity"].max() and small["equity"].min() == curve["equity"].min()
    assert small.index[0] == 0 and small.index[-1] == len(curve) - 1
    assert small["ts"].is_monotonic_increasing
    # every bucket's extremes survive, so the local range of any stretch is kept too
    assert small["equity"].iloc[:10].max() == curve["equity"].iloc[:len(curve) * 5 // MAX_CHART_POINTS].max()


@pytest.mark.parametrize("points", [0, 1, MAX_CHART_POINTS])
def test_short_curves_are_not_downsampled(points):
    curve = equity_curve(points)
    assert downsample(curve) is curve


@pytest.mark.parametrize("case", ["all empty", "flat equity", "one point", "no trades"])
def test_degenerate_inputs_render(case):
    overrides = {
        "all empty": EMPTY,
        "flat equity": {"equity": equity_curve(50).assign(equity=100_000.0), "trades": pd.DataFrame()},
        "one point": {"equity": equity_curve(1), "trades": pd.DataFrame(columns=trades_frame(1).columns)},
        "no trades": {"trades": pd.DataFrame(columns=trades_frame(1).columns), "rejects_by_code": pd.DataFrame()},
    }[case]
    html = render_report(report_data(**overrides))
    assert '<p class="empty">No trades.</p>' in html
    for section in SECTIONS:
        assert f'<section id="{section}">' in html
    if case == "all empty":
        assert "No equity data." in html and "No rejects." in html and "No monthly returns." in html
    else:
        assert ChartPaths(html).paths["equity-chart"]["series"].startswith("M")


def test_trade_list_is_capped_with_a_note():
    html = render_report(report_data(trades=trades_frame(MAX_TRADE_ROWS + 123)))
    table = html[html.index('id="trade-table"'):]
    assert table[:table.index("</table>")].count("<tr>") == MAX_TRADE_ROWS + 1  # header row
    assert f"first {MAX_TRADE_ROWS} of {MAX_TRADE_ROWS + 123:,} trades" in html


def test_missing_equity_columns_are_refused():
    with pytest.raises(ValueError, match="equity needs columns"):
        report_data(equity=pd.DataFrame({"time": [START], "value": [1.0]}))


# ---- headless Chromium ----------------------------------------------------------------------

def chromium(*args: str, profile) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian's chromium is not on PATH: `apt-get install -y chromium` "
                    "(python3 scripts/dev.py test installs it when run as root)")
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", f"--user-data-dir={profile}", "--window-size=1280,2000", *args]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The report as Chromium sees it: (serialized DOM, screenshot as RGB array)."""
    tmp = tmp_path_factory.mktemp("report")
    url = write_report(report_data(), tmp / "report.html").resolve().as_uri()
    dom = chromium("--dump-dom", url, profile=tmp / "profile-dom").stdout
    png = tmp / "report.png"
    chromium(f"--screenshot={png}", url, profile=tmp / "profile-shot")
    with Image.open(png) as image:
        return dom, np.asarray(image.convert("RGB"))


def test_chromium_renders_the_charts(rendered):
    dom, _ = rendered
    assert "<h1>SMA cross backtest</h1>" in dom
    paths = ChartPaths(dom).paths
    for svg_id, path_class in [("equity-chart", "series"), ("drawdown-chart", "series"), ("drawdown-chart", "area")]:
        d = paths[svg_id][path_class]
        assert d.startswith("M") and d.count("L") > 100, (svg_id, path_class, d[:80])


def test_chromium_screenshot_is_not_blank(rendered):
    _, pixels = rendered
    assert pixels.shape[:2] == (2000, 1280)
    flat = pixels.reshape(-1, 3)
    assert len(np.unique(flat, axis=0)) > 50, "too few colours: the page looks blank"
    assert (flat.min(axis=1) < 240).mean() > 0.02, "almost every pixel is white"
    blue = (np.abs(flat.astype(int) - SERIES_BLUE).max(axis=1) < 30).sum()
    assert blue > 1000, f"only {blue} pixels in the equity line's colour: the chart was not drawn"


# ---- the issue-15 fixes, one check each -----------------------------------------------------

def two_sessions(points_per_day: int = 390) -> pd.DataFrame:
    """Two trading sessions with a night between (bars of two symbols)."""
    days = [pd.date_range(START + pd.Timedelta(days=d), periods=points_per_day, freq="min") for d in (0, 3)]
    ts = days[0].append(days[1])
    rng = np.random.default_rng(5)
    frames = [pd.DataFrame({"symbol": s, "ts": ts, "close": 100 + rng.normal(0, 0.2, len(ts)).cumsum()})
              for s in ("AAPL", "MSFT")]
    return pd.concat(frames, ignore_index=True)


def round_trips_on(bars: pd.DataFrame) -> pd.DataFrame:
    trades = trades_frame(6)
    aapl = bars[bars.symbol == "AAPL"].reset_index(drop=True)
    picks = aapl.iloc[[10, 50, 300, 420, 500, 700, 720, 760, 770, 775, 778, 779]]
    trades["entry_ts"], trades["exit_ts"] = picks.ts.iloc[::2].to_numpy(), picks.ts.iloc[1::2].to_numpy()
    trades["entry_price"], trades["exit_price"] = picks.close.iloc[::2].to_numpy(), picks.close.iloc[1::2].to_numpy()
    trades["side"] = ["LONG", "SHORT"] * 3
    return trades


def test_small_sample_note_below_twenty_days():
    assert 'id="small-sample"' in render_report(report_data(run_metrics={"days": 5, "cagr": -1.0, "sharpe": -39.0}))
    assert "fewer than 20" in render_report(report_data(run_metrics={"days": 19}))
    assert 'id="small-sample"' not in render_report(report_data(run_metrics={"days": 20}))


def test_durations_read_in_days_and_both_drawdowns_are_labelled():
    metrics = pd.DataFrame({"max_drawdown": [-0.1562], "max_drawdown_duration": [7.0]},
                           index=pd.Index(["ACC1"], name="account_id"))
    html = render_report(report_data(metrics_by_account=metrics,
                                     run_metrics={"max_drawdown": -0.1562, "max_drawdown_duration": 7.0, "days": 30}))
    assert ">7.0 days<" in html and "700.00%" not in html
    stats = html[html.index('id="stats-table"'):html.index("</table>", html.index('id="stats-table"'))]
    assert "Max drawdown (daily)" in stats and "Max drawdown (intraday)" in stats and ">-15.62%<" in stats
    assert "end-of-day equity" in stats and "any equity sample" in stats  # each with its definition
    assert escape(METRIC_DEFINITIONS["max_drawdown_duration"]) in html  # the account table's rows say what they are


def test_holding_times_and_timestamps_in_the_trade_list():
    html = render_report(report_data())
    table = html[html.index('id="trade-table"'):]
    assert "<th>entry_ts</th>" in table and "<th>exit_ts</th>" in table and "<th>holding_time</th>" in table
    assert 'class="sortable"' in table[:200] and "data-v=" in table


def test_the_configuration_is_a_readable_table():
    config = {"fill_at": "open", "slippage_bps": "2", "session_end": None, "set": {"sma_crossover.fast": 10},
              "sweep": {}, "symbols": ["AAA", "BBB"]}
    html = render_report(report_data(config=config))
    table = html[html.index('id="config-table"'):]
    assert "<td>set</td><td>sma_crossover.fast = 10</td>" in table and "<td>symbols</td><td>AAA, BBB</td>" in table
    assert "<td>session_end</td><td>—</td>" in table and "PaperConfig(" not in html


def test_time_axis_starts_at_the_first_bar_and_skips_the_night():
    bars = two_sessions()
    equity = pd.DataFrame({"ts": bars.ts[bars.symbol == "AAPL"], "equity": 100_000.0})
    axis = TradingAxis.of(bars, equity)
    x = axis.fractions(pd.Series(bars.ts[bars.symbol == "AAPL"].to_numpy()))
    assert x[0] == 0 and x[-1] == 1
    # the last minute of day 1 and the first of day 2 are neighbours: three days of night take no width
    assert x[390] - x[389] == pytest.approx(1 / (2 * 390 - 1))
    assert len(axis.day_starts()) == 1 and axis.labels()[0][1].startswith(START.strftime("%m-%d %H:%M"))


def test_price_charts_mark_entries_and_exits_and_equity_has_a_benchmark():
    bars = two_sessions()
    trades = round_trips_on(bars)
    benchmark = pd.DataFrame({"ts": bars.ts[bars.symbol == "AAPL"], "equity": 100_000.0 + np.arange(780)})
    html = render_report(report_data(bars=bars, trades=trades, benchmark=benchmark,
                                     equity=pd.DataFrame({"ts": benchmark.ts, "equity": 100_000.0})))
    chart = html[html.index('id="price-AAPL"'):]
    chart = chart[:chart.index("</svg>")]
    assert chart.count('class="entry up"') == 3 and chart.count('class="entry down"') == 3
    assert chart.count('class="exit"') == 6
    assert 'id="price-MSFT"' in html  # every symbol gets its chart, traded or not
    assert ChartPaths(html).paths["equity-chart"]["benchmark"].startswith("M")


def test_sweep_report_is_a_heatmap_of_the_metric():
    ranking = pd.DataFrame({"rank": [1, 2, 3, 4], "run_id": ["s-2", "s-1", "s-4", "s-3"],
                            "fast": [10, 5, 10, 5], "slow": [21, 21, 50, 50], "sharpe": [1.5, 0.5, -0.2, -1.0]})
    html = render_sweep_report(sweep_id="s", keys=["fast", "slow"], metric="sharpe", ranking=ranking)
    heat = html[html.index('id="heatmap-table"'):html.index("</table>", html.index('id="heatmap-table"'))]
    assert heat.count("<tr>") == 3 and ">1.50<" in heat and ">-1<" in heat and "rgba(26,127,55" in heat
    assert 'id="ranking-table" class="sortable"' in html and html.count("<script") == 1


# ---- headless Chromium: layout and sorting, measured inside the page's own frame ------------

HARNESS = """<!DOCTYPE html><html><body>
<iframe id="report" src="{src}" style="width:1280px;height:900px;border:0"></iframe>
<pre id="out">waiting</pre>
<script>
document.getElementById('report').addEventListener('load', function () {{
  var doc = this.contentDocument, out = {{}};
  out.scrollWidth = doc.documentElement.scrollWidth;
  out.clientWidth = doc.documentElement.clientWidth;
  var table = doc.getElementById('trade-table'), header = table.tHead.rows[0].cells;
  var column = Array.prototype.findIndex.call(header, function (th) {{ return th.textContent === 'realized_pnl'; }});
  header[column].click();
  var pnl = function () {{ return Array.prototype.map.call(table.tBodies[0].rows,
      function (r) {{ return parseFloat(r.cells[column].getAttribute('data-v')); }}); }};
  out.ascending = pnl();
  header[column].click();
  out.descending = pnl();
  document.getElementById('out').textContent = JSON.stringify(out);
}});
</script></body></html>"""


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The report at 1280 px in Chromium (a harness page reads its layout and clicks a column)."""
    import json

    tmp = tmp_path_factory.mktemp("layout")
    bars = two_sessions()
    wide = report_data(
        bars=bars, trades=round_trips_on(bars).assign(account_id="ACCOUNT-WITH-A-LONG-NAME-0001"),
        metrics_by_account=pd.DataFrame({c: [0.1] * 4 for c in METRIC_DEFINITIONS if c not in ("start", "end")},
                                        index=pd.Index([f"ACC-{i}" for i in range(3)] + ["(run)"], name="account_id")),
        config={"symbols": [f"SYMBOL{i:04d}" for i in range(200)]})
    report = write_report(wide, tmp / "report.html")
    harness = tmp / "harness.html"
    harness.write_text(HARNESS.format(src=report.name))
    dom = chromium("--allow-file-access-from-files", "--virtual-time-budget=10000", "--dump-dom",
                   harness.resolve().as_uri(), profile=tmp / "profile").stdout
    text = dom[dom.index('<pre id="out">') + len('<pre id="out">'):dom.index("</pre>")]
    return json.loads(text.replace("&quot;", '"'))


def test_no_horizontal_overflow_at_1280_px(measured):
    assert measured["scrollWidth"] <= measured["clientWidth"] == 1280


def test_trade_list_sorts_by_a_clicked_column(measured):
    assert measured["ascending"] == sorted(measured["ascending"]) and len(measured["ascending"]) == 6
    assert measured["descending"] == sorted(measured["ascending"], reverse=True)
