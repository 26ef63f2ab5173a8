"""Hostile input never loses a record: each one is stored, counted as a
duplicate or dead-lettered with a reason and a payload jsonb accepts, and a
bad record never takes its batch with it. Real files, real embedded
PostgreSQL; concurrent replays run in two threads with their own connections."""
from __future__ import annotations

import dataclasses
import json
import threading
from datetime import datetime, timezone
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ingest.dlq import pending
from ingest.execs import ExecIngester
from ingest.feeds import ExecFileFeed, FileFeed
from ingest.prices import PriceIngester
from ingest.replay import replay
from ingest.validation import MAX_TEXT_LENGTH
from tradeflow import engine
from tradeflow.cli import app
from tradeflow.reasons import ReasonCode
from tradeflow.trading import accounts

NOW = datetime(2024, 3, 1, 21, 0, tzinfo=timezone.utc)


def bar(minute: int = 0, **changes: object) -> dict[str, object]:
    record = {"symbol": "AAA", "ts": f"2024-03-01T14:{30 + minute:02d}:00Z", "open": "10.0", "high": "10.5",
              "low": "9.5", "close": "10.2", "volume": "1000"}
    return {**record, **changes}


def fill(number: int = 0, **changes: object) -> dict[str, object]:
    record = {"account_id": "ACC1", "strategy_id": "s1", "order_id": f"O{number}", "fill_id": "F1",
              "symbol": "AAA", "side": "BUY", "fill_qty": "10", "fill_price": "10.25", "fee": "0",
              "venue": "XNAS", "exec_ts": "2024-03-01T14:30:00Z"}
    return {**record, **changes}


@pytest.fixture
def account(conn):
    return accounts.add(conn, "ACC1", capital="100000")


def ingester(kind: str, conn, settings):
    cls = PriceIngester if kind == "price" else ExecIngester
    return cls(conn, settings, source="test", clock=lambda: NOW)


def letters(conn, kind: str) -> list[tuple[str, str, object]]:
    """(field, reason_code, payload) of the stored dead letters; the payload came back through jsonb."""
    return conn.execute("SELECT field, reason_code, payload FROM dead_letter WHERE kind = %s ORDER BY received_at",
                        (kind,)).fetchall()


def balanced(report) -> bool:
    return report.read == report.inserted + report.duplicates + report.rejected


PRICE_CASES = [
    (bar(symbol="AA\x00A"), "symbol", ReasonCode.NUL_CHARACTER),
    (bar(symbol="S" * 9000), "symbol", ReasonCode.TEXT_TOO_LONG),
    (bar(symbol="AA\udc80"), "symbol", ReasonCode.INVALID_ENCODING),
    (bar(symbol={"ticker": "AAA"}), "symbol", ReasonCode.NOT_TEXT),
    (bar(symbol=["AAA"]), "symbol", ReasonCode.NOT_TEXT),
    (bar(symbol=1.5), "symbol", ReasonCode.NOT_TEXT),
    (bar(ts="0001-01-01T00:00:00Z"), "ts", ReasonCode.TIMESTAMP_OUT_OF_RANGE),
    (bar(ts="1969-12-31T23:59:00Z"), "ts", ReasonCode.TIMESTAMP_OUT_OF_RANGE),
    (bar(ts={"at": 1}), "ts", ReasonCode.UNPARSEABLE_TIMESTAMP),
    (bar(high=float("inf")), "high", ReasonCode.NON_FINITE),
    (bar(low="-Infinity"), "low", ReasonCode.NON_FINITE),
    (bar(high="1e400"), "high", ReasonCode.OUT_OF_RANGE),
    (bar(close="1e-20000"), "close", ReasonCode.OUT_OF_RANGE),
    (bar(volume="1e-20000"), "volume", ReasonCode.OUT_OF_RANGE),
    (bar(volume="1e-30"), "volume", ReasonCode.OUT_OF_RANGE),
    (bar(open="4.94e-324", low="4.94e-324"), "open", ReasonCode.PRICE_TOO_SMALL),
    (bar(open="1e-13", high="1e-13", low="1e-13", close="1e-13"), "open", ReasonCode.PRICE_TOO_SMALL),
    (bar(volume=True), "volume", ReasonCode.NOT_A_NUMBER),
]

EXEC_CASES = [
    (fill(order_id="O" * 20000), "order_id", ReasonCode.TEXT_TOO_LONG),
    (fill(account_id="AC\x00C1"), "account_id", ReasonCode.NUL_CHARACTER),
    (fill(venue="X\udcffX"), "venue", ReasonCode.INVALID_ENCODING),
    (fill(order_id={"id": 7}), "order_id", ReasonCode.NOT_TEXT),
    (fill(fill_id=["F1"]), "fill_id", ReasonCode.NOT_TEXT),
    (fill(strategy_id=False), "strategy_id", ReasonCode.NOT_TEXT),
    (fill(fill_qty="1e-20000"), "fill_qty", ReasonCode.OUT_OF_RANGE),
    (fill(fill_qty="1e400"), "fill_qty", ReasonCode.OUT_OF_RANGE),
    (fill(fill_price="4.94e-324"), "fill_price", ReasonCode.OUT_OF_RANGE),
    (fill(fill_price="1e-13"), "fill_price", ReasonCode.PRICE_TOO_SMALL),
    (fill(fill_qty=float("-inf")), "fill_qty", ReasonCode.NON_FINITE),
    (fill(exec_ts="0001-01-01T00:00:00Z"), "exec_ts", ReasonCode.TIMESTAMP_OUT_OF_RANGE),
    (fill(exec_ts=["2024-03-01"]), "exec_ts", ReasonCode.UNPARSEABLE_TIMESTAMP),
    # +14:00 takes year 1 back to year 0, which Python's datetime cannot hold
    (fill(exec_ts="0001-01-01T00:00:00+14:00"), "exec_ts", ReasonCode.TIMESTAMP_OUT_OF_RANGE),
]


@pytest.mark.parametrize(("kind", "record", "field", "code"),
                         [("price", *case) for case in PRICE_CASES] + [("exec", *case) for case in EXEC_CASES],
                         ids=lambda value: None)
def test_a_hostile_record_is_dead_lettered_alone(conn, embedded_settings, account, kind, record, field, code):
    good = [bar(1), bar(2)] if kind == "price" else [fill(1), fill(2)]
    report = ingester(kind, conn, embedded_settings).ingest(
        [pd.DataFrame([good[0], record, good[1]], dtype=object)])
    assert (report.inserted, report.rejected, dict(report.reasons)) == (2, 1, {str(code): 1})
    [(stored_field, stored_code, stored_payload)] = letters(conn, kind)
    assert (stored_field, stored_code) == (field, str(code))
    assert set(stored_payload) == set(record)


@pytest.mark.parametrize("kind", ["price", "exec"])
def test_undecodable_text_in_a_large_batch_costs_its_record_only(conn, embedded_settings, account, kind):
    """From 50 values on pandas caches timestamp parses in an index that would
    infer Arrow strings, which cannot hold undecodable bytes: the batch must survive."""
    if kind == "price":
        records = [bar(i % 30, symbol=f"S{i // 30}") for i in range(120)] + [bar(close="1\udc80", ts="2024\udc80")]
    else:
        records = [fill(i) for i in range(120)] + [fill(999, exec_ts="2024\udc80", fill_qty="1\udc80")]
    report = ingester(kind, conn, embedded_settings).ingest([pd.DataFrame(records, dtype=object)])
    assert (report.read, report.inserted, report.rejected) == (121, 120, 1)


def test_payload_keeps_the_raw_text_escaped_and_non_finite_numbers_as_strings(conn, embedded_settings):
    records = [bar(symbol="AB\x00C\\"), bar(1, symbol=b"\xffAB"), bar(2, high=float("inf")),
               bar(3, symbol={"nested": "x\x00"})]
    ingester("price", conn, embedded_settings).ingest([pd.DataFrame(records, dtype=object)])
    payloads = [payload for _, _, payload in letters(conn, "price")]
    assert [p["symbol"] for p in payloads] == [
        {"escaped": "AB\\x00C\\\\"}, {"escaped": "\\xffAB"}, "AAA", {"nested": {"escaped": "x\\x00"}}]
    assert payloads[2]["high"] == "inf"


def test_ids_may_be_integers_and_are_stored_as_their_digits(conn, embedded_settings, account):
    report = ingester("exec", conn, embedded_settings).ingest([pd.DataFrame([fill(order_id=12345, fill_id=7)],
                                                                             dtype=object)])
    assert report.inserted == 1
    assert conn.execute("SELECT order_id, fill_id FROM exec_report_history").fetchone() == ("12345", "7")


def test_the_longest_accepted_ids_fit_the_indexes(conn, embedded_settings, account):
    """MAX_TEXT_LENGTH four-byte characters in every indexed text column: the btree rows still fit."""
    longest = "\U0001F600" * MAX_TEXT_LENGTH
    report = ingester("exec", conn, embedded_settings).ingest([pd.DataFrame(
        [fill(strategy_id=longest, order_id=longest, fill_id=longest, symbol=longest)], dtype=object)])
    assert (report.inserted, report.rejected) == (1, 0)
    report = ingester("price", conn, embedded_settings).ingest([pd.DataFrame([bar(symbol=longest)], dtype=object)])
    assert (report.inserted, report.rejected) == (1, 0)


@pytest.mark.parametrize("kind", ["price", "exec"])
def test_a_row_the_database_refuses_costs_only_that_row(conn, embedded_settings, account, kind):
    """A refusal validation cannot foresee (here a CHECK constraint) is dead-lettered alone;
    with 3-row statements, the statements before and after the refused one are all kept."""
    table, column = ("price_1m_history", "symbol") if kind == "price" else ("exec_report_history", "order_id")
    records = [bar(i, symbol="REFUSED" if i == 4 else "AAA") for i in range(10)] if kind == "price" else \
        [fill(i, order_id="REFUSED" if i == 4 else f"O{i}") for i in range(10)]
    settings = dataclasses.replace(embedded_settings, ingest_batch_rows=3)
    conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT refuse_for_test CHECK ({column} <> 'REFUSED') NOT VALID")
    try:
        report = ingester(kind, conn, settings).ingest([pd.DataFrame(records, dtype=object)])
    finally:
        conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT refuse_for_test")
    assert (report.read, report.inserted, report.rejected) == (10, 9, 1)
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 9
    [(field, code, payload)] = letters(conn, kind)
    assert (field, code, payload[column]) == ("record", "DATABASE_REFUSED", "REFUSED")


def test_bar_files_in_every_format_lose_nothing(conn, embedded_settings, tmp_path):
    csv = tmp_path / "bars.csv"
    csv.write_bytes(b"ts,symbol,open,high,low,close,volume\n"
                    b"2024-03-01T14:30:00Z,AAA,10,11,9,10,100\n"
                    b"2024-03-01T14:31:00Z,A\xffA,10,11,9,10,100\n"       # not UTF-8
                    b"2024-03-01T14:32:00Z,A\x00A,10,11,9,10,100\n"       # NUL
                    b"2024-03-01T14:33:00Z,AAA,10,11,9,10,100,extra\n"    # more cells than the header
                    b"2024-03-01T14:34:00Z,AAA,10,11,9,10,100\n")
    parquet = tmp_path / "bars.parquet"
    pq.write_table(pa.table({
        "ts": ["2024-03-01T14:35:00Z", "2024-03-01T14:36:00Z", "2024-03-01T14:37:00Z", "2024-03-01T14:38:00Z"],
        "symbol": ["AAA"] * 4, "open": [10.0] * 4, "high": [11.0, float("inf"), float("nan"), None],
        "low": [9.0] * 4, "close": [10.0] * 4, "volume": [1, 2, 3, 4]}), parquet)
    price = ingester("price", conn, embedded_settings)
    report = price.ingest(FileFeed(csv, chunk_rows=2).batches())
    report.add(price.ingest(FileFeed(parquet).batches()))
    assert (report.read, report.inserted, report.rejected) == (9, 3, 6)
    assert sorted((field, code) for field, code, _ in letters(conn, "price")) == [
        ("high", "MISSING_FIELD"), ("high", "NON_FINITE"), ("high", "NON_FINITE"), ("record", "MALFORMED_RECORD"),
        ("symbol", "INVALID_ENCODING"), ("symbol", "NUL_CHARACTER")]
    malformed = next(payload for _, code, payload in letters(conn, "price") if code == "MALFORMED_RECORD")
    assert malformed["_raw"] == "2024-03-01T14:33:00Z,AAA,10,11,9,10,100,extra"
    assert sorted(p["high"] for _, c, p in letters(conn, "price") if c == "NON_FINITE") == ["inf", "nan"]


def test_a_bad_json_line_costs_that_line_only(conn, embedded_settings, account, tmp_path):
    path = tmp_path / "fills.jsonl"
    # The first line starts with a byte-order mark.
    lines = [b"\xef\xbb\xbf" + json.dumps(fill(1)).encode(), b"{not json", b"[1, 2]",
             b'{"order_id": "O\xff", "fill_id": "F"}',
             json.dumps(fill(2, order_id="O\xff")).encode().replace(b"\\u00ff", b"\xff"),
             json.dumps(fill(3, fill_qty=1e-300)).encode().replace(b"1e-300", b"1e-20000"),
             b"[" * 100_000, json.dumps(fill(4)).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = ingester("exec", conn, embedded_settings).ingest(ExecFileFeed(path, chunk_rows=3).batches())
    assert (report.read, report.inserted, report.rejected) == (8, 2, 6)
    codes = sorted(code for _, code, _ in letters(conn, "exec"))
    assert codes == ["INVALID_ENCODING"] + ["MALFORMED_RECORD"] * 3 + ["MISSING_FIELD", "OUT_OF_RANGE"]
    raw = {p["_raw"] for _, c, p in letters(conn, "exec") if c == "MALFORMED_RECORD"}
    assert raw == {"[" * 100_000, "[1, 2]", "{not json"}


def test_csv_without_the_ohlcv_columns_is_one_clear_line(tmp_path):
    path = tmp_path / "bars.csv"
    path.write_text("ts,symbol,price\n2024-03-01T14:30:00Z,AAA,10\n")
    result = CliRunner().invoke(app, ["ingest", "prices", str(path)])
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: ") and "missing required columns: open, high, low, volume" in line
    assert "Traceback" not in result.output


def test_new_letters_replay_once_fixed(conn, embedded_settings):
    ingester("price", conn, embedded_settings).ingest([pd.DataFrame([bar(symbol="AA\x00A")], dtype=object)])
    [letter] = pending(conn, kind="price")
    # Unfixed, the escaped value is an object: refused again, not stored with its escapes.
    outcome = replay(conn, embedded_settings, kind="price")
    assert outcome["rejected"] == 1 and "NOT_TEXT" in outcome["still_rejected"][0]["reason"]
    result = CliRunner().invoke(app, ["dlq", "replay", letter.dlq_id, "--set", "symbol=AAA"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"replayed": 1, "inserted": 1, "still_rejected": []}
    assert conn.execute("SELECT symbol FROM price_1m_history").fetchall() == [("AAA",)]


def test_concurrent_replays_of_the_same_letters_insert_each_once(conn, embedded_settings):
    records = [fill(i, account_id="LATE") for i in range(60)]
    ingester("exec", conn, embedded_settings).ingest([pd.DataFrame(records, dtype=object)])
    ids = [letter.dlq_id for letter in pending(conn, kind="exec")]
    assert len(ids) == 60
    accounts.add(conn, "LATE", capital="1000")
    start = threading.Barrier(2)
    results: list[dict] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with engine.connect(embedded_settings) as own:
                start.wait()
                results.append(replay(own, embedded_settings, kind="exec", ids=ids))
        except BaseException as err:  # surfaced below: a thread's exception would otherwise vanish
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(result.get("inserted", 0) for result in results) == 60
    assert sum(result.get("duplicate", 0) for result in results) == 0
    rows = conn.execute("SELECT count(*), count(DISTINCT (order_id, fill_id)) FROM exec_report_history").fetchone()
    assert rows == (60, 60)
    outcomes = conn.execute("SELECT count(*), count(DISTINCT dlq_id) FROM dead_letter_replay").fetchone()
    assert outcomes == (60, 60)
    assert pending(conn, kind="exec") == []
    assert conn.execute("SELECT sum(fill_qty) FROM exec_report_history").fetchone()[0] == Decimal(600)


def test_parquet_ids_of_other_types(conn, embedded_settings, account, tmp_path):
    """Binary ids are decoded (bytes that are not UTF-8 refused), integer ids with nulls stay integers
    (7, not '7.0'), a struct is not an id."""
    path = tmp_path / "fills.parquet"
    base = {name: [value] * 4 for name, value in fill().items() if name not in ("order_id", "fill_id", "venue")}
    pq.write_table(pa.table({
        **base,
        "order_id": pa.array([b"O1", b"O\xff", b"O3", b"O4"], pa.binary()),
        "fill_id": pa.array([7, 8, None, 9], pa.int64()),
        "venue": pa.array([{"mic": "XNAS"}, {"mic": "X"}, {"mic": "X"}, None], pa.struct([("mic", pa.string())])),
    }), path)
    report = ingester("exec", conn, embedded_settings).ingest(ExecFileFeed(path).batches())
    assert (report.read, report.inserted, report.rejected) == (4, 1, 3)
    assert conn.execute("SELECT order_id, fill_id, venue FROM exec_report_history").fetchall() == [("O4", "9", "")]
    assert sorted((field, code) for field, code, _ in letters(conn, "exec")) == [
        ("fill_id", "MISSING_FIELD"), ("order_id", "INVALID_ENCODING"), ("venue", "NOT_TEXT")]
