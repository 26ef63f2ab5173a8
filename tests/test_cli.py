"""The `tradeflow` command end to end, in-process, against the test engine."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tradeflow.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def counts(output: str) -> dict:
    return json.loads(re.search(r"\{.*?\"rejected_by_reason\".*?\}\s*\}", output, re.S)[0])


@pytest.fixture
def prices_csv(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text(
        "Date,Ticker,O,H,L,C,Vol\n"
        "2024-01-02T14:30:00Z,ACME,10,11,9.5,10.5,100\n"
        "2024-01-02T14:31:00Z,ACME,10.5,11,10,10.8,120\n"
        "2024-01-02T14:32:00Z,ACME,10.8,10.0,10.9,10.8,80\n"  # high below low
    )
    return path


def test_engine_url_and_status(embedded_settings):
    url = invoke("engine", "url").strip()
    assert re.fullmatch(r"postgresql://postgres@127\.0\.0\.1:\d+/tradeflow\?options=-c%20search_path%3Dtradeflow%2Cpublic", url)
    assert "running" in invoke("engine", "status")


def test_ingest_file_reports_counts_and_dead_letters(embedded_settings, prices_csv):
    report = counts(invoke("ingest", "prices", str(prices_csv), "--map", "symbol=Ticker"))
    assert report == {"read": 3, "inserted": 2, "duplicates": 0, "rejected": 1,
                      "rejected_by_reason": {"HIGH_BELOW_LOW": 1}}
    assert counts(invoke("ingest", "prices", str(prices_csv)))["duplicates"] == 2
    [letter] = json.loads(invoke("dlq", "list", "--json"))
    assert (letter["reason_code"], letter["field"]) == ("HIGH_BELOW_LOW", "high")
    assert letter["payload"] == {"symbol": "ACME", "ts": "2024-01-02T14:32:00Z", "open": "10.8", "high": "10.0",
                                 "low": "10.9", "close": "10.8", "volume": "80"}


def test_dlq_replay_with_a_fix(embedded_settings, prices_csv):
    invoke("ingest", "prices", str(prices_csv))
    outcome = json.loads(invoke("dlq", "replay", "--set", "high=11", "--set", "low=10.5"))
    assert outcome["inserted"] == 1
    assert json.loads(invoke("dlq", "list", "--json")) == []


def test_dead_lettered_instruments_are_listed_and_replayed(embedded_settings, tmp_path):
    path = tmp_path / "instruments.csv"
    path.write_text("symbol,asset_class,sector,industry,currency,lot_size,tick_size,calendar,shortable,margin_class\n"
                    "AAA,equity,TECH,software,USD,1,0.01,XNYS,true,standard\n"
                    "BBB,equity,TECH,hardware,USD,0,0.05,XNYS,true,standard\n")  # a lot size of 0
    invoke("ingest", "instruments", str(path))
    [letter] = json.loads(invoke("dlq", "list", "--kind", "instrument", "--json"))
    assert (letter["field"], letter["reason_code"]) == ("lot_size", "NON_POSITIVE_STEP")
    outcome = json.loads(invoke("dlq", "replay", "--kind", "instrument", "--set", "lot_size=10"))
    assert outcome["inserted"] == 1
    assert json.loads(invoke("dlq", "list", "--kind", "instrument", "--json")) == []


def test_show_indicators_and_signals_after_synthetic_ingest(embedded_settings):
    report = counts(invoke("ingest", "synthetic", "--symbols", "2", "--days", "1", "--seed", "3"))
    assert report["inserted"] == 2 * 390
    table = invoke("show", "indicators", "--timeframe", "5m")
    assert "SYM0000" in table and "SYM0001" in table
    assert "signals per strategy" in invoke("show", "signals")


def test_reason_code_doc_is_generated_from_the_enum():
    table = invoke("reasons")
    doc = (Path(__file__).parents[1] / "docs" / "reason-codes.md").read_text()
    assert "| `CONFLICTING_DUPLICATE` |" in table
    assert doc.endswith(table), "docs/reason-codes.md is stale: regenerate it with `tradeflow reasons`"


def test_demo_runs_the_whole_loop(embedded_settings):
    output = invoke("demo", "--symbols", "3")
    for table in ("accounts", "strategies", "rejects by code", "risk events"):
        assert table in output
    assert "ACC-GROWTH" in output and "decisions" in output
    assert not re.search(r"\b(DEBUG|INFO|WARNING|ERROR)\b", output), "log lines at the default level"


def test_manual_order_is_queued_decided_by_the_gate_and_weights_print(embedded_settings, prices_csv):
    invoke("ingest", "prices", str(prices_csv))
    invoke("accounts", "add", "M1", "--capital", "100000")
    queued = invoke("orders", "submit", "M1", "ACME", "BUY", "10", "--reason", "hedge", "--wait", "0")
    request_id = re.search(r"order request (\w+) queued", queued)[1]
    assert "decided 1 signal(s)" in invoke("gate", "run", "--once", "--max-signal-age", "1e9")
    listed = invoke("orders", "list")
    assert "M1" in listed and "ACME" in listed
    refused = runner.invoke(app, ["orders", "submit", "M1", "ACME", "HOLD", "10"], env={"COLUMNS": "200"})
    assert refused.exit_code == 2 and "side" in refused.output
    weights = invoke("weights", "--show")
    assert "sma_crossover" in weights and "1.0" in weights  # equal weights until the scoreboard moves them
    assert request_id in invoke("trace", f"manual:{request_id}")


def fails(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "80"})
    return result.exit_code, result.output


def test_version_short_help_and_help_at_80_columns():
    assert re.fullmatch(r"tradeflow \S+\n", invoke("--version"))
    assert "Usage: " in invoke("-h") and "--version" in invoke("-h")
    code, text = fails("policy", "set", "-h")
    assert code == 0
    for option in ("--max-concentration-pct", "--reservation-ttl-seconds", "--no-sell-requires-long"):
        assert option in text  # whole, not cut at 80 columns
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("args, valid", [
    (("--log-level", "LOUD", "reasons"), "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    (("show", "indicators", "--timeframe", "5min"), "'1m', '5m', '15m', '1h'"),
    (("policy", "kill-switch", "A", "maybe"), "'on', 'off'"),
    (("orders", "submit", "A", "AAA", "BUY", "1", "--tif", "FOK"), "'DAY', 'GTC', 'IOC'"),
    (("adapter", "run", "--broker", "ib"), "not one of paper, alpaca-paper, alpaca, ccxt:<exchange id>"),
])
def test_invalid_choices_are_one_error_listing_the_valid_values(args, valid):
    code, text = fails(*args)
    assert code == 2 and valid in text and "Traceback" not in text


def test_every_listing_command_prints_json(embedded_settings, prices_csv):
    invoke("ingest", "prices", str(prices_csv), "--map", "symbol=Ticker")
    invoke("accounts", "add", "J1", "--capital", "50000")
    invoke("policy", "set", "J1", "--max-open-symbols", "4")
    invoke("orders", "submit", "J1", "ACME", "BUY", "10", "--wait", "0")
    invoke("gate", "run", "--once", "--max-signal-age", "1e9")
    [order] = json.loads(invoke("orders", "list", "--json"))
    assert order["account_id"] == "J1" and order["qty"] == "10"
    outputs = {args: json.loads(invoke(*args, "--json")) for args in (
        ("positions",), ("pnl",), ("orders", "list"), ("show", "indicators"), ("show", "signals"),
        ("trace", order["client_order_id"]), ("accounts", "list"), ("policy", "show", "J1"), ("policy", "list"),
        ("dlq", "list"))}
    assert outputs[("policy", "show", "J1")]["max_open_symbols"] == 4
    assert [p["account_id"] for p in outputs[("policy", "list")]] == ["J1"]
    assert outputs[("accounts", "list")][0]["capital"] == "50000"
    assert set(outputs[("pnl",)]) == {"realized", "portfolio"}
    assert outputs[("trace", order["client_order_id"])]["steps"]["decision"][0]["outcome"] == "ACCEPTED"
    assert outputs[("dlq", "list")][0]["reason_code"] == "HIGH_BELOW_LOW"
    header, row = invoke("accounts", "list", "--csv").splitlines()
    assert header.startswith("account_id,status,currency,capital") and row.startswith("J1,ACTIVE,USD,50000")


def test_policy_show_of_an_unknown_account_is_an_error(embedded_settings):
    code, text = fails("policy", "show", "NOPE")
    assert code == 2 and "NOPE does not exist" in text


def test_gate_says_it_started_and_how_many_signals_were_too_old(embedded_settings):
    invoke("ingest", "synthetic", "--symbols", "2", "--days", "1", "--seed", "3")  # history: every bar is old
    output = invoke("gate", "run", "--once")
    assert "gate started: target embedded, schema tradeflow" in output
    stale = re.search(r"WARNING tradeflow\.daemon: (\d+) undecided signal\(s\) skipped as stale", output)
    assert stale and int(stale[1]) > 0, output
    assert "gate alive: 0 decided" in output and "decided 0 signal(s)" in output
    assert len(output.splitlines()) == len(set(output.splitlines())), "a line printed twice"


@pytest.mark.parametrize("name, content, named", [
    ("nohead.csv", b"a,b,c\n1,2,3\n", "expected symbol, ts, open, high, low, close, volume"),
    ("broken.parquet", b"garbage", "not a readable Parquet file"),
])
def test_a_file_level_problem_is_one_line_and_exit_2(embedded_settings, tmp_path, name, content, named):
    (tmp_path / name).write_bytes(content)
    code, text = fails("ingest", "prices", str(tmp_path / name))
    assert code == 2 and named in text and name in text and len(text.strip().splitlines()) == 1, text


def test_bad_records_are_dead_lettered_and_the_rest_ingested(embedded_settings, tmp_path):
    import pandas as pd
    from test_feeds import corrupt_first_row_group

    rows = [[f"2024-01-02T14:3{i}:00Z", "ACME", "10", "11", "9", "10", "100"] for i in range(4)]
    frame = pd.DataFrame(rows, columns=["ts", "symbol", "open", "high", "low", "close", "volume"])
    frame.to_parquet(tmp_path / "bars.parquet", row_group_size=2)
    report = counts(invoke("ingest", "prices", str(corrupt_first_row_group(tmp_path / "bars.parquet"))))
    assert (report["inserted"], report["rejected_by_reason"]) == (2, {"MALFORMED_RECORD": 1})
    fills = tmp_path / "fills.jsonl"
    fills.write_text('{"account_id": "A1"\nnot json at all\n')
    report = counts(invoke("ingest", "execs", str(fills)))
    assert report["rejected_by_reason"] == {"MALFORMED_RECORD": 2}
    letters = {letter["kind"]: letter for letter in json.loads(invoke("dlq", "list", "--json"))}
    assert "row group 0" in letters["price"]["reason"]
    raw = [letter["payload"] for letter in json.loads(invoke("dlq", "list", "--kind", "exec", "--json"))]
    assert {"not json at all"} <= {str(value) for payload in raw for value in payload.values()}, raw
