"""Execution-report ingest against the embedded engine: validation, exact
Decimals, idempotent re-sends, conflicting fills (dead letter + risk event),
files through the CLI, accounts, and replay after an account is added."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ingest.dlq import pending
from ingest.execs import EXEC_FIELDS, ExecIngester, Fill
from ingest.feeds import ExecFileFeed, FeedError
from ingest.replay import replay
from tradeflow.cli import app
from tradeflow.reasons import ReasonCode
from tradeflow.trading import accounts

NOW = datetime(2024, 3, 1, 21, 0, tzinfo=timezone.utc)
runner = CliRunner()


def fill(**changes: str) -> dict[str, str]:
    record = {"account_id": "ACC1", "strategy_id": "sma_crossover", "order_id": "O1", "fill_id": "F1",
              "symbol": "AAA", "side": "BUY", "fill_qty": "100", "fill_price": "10.25", "fee": "1.5",
              "venue": "XNAS", "exec_ts": "2024-03-01T14:30:00.123456Z"}
    return {**record, **changes}


def without(name: str) -> dict[str, str]:
    return {k: v for k, v in fill().items() if k != name}


def ingest(conn, settings, records):
    ingester = ExecIngester(conn, settings, source="test", clock=lambda: NOW)
    return ingester.ingest([pd.DataFrame(records, dtype=object)])


def one(conn, query: str):
    return conn.execute(query).fetchone()


def invoke(*args: str, code: int = 0, **env: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "200", **env})
    assert result.exit_code == code, result.output
    return result.output


def counts(output: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"\{.*?\"rejected_by_reason\".*?\}\s*\}", output, re.S)]


@pytest.fixture
def account(conn):
    return accounts.add(conn, "ACC1", capital="100000")


def test_valid_fills_are_stored_with_signed_quantities(conn, embedded_settings, account):
    report = ingest(conn, embedded_settings, [fill(), fill(fill_id="F2", side="sell", fill_qty="40")])
    assert report.as_dict() == {"read": 2, "inserted": 2, "duplicates": 0, "rejected": 0, "rejected_by_reason": {}}
    rows = conn.execute("SELECT fill_id, side, signed_qty, fee, venue, exec_ts FROM stg_execs"
                        " ORDER BY fill_id").fetchall()
    ts = datetime(2024, 3, 1, 14, 30, 0, 123456, tzinfo=timezone.utc)
    assert rows == [("F1", "BUY", Decimal("100"), Decimal("1.5"), "XNAS", ts),
                    ("F2", "SELL", Decimal("-40"), Decimal("1.5"), "XNAS", ts)]


def test_optional_fee_and_venue_default_and_a_timestamp_without_offset_is_utc(conn, embedded_settings, account):
    record = {**without("venue"), "fee": " ", "exec_ts": "2024-03-01 14:30:00"}
    assert ingest(conn, embedded_settings, [record]).inserted == 1
    assert one(conn, "SELECT fee, venue, exec_ts FROM stg_execs") == (
        Decimal(0), "", datetime(2024, 3, 1, 14, 30, tzinfo=timezone.utc))


@pytest.mark.parametrize(("record", "field", "code"), [
    *[(fill(**{name: ""}), name, ReasonCode.MISSING_FIELD)
      for name in ("account_id", "strategy_id", "order_id", "fill_id", "symbol", "side", "fill_qty", "fill_price",
                   "exec_ts")],
    (without("fill_id"), "fill_id", ReasonCode.MISSING_FIELD),
    (fill(exec_ts="after lunch"), "exec_ts", ReasonCode.UNPARSEABLE_TIMESTAMP),
    (fill(exec_ts="2024-03-01T21:06:00Z"), "exec_ts", ReasonCode.FUTURE_TIMESTAMP),
    (fill(fill_qty="ten"), "fill_qty", ReasonCode.NOT_A_NUMBER),
    (fill(fee="1,5"), "fee", ReasonCode.NOT_A_NUMBER),
    (fill(fill_price="Infinity"), "fill_price", ReasonCode.NON_FINITE),
    (fill(fill_qty="NaN"), "fill_qty", ReasonCode.NON_FINITE),
    (fill(fee="-inf"), "fee", ReasonCode.NON_FINITE),
    (fill(fill_qty="1e200000"), "fill_qty", ReasonCode.OUT_OF_RANGE),
    (fill(fill_price="1.00000000000000000000000000001"), "fill_price", ReasonCode.OUT_OF_RANGE),
    (fill(fill_qty="0"), "fill_qty", ReasonCode.NON_POSITIVE_QUANTITY),
    (fill(fill_qty="-5"), "fill_qty", ReasonCode.NON_POSITIVE_QUANTITY),
    (fill(fill_price="0.00"), "fill_price", ReasonCode.NON_POSITIVE_PRICE),
    (fill(fee="-0.01"), "fee", ReasonCode.NEGATIVE_FEE),
    (fill(side="HOLD"), "side", ReasonCode.UNKNOWN_SIDE),
    (fill(account_id="NOPE"), "account_id", ReasonCode.UNKNOWN_ACCOUNT),
    # first failing rule wins
    (fill(fill_qty="-1", side="HOLD", account_id="NOPE"), "fill_qty", ReasonCode.NON_POSITIVE_QUANTITY),
])
def test_bad_record_goes_to_dead_letter_with_payload_field_and_reason(conn, embedded_settings, account,
                                                                      record, field, code):
    good = [fill(fill_id=f"G{i}") for i in range(3)]
    report = ingest(conn, embedded_settings, good + [record])
    assert (report.read, report.inserted, report.rejected) == (4, 3, 1)
    assert report.reasons == {str(code): 1}
    [letter] = pending(conn, kind="exec")
    assert (letter.field, letter.reason_code) == (field, str(code))
    assert letter.payload == {**{k: None for k in EXEC_FIELDS}, **record}
    assert field in letter.reason
    assert one(conn, "SELECT count(*) FROM stg_execs") == (3,)


def test_resent_fills_are_duplicates_never_double_counted(conn, embedded_settings, account):
    records = [fill(fill_id=f"F{i}", fill_qty=str(10 * i), fee="0.5") for i in range(1, 4)]
    ingest(conn, embedded_settings, records)
    # the same fills again, one spelled differently but equal, plus a copy within the chunk
    resent = records + [fill(fill_id="F1", fill_qty="10.000", fee="0.50"), records[2]]
    report = ingest(conn, embedded_settings, resent)
    assert (report.inserted, report.duplicates, report.rejected) == (0, 5, 0)
    assert one(conn, "SELECT count(*) FROM exec_report_history") == (3,)
    assert one(conn, "SELECT count(*), sum(signed_qty), sum(fee) FROM stg_execs") == (3, Decimal(60), Decimal("1.5"))


def test_conflicting_fill_is_dead_lettered_and_raises_one_risk_event(conn, embedded_settings, account):
    ingest(conn, embedded_settings, [fill()])
    conflicting = fill(fill_qty="90", fee="1.5000")
    report = ingest(conn, embedded_settings, [conflicting])
    assert (report.inserted, report.duplicates, report.rejected) == (0, 0, 1)
    assert report.reasons == {"CONFLICTING_DUPLICATE": 1}
    [letter] = pending(conn, kind="exec")
    assert (letter.field, letter.reason_code) == ("fill_id", "CONFLICTING_DUPLICATE")
    assert "fill_qty 100" in letter.reason and "fill_qty 90" in letter.reason and "fee" not in letter.reason
    assert conn.execute("SELECT event_id, account_id, symbol, rule, severity, ts, source FROM risk_events").fetchall() \
        == [(letter.dlq_id, "ACC1", "AAA", "CONFLICTING_FILL", "HIGH", NOW, "test")]
    assert one(conn, "SELECT count(*), sum(fill_qty) FROM stg_execs") == (1, Decimal(100))
    # the same conflicting file again: still refused, no second alarm, listed once
    assert ingest(conn, embedded_settings, [conflicting]).rejected == 1
    assert one(conn, "SELECT count(*) FROM risk_events") == (1,)
    assert len(pending(conn, kind="exec")) == 1


def test_conflict_within_one_chunk_keeps_the_first_copy(conn, embedded_settings, account):
    report = ingest(conn, embedded_settings, [fill(), fill(side="SELL")])
    assert (report.inserted, report.rejected) == (1, 1)
    [letter] = pending(conn, kind="exec")
    assert "came earlier in this batch with side BUY; this copy has side SELL" in letter.reason
    assert one(conn, "SELECT side FROM stg_execs") == ("BUY",)
    assert one(conn, "SELECT count(*) FROM risk_events") == (1,)


def test_numbers_are_stored_exactly(conn, embedded_settings, account):
    price = "123.4567890123456789012345678"  # 28 digits: far beyond a float, the most RisingWave keeps
    ingest(conn, embedded_settings, [fill(fill_id="F1", fill_qty="0.1", fill_price=price),
                                     fill(fill_id="F2", fill_qty="0.2", fill_price=price)])
    assert one(conn, "SELECT sum(fill_qty), min(fill_price)::text FROM stg_execs") == (Decimal("0.3"), price)
    assert one(conn, "SELECT sum(fill_qty) = 0.3 FROM exec_report_history") == (True,)


def test_python_api_takes_fill_messages(conn, embedded_settings, account):
    ts = datetime(2024, 3, 1, 15, 0, tzinfo=timezone.utc)
    message = Fill(account_id="ACC1", strategy_id="s", order_id="O9", fill_id="1", symbol="AAA", side="buy",
                   fill_qty=Decimal("0.1"), fill_price=Decimal("10"), exec_ts=ts)
    report = ExecIngester(conn, embedded_settings, source="adapter", clock=lambda: NOW).ingest_fills(
        [message, message, Fill(**{**{f: getattr(message, f) for f in EXEC_FIELDS},
                                   "fill_id": "2", "fill_qty": Decimal("NaN")})])
    assert (report.inserted, report.duplicates, report.rejected) == (1, 1, 1)
    assert report.reasons == {"NON_FINITE": 1}
    assert one(conn, "SELECT side, fill_qty, fee, venue, exec_ts FROM stg_execs") == (
        "BUY", Decimal("0.1"), Decimal(0), "", ts)
    [letter] = pending(conn, kind="exec")
    assert letter.payload["fill_qty"] == "NaN" and letter.payload["exec_ts"] == ts.isoformat()


def test_jsonl_csv_and_parquet_files_through_the_cli(conn, embedded_settings, account, tmp_path):
    jsonl = tmp_path / "fills.jsonl"
    jsonl.write_text(
        '{"account_id": "ACC1", "strategy_id": "s", "order_id": "J1", "fill_id": 1, "symbol": "AAA",'
        ' "side": "BUY", "fill_qty": 0.1, "fill_price": 10.10, "exec_ts": "2024-03-01T14:30:00Z", "note": "x"}\n'
        '\n'
        '{"account_id": "ACC1", "strategy_id": "s", "order_id": "J1", "fill_id": 2, "symbol": "AAA",'
        ' "side": "SELL", "fill_qty": NaN, "fill_price": 10.2, "exec_ts": "2024-03-01T14:31:00Z"}\n')
    csv = tmp_path / "fills.csv"
    csv.write_text("account_id,strategy_id,order_id,fill_id,symbol,side,fill_qty,fill_price,fee,venue,exec_ts\n"
                   "ACC1,s,C1,1,BBB,buy,0.2,20.5,,,2024-03-01T14:32:00Z\n"
                   "ACC1,s,C1,2,BBB,SELL,0.2,20.6,0.01,XNYS,2024-03-01T14:33:00Z\n")
    parquet = tmp_path / "fills.parquet"
    pq.write_table(pa.table({
        "account_id": ["ACC1"], "strategy_id": ["s"], "order_id": ["P1"], "fill_id": ["1"], "symbol": ["CCC"],
        "side": ["BUY"], "fill_qty": pa.array([Decimal("0.30")], pa.decimal128(10, 2)), "fill_price": [30.1],
        "exec_ts": pa.array([datetime(2024, 3, 1, 14, 34, tzinfo=timezone.utc)], pa.timestamp("us", "UTC")),
    }), parquet)
    reports = counts(invoke("ingest", "execs", str(jsonl), str(csv), str(parquet)))
    assert reports == [
        {"read": 2, "inserted": 1, "duplicates": 0, "rejected": 1, "rejected_by_reason": {"NON_FINITE": 1}},
        {"read": 2, "inserted": 2, "duplicates": 0, "rejected": 0, "rejected_by_reason": {}},
        {"read": 1, "inserted": 1, "duplicates": 0, "rejected": 0, "rejected_by_reason": {}},
    ]
    assert conn.execute("SELECT order_id, fill_id, side, fill_qty, fill_price, fee, venue FROM stg_execs"
                        " ORDER BY order_id, fill_id").fetchall() == [
        ("C1", "1", "BUY", Decimal("0.2"), Decimal("20.5"), Decimal(0), ""),
        ("C1", "2", "SELL", Decimal("0.2"), Decimal("20.6"), Decimal("0.01"), "XNYS"),
        ("J1", "1", "BUY", Decimal("0.1"), Decimal("10.10"), Decimal(0), ""),
        ("P1", "1", "BUY", Decimal("0.30"), Decimal("30.1"), Decimal(0), ""),
    ]
    [letter] = json.loads(invoke("dlq", "list", "--kind", "exec", "--json"))
    assert (letter["field"], letter["payload"]["fill_qty"], letter["payload"]["fill_id"]) == ("fill_qty", "NaN", "2")
    assert counts(invoke("ingest", "execs", str(csv)))[0]["duplicates"] == 2


def test_exec_files_must_have_the_required_columns(tmp_path):
    csv = tmp_path / "fills.csv"
    csv.write_text("account_id,order_id\nACC1,O1\n")
    with pytest.raises(FeedError, match="missing required columns: strategy_id, fill_id"):
        ExecFileFeed(csv)


def test_accounts_add_set_status_and_list(conn, embedded_settings):
    invoke("accounts", "add", "ACC7", "--capital", "250000", "--currency", "eur", "--max-leverage", "1.5",
           TRADEFLOW_OPERATOR="alice")
    assert "ACC7: BLOCKED" in invoke("accounts", "set-status", "ACC7", "blocked", TRADEFLOW_OPERATOR="bob")
    assert conn.execute("SELECT status, updated_by FROM accounts ORDER BY updated_at").fetchall() == [
        ("ACTIVE", "alice"), ("BLOCKED", "bob")]
    assert one(conn, "SELECT account_id, base_currency, initial_capital, status, max_leverage, updated_by"
                     " FROM stg_accounts") == ("ACC7", "EUR", Decimal(250000), "BLOCKED", Decimal("1.5"), "bob")
    invoke("accounts", "set-status", "ACC7", "BLOCKED")  # unchanged: no new version
    assert one(conn, "SELECT count(*) FROM accounts") == (2,)
    table = invoke("accounts", "list")
    assert re.search(r"ACC7\s.*BLOCKED\s.*EUR\s.*250,000\.00\s.*1\.50\s.*bob", table)


@pytest.mark.parametrize(("args", "message"), [
    (["add", "A", "--capital", "0"], "capital: must be a finite number greater than 0"),
    (["add", "A", "--capital", "lots"], "capital: 'lots' is not a number"),
    (["add", "A", "--capital", "1000", "--max-leverage", "-1"], "max_leverage: must be"),
    (["add", "A", "--capital", "1000", "--status", "OPEN"], "status: 'OPEN' is not one of ACTIVE, BLOCKED"),
    (["add", "A", "--capital", "1000", "--currency", "dollars"], "currency:"),
    (["add", "ACC1", "--capital", "1000"], "ACC1 already exists"),
    (["set-status", "NOPE", "BLOCKED"], "NOPE does not exist"),
])
def test_account_changes_are_validated(conn, embedded_settings, account, args, message):
    output = invoke("accounts", *args, code=2)
    assert message in " ".join(output.split())
    assert one(conn, "SELECT count(*) FROM accounts") == (1,)


def test_replay_after_the_account_is_added(conn, embedded_settings, account):
    report = ingest(conn, embedded_settings, [fill(account_id="ACC2"), fill(fill_id="F2", fill_qty="-1")])
    assert report.reasons == {"UNKNOWN_ACCOUNT": 1, "NON_POSITIVE_QUANTITY": 1}
    invoke("accounts", "add", "ACC2", "--capital", "5000")
    outcome = json.loads(invoke("dlq", "replay", "--kind", "exec"))
    assert (outcome["inserted"], outcome["rejected"]) == (1, 1)
    assert "NON_POSITIVE_QUANTITY" in outcome["still_rejected"][0]["reason"]
    assert one(conn, "SELECT account_id, fill_qty FROM stg_execs") == ("ACC2", Decimal(100))
    assert [letter.field for letter in pending(conn, kind="exec")] == ["fill_qty"]


def test_replaying_a_conflict_keeps_it_pending_without_a_second_alarm(conn, embedded_settings, account):
    ingest(conn, embedded_settings, [fill()])
    ingest(conn, embedded_settings, [fill(fill_price="10.30")])
    outcome = replay(conn, embedded_settings, kind="exec")
    assert outcome["rejected"] == 1 and "CONFLICTING_DUPLICATE" in outcome["still_rejected"][0]["reason"]
    assert one(conn, "SELECT count(*) FROM risk_events") == (1,)
    # the operator decides the stored fill was right: replay the resent copy as it was
    outcome = replay(conn, embedded_settings, kind="exec", overrides={"fill_price": "10.25"})
    assert outcome["duplicate"] == 1 and pending(conn, kind="exec") == []
