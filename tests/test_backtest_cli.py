"""`tradeflow backtest` = the Python API: the NautilusTrader comparison from flags alone, config files,
sweeps (a point equals the single run) and walk-forward."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from ingest.instruments import InstrumentIngester
from tradeflow import engine
from tradeflow.cli import app
from tradeflow.research.backtest import Backtest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench_peers
from nautilus_sma import expected_trades, synthetic_bars

# bench_peers' run (sma_crossover 5/21, 100 shares long-only, fill at the signal bar's close, 1 bp fees rounded
# to the cent, no slippage or volume cap, DAY orders until midnight), as docs/backtest.md shows it
PEERS_FLAGS = [
    "--from", "2024-01-02", "--to", "2024-01-05", "--synthetic", "3", "--seed", "7",
    "--strategies", "sma_crossover", "--set", "sma_crossover.fast=5", "--set", "sma_crossover.slow=21",
    "--set", "sma_crossover.fixed_qty=100", "--set", "pnl_method=average_cost",
    "--accounts", "PEER:1000000000000", "--max-leverage", "4", "--policy", "max_open_symbols=100000",
    "--policy", "allow_scale_in=false", "--policy", "sell_requires_long=true",
    "--fill-at", "signal_close", "--fee-bps", "1", "--fee-rounding", "nearest", "--slippage-bps", "0",
    "--fee-per-share", "0", "--min-fee", "0", "--max-participation", "1", "--session-end", "none",
]
FILL_COLUMNS = "symbol, side, fill_qty, fill_price, fee, exec_ts, order_id, fill_id"


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def fills(settings, run_id: str) -> list[tuple]:
    with engine.connect(settings) as conn:
        return conn.execute(f"SELECT {FILL_COLUMNS} FROM backtest_fills WHERE run_id = %s"
                            " ORDER BY exec_ts, symbol, order_id, fill_id", (run_id,)).fetchall()


def rows(settings, table: str, columns: str, run_id: str) -> list[tuple]:
    with engine.connect(settings) as conn:
        return conn.execute(f"SELECT {columns} FROM {table} WHERE run_id = %s ORDER BY 1", (run_id,)).fetchall()


def test_the_nautilus_comparison_runs_from_flags_alone(engine_settings):
    invoke("backtest", *PEERS_FLAGS, "--run-id", "peers-cli")
    bars = synthetic_bars(3, 3, 7)  # bench_peers' bars: the same generator, start and seed
    Backtest(engine_settings, model_vars=bench_peers.model_vars(engine_settings.project_dir)).run(
        bench_peers.spec_for(bars, None), bars, run_id="peers-api")
    cli, api = fills(engine_settings, "peers-cli"), fills(engine_settings, "peers-api")
    assert len(cli) > 20 and cli == api  # row by row: time, symbol, side, qty, price, fee, ids
    # and both against the pandas reference bench_peers checks NautilusTrader with
    frame = pd.DataFrame(cli, columns=[c.strip() for c in FILL_COLUMNS.split(",")])
    trades = pd.DataFrame({"ts": pd.to_datetime(frame.exec_ts, utc=True) - pd.Timedelta(minutes=1),
                           "symbol": frame.symbol, "side": frame.side, "qty": frame.fill_qty.astype(float),
                           "price": frame.fill_price.astype(float), "fee": frame.fee.astype(float)})
    assert bench_peers.diff_trades(trades, expected_trades(bars, 5, 21, 100, 1), ("tradeflow", "reference"))["equal"]


def test_docs_show_the_peer_command():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "backtest.md").read_text()
    shown = " ".join(doc.split("<!-- peers -->")[1].replace("\\\n", " ").split())
    for flag in PEERS_FLAGS[4:]:  # the period and bars are the reader's
        assert flag in shown, flag


def test_yaml_and_toml_config_files_run_the_same_backtest(engine_settings, tmp_path):
    (tmp_path / "run.yaml").write_text("from: 2024-01-02\nto: 2024-01-03\nsynthetic: 2\nstrategies: [sma_crossover]\n"
                                       "fee-bps: 1\nsession_end: '20:00'\npolicy: {max_open_symbols: 1}\n")
    (tmp_path / "run.toml").write_text('from = "2024-01-02"\nto = "2024-01-03"\nsynthetic = 2\n'
                                       'strategies = ["sma_crossover"]\nfee-bps = 1\nsession_end = "20:00"\n'
                                       "policy = {max_open_symbols = 1}\n")
    out_yaml = invoke("backtest", "--config", str(tmp_path / "run.yaml"), "--report", str(tmp_path / "y.html"))
    out_toml = invoke("backtest", "--config", str(tmp_path / "run.toml"))
    run_id = out_yaml.split("run ", 1)[1].split(":", 1)[0]
    assert f"run {run_id}:" in out_toml  # same inputs, same run
    with engine.connect(engine_settings) as conn:
        config = conn.execute("SELECT config FROM backtest_runs WHERE run_id = %s", (run_id,)).fetchone()[0]
    assert config["fee_bps"] == 1 and config["session_end"] == "20:00" and config["policy"] == {"max_open_symbols": 1}
    html = (tmp_path / "y.html").read_text()
    assert 'id="config-table"' in html and "<td>session_end</td><td>20:00</td>" in html


@pytest.fixture
def sym0001_in_lots_of_25(embedded_settings):
    """An instruments row in the main schema for the test (backtests copy them), none after it."""
    with engine.connect(embedded_settings) as conn:
        InstrumentIngester(conn, embedded_settings, source="test").ingest_frame(pd.DataFrame(
            [("SYM0001", "equity", "TECH", "software", "USD", "25", "0.05", "XNYS", "true", "standard")],
            columns=["symbol", "asset_class", "sector", "industry", "currency", "lot_size", "tick_size", "calendar",
                     "shortable", "margin_class"], dtype=object))
    yield embedded_settings
    with engine.connect(embedded_settings) as conn:
        conn.execute("TRUNCATE instruments")


def test_a_sweep_point_is_the_single_run_and_the_grid_is_ranked(sym0001_in_lots_of_25, tmp_path):
    engine_settings = sym0001_in_lots_of_25  # every point trades SYM0001 in lots of 25, as the single runs
    common = ["--from", "2024-01-02", "--to", "2024-01-03", "--synthetic", "3", "--strategies", "sma_crossover"]
    invoke("backtest", *common, "--run-id", "single")
    invoke("backtest", *common, "--set", "sma_crossover.fast=10", "--slippage-bps", "10", "--run-id", "single-last")
    out = invoke("backtest", *common, "--sweep", "sma_crossover.fast=5,10", "--sweep", "slippage_bps=2,10",
                 "--rank-by", "total_return", "--run-id", "grid", "--report", str(tmp_path / "sweep.html"))
    assert "ranked by total_return" in out
    with engine.connect(engine_settings) as conn:
        ranking = conn.execute("SELECT ranking FROM backtest_sweeps WHERE sweep_id = 'grid'").fetchone()[0]
        points = {r["run_id"]: (r["sma_crossover.fast"], r["slippage_bps"]) for r in ranking}
        stored = conn.execute("SELECT run_id, config FROM backtest_runs WHERE run_id LIKE 'grid-%%'").fetchall()
    assert sorted(points.values()) == [(5, 2), (5, 10), (10, 2), (10, 10)]
    returns = [r["total_return"] for r in ranking]
    assert returns == sorted(returns, reverse=True) and [r["rank"] for r in ranking] == [1, 2, 3, 4]
    default_point = next(run_id for run_id, point in points.items() if point == (5, 2))
    last_point = next(run_id for run_id, point in points.items() if point == (10, 10))
    assert (default_point, last_point) == ("grid-1", "grid-4")  # the first point, and one stored after the others
    # the variant is the strategy: the point's round trips, matches (what a sweep run keeps) and metrics (from the
    # views, as the single run's from the same views stored) are the single run's
    for table, columns, least in (("backtest_trades", ("trade_id, entry_ts, exit_ts, qty, entry_price, exit_price,"
                                                       " realized_pnl"), 5),
                                  ("backtest_matches", "match_id, matched_qty, realized_pnl, match_ts", 5),
                                  ("backtest_metrics", "scope || ':' || key, metrics", 3)):
        for point, single in ((default_point, "single"), (last_point, "single-last")):
            assert len(rows(engine_settings, table, columns, single)) >= least
            assert rows(engine_settings, table, columns, point) == rows(engine_settings, table, columns, single)
    with engine.connect(engine_settings) as conn:
        lots = conn.execute("SELECT qty % 25 FROM backtest_trades WHERE run_id = 'grid-4' AND symbol = 'SYM0001'")
        assert {remainder for (remainder,) in lots} == {0}
    configs = dict(stored)
    assert configs[default_point]["sweep"] == {} and configs[default_point]["set"] == {"sma_crossover.fast": 5}
    assert configs[default_point]["outputs"] == "full"  # the stored config repeats the point in full
    html = (tmp_path / "sweep.html").read_text()
    assert 'id="heatmap"' in html and html.count("<tr>") >= 4 + 3


def test_walk_forward_reports_the_out_of_sample_run_of_each_in_sample_winner(engine_settings):
    out = invoke("backtest", "--from", "2024-01-02", "--to", "2024-01-06", "--synthetic", "2", "--strategies",
                 "sma_crossover", "--sweep", "sma_crossover.fast=5,10", "--sweep", "slippage_bps=2,10",
                 "--walk-forward", "2:1", "--run-id", "wf")
    assert "walk-forward" in out
    with engine.connect(engine_settings) as conn:
        windows = conn.execute("SELECT walk_forward FROM backtest_sweeps WHERE sweep_id = 'wf'").fetchone()[0]
        periods = dict(conn.execute("SELECT run_id, (period_start, period_end) FROM backtest_runs"
                                    " WHERE run_id LIKE 'wf-w%%-oos'").fetchall())
    assert [w["window"] for w in windows] == [1, 2]  # 4 trading days: train 2, test 1, step 1
    for window in windows:
        assert window["run_id"] in periods
        assert window["train"].split(" → ")[1] == window["test"].split(" → ")[0]  # test follows train


@pytest.mark.parametrize(("flags", "message"), [
    (["--fee-bps", "lots"], "fee_bps"),
    (["--set", "sma_crossover"], "--set"),
    (["--sweep", "nope.fast=1,2"], "nope"),
    (["--fill-at", "lunch"], "fill_at"),
])
def test_bad_flags_are_refused_naming_the_field(flags, message):
    result = CliRunner().invoke(app, ["backtest", "--from", "2024-01-02", "--to", "2024-01-03", "--synthetic", "1",
                                      *flags])
    assert result.exit_code != 0 and message in result.output
