"""Hostile bars and fills for the ingest fuzz test and bench/bench_ingest_fuzz.py.

Records are mostly plausible, drawn from small key pools so exact re-sends and
conflicting duplicates happen, with any field swapped for a value from the
NASTY pools (what the fault audit found, and more) at the given rate. File
writers put the same records into CSV, JSON lines and Parquet, adding what
only a file can hold: bytes that are not UTF-8, malformed lines and rows.
"""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BAR_FIELDS = ("symbol", "ts", "open", "high", "low", "close", "volume")
FILL_FIELDS = ("account_id", "strategy_id", "order_id", "fill_id", "symbol", "side", "fill_qty", "fill_price", "fee",
               "venue", "exec_ts")
ACCOUNTS = ("ACC1", "ACC2")
# Fills for an account that is added only later: refused as UNKNOWN_ACCOUNT, then replayed.
LATE_ACCOUNT = "ACC3"

NASTY_TEXT = ("", "   ", "A\x00B", "AB\udc80", "\ud800X", "S" * 9000, "O" * 20000, "\U0001F600" * 129, "\\x00",
              "a,\"b\"\nc", {"id": 7}, ["x", {"y": "\x00"}], 1.5, True, None, 12345, 2 ** 70, b"\xff\xfe")
NASTY_NUMBER = ("nan", "NaN", "inf", "-Infinity", "1e400", "1e-20000", "4.94e-324", "1e-13", "0", "-1", "1e15",
                "9" * 40, "1.00000000000000000000000000001", "1e99999999999999999999", "abc", "", "1,5", " 10 ",
                None, float("inf"), float("-inf"), float("nan"), 5e-324, 1e308, -0.0, {"v": 1}, [1], True)
NASTY_TS = ("0001-01-01T00:00:00Z", "1969-12-31T23:59:00Z", "2200-01-01T00:00:00Z", "9999-12-31T23:59:00Z",
            "2024-03-01T14:30:30Z", "2100-01-01T00:00:00Z", "2024-13-01T00:00:00Z", "not a time", "", None,
            {"t": 1}, 1709303400, "2024-03-01T14:30:00\x00Z")
NASTY = {"text": NASTY_TEXT, "number": NASTY_NUMBER, "ts": NASTY_TS}
BAR_KINDS = {"symbol": "text", "ts": "ts", "open": "number", "high": "number", "low": "number", "close": "number",
             "volume": "number"}
FILL_KINDS = {**{name: "text" for name in ("account_id", "strategy_id", "order_id", "fill_id", "symbol", "side",
                                           "venue")},
              "fill_qty": "number", "fill_price": "number", "fee": "number", "exec_ts": "ts"}


def plausible_bar(rng: random.Random) -> dict[str, object]:
    symbol, minute = rng.choice(("AAA", "BBB", "CCC")), rng.randrange(120)
    # Values follow from the key, so most re-sends are exact; one in ten conflicts.
    mid = 10 + minute / 10 + (0.05 if rng.random() < 0.1 else 0)
    return {"symbol": symbol, "ts": f"2024-03-01T{13 + minute // 60:02d}:{minute % 60:02d}:00Z",
            "open": f"{mid:.2f}", "high": f"{mid + 0.5:.2f}", "low": f"{mid - 0.5:.2f}", "close": f"{mid + 0.1:.2f}",
            "volume": str(100 + minute)}


def plausible_fill(rng: random.Random) -> dict[str, object]:
    order, fill = rng.randrange(400), rng.randrange(3)
    qty = 10 + order % 7 + (1 if rng.random() < 0.1 else 0)
    account = LATE_ACCOUNT if order % 25 == 0 else ACCOUNTS[order % 2]
    return {"account_id": account, "strategy_id": "s1", "order_id": f"O{order}", "fill_id": f"F{fill}",
            "symbol": "AAA", "side": ("BUY", "SELL")[order % 2], "fill_qty": str(qty),
            "fill_price": f"{10 + order / 100:.2f}", "fee": "0.5", "venue": "XNAS",
            "exec_ts": f"2024-03-01T14:{order % 60:02d}:{fill:02d}.5Z"}


def spoil(record: dict[str, object], kinds: dict[str, str], rng: random.Random, rate: float) -> dict[str, object]:
    """Each field swapped for a nasty value of its kind (or, rarely, of another kind) with probability `rate`."""
    spoiled = dict(record)
    for name, kind in kinds.items():
        if rng.random() < rate:
            pool = NASTY[kind] if rng.random() < 0.8 else NASTY[rng.choice(tuple(NASTY))]
            spoiled[name] = rng.choice(pool)
    if rng.random() < rate / 4:
        del spoiled[rng.choice(tuple(kinds))]
    return spoiled


def records(kind: str, n: int, rng: random.Random, rate: float = 0.08) -> list[dict[str, object]]:
    make, kinds = (plausible_bar, BAR_KINDS) if kind == "price" else (plausible_fill, FILL_KINDS)
    return [spoil(make(rng), kinds, rng, rate) for _ in range(n)]


# -- files -----------------------------------------------------------------------------------------------------------

def _text(value: object) -> str:
    """A value as a CSV cell: what a spreadsheet export would write."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")  # written back as the raw bytes by _encode
    try:
        return str(value)
    except ValueError:  # an integer too long to print
        return "9" * 5000


def write_csv(path: Path, fields: tuple[str, ...], rows: list[dict[str, object]], rng: random.Random) -> int:
    """Returns the number of records written: one per row, plus malformed rows and bare invalid bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    count = 0
    for row in rows:
        cells = [_text(row.get(name)) for name in fields]
        if rng.random() < 0.02:
            cells.append("one cell too many")
        writer.writerow(cells)
        count += 1
    # A few rows with a byte that is not UTF-8 outside any value's own spoiling.
    lines = [_encode(line) for line in buffer.getvalue().split("\n")]
    for i in range(1, len(lines) - 1):
        if rng.random() < 0.01:
            lines[i] = lines[i].replace(b",", b"\xff,", 1)
    path.write_bytes(b"\n".join(lines))
    return count


def _encode(text: str) -> bytes:
    """UTF-8, except that surrogateescape's stand-ins become the raw bytes they stand for and other
    lone surrogates their (invalid) three-byte form: what a broken exporter writes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"".join(bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF else c.encode("utf-8", "surrogatepass")
                        for c in text)


def write_jsonl(path: Path, rows: list[dict[str, object]], rng: random.Random) -> int:
    lines = []
    for row in rows:
        line = json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=True).encode()
        roll = rng.random()
        if roll < 0.01:
            line = line[: len(line) // 2]  # truncated: not JSON
        elif roll < 0.02:
            line = line.replace(b'"', b'\xff"', 1)  # a byte that is not UTF-8 outside a string
        elif roll < 0.025:
            line = b"[" * 50_000
        lines.append(line)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def _json_value(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("latin-1")  # JSON has no bytes: as text
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return float(value)
    return value


def write_parquet(path: Path, fields: tuple[str, ...], kinds: dict[str, str], rows: list[dict[str, object]]) -> int:
    """Parquet columns have one type: text as strings (NUL kept; what Arrow cannot hold becomes null),
    numbers as doubles (inf, NaN, subnormals kept; text that is no float becomes null)."""
    columns = {}
    for name in fields:
        values = [row.get(name) for row in rows]
        if kinds[name] == "number":
            columns[name] = pa.array([_as_float(v) for v in values], pa.float64())
        else:
            columns[name] = pa.array([_as_arrow_text(v) for v in values], pa.string())
    pq.write_table(pa.table(columns), path)
    return len(rows)


def _as_float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _as_arrow_text(value: object) -> str | None:
    if value is None or isinstance(value, (dict, list, bytes)):
        return None
    text = _text(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text
