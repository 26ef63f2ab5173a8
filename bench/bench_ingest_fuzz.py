#!/usr/bin/env python3
"""Fuzzed bars and fills through the real ingesters at scale. Prints JSON.

Records come from tests/ingest_fuzz.py (plausible records from small key
pools, fields swapped for hostile values: NaN/inf, NUL, bad UTF-8, over-long
ids, objects in id fields, 1e-20000, 1e400, subnormals, year 0001, ...). Each
kind is split over its file formats (bars: CSV, Parquet; fills: CSV, JSON
lines, Parquet) and DataFrames handed to the ingester directly, as a live feed
does; files add malformed lines and bytes that are not UTF-8.

Counts are taken from the tables, not the ingesters' reports: `stored` rows
in the history table, `dead_lettered` rows in dead_letter, `duplicates` from
the reports (a duplicate is, by definition, not written).
`lost = read - stored - duplicates - dead_lettered` must be 0, and
`report_mismatch` (the reports against the tables) too. Then every pending
fills for an account added only now (UNKNOWN_ACCOUNT) and a sample of the
other letters are replayed by two replays at once per kind: replay works on
these letters, and inserts none twice. `seconds_ratio_vs_clean`: the hostile run's
time over the time to ingest as many clean records in the same run.

Usage: python bench/bench_ingest_fuzz.py [--records 12000] [--rate 0.08] [--seed 7]
(--records per kind)
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from scratch import scratch_engine  # also puts the project on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import pandas as pd  # noqa: E402
from ingest_fuzz import (ACCOUNTS, BAR_FIELDS, BAR_KINDS, FILL_FIELDS, FILL_KINDS, LATE_ACCOUNT,  # noqa: E402
                         plausible_bar, plausible_fill, records, write_csv, write_jsonl, write_parquet)

from ingest.dlq import pending  # noqa: E402
from ingest.execs import ExecIngester  # noqa: E402
from ingest.feeds import ExecFileFeed, FileFeed  # noqa: E402
from ingest.prices import PriceIngester  # noqa: E402
from ingest.replay import replay  # noqa: E402
from ingest.validation import IngestReport  # noqa: E402
from tradeflow import engine  # noqa: E402
from tradeflow.trading import accounts  # noqa: E402

TABLES = {"price": "price_1m_history", "exec": "exec_report_history"}
FORMATS = {"price": ("csv", "parquet", "frames"), "exec": ("csv", "jsonl", "parquet", "frames")}
CHUNK_ROWS = 1000
REPLAY_SAMPLE = 300  # letters per kind replayed besides the fixable ones: each is one transaction


def table_counts(conn, kind: str) -> tuple[int, int]:
    stored = conn.execute(f"SELECT count(*) FROM {TABLES[kind]}").fetchone()[0]
    letters = conn.execute("SELECT count(*) FROM dead_letter WHERE kind = %s", (kind,)).fetchone()[0]
    return stored, letters


def ingest_format(conn, settings, kind: str, fmt: str, rows: list[dict], directory: Path,
                  rng: random.Random) -> tuple[int, IngestReport]:
    """(records read from the source, the ingester's report)."""
    cls = PriceIngester if kind == "price" else ExecIngester
    fields, kinds = (BAR_FIELDS, BAR_KINDS) if kind == "price" else (FILL_FIELDS, FILL_KINDS)
    ingester = cls(conn, settings, source=f"fuzz-{fmt}")
    path = directory / f"{kind}.{fmt}"
    if fmt == "frames":
        frames = [pd.DataFrame(rows[i:i + CHUNK_ROWS], dtype=object) for i in range(0, len(rows), CHUNK_ROWS)]
        return len(rows), ingester.ingest(frames)
    if fmt == "csv":
        written = write_csv(path, fields, rows, rng)
    elif fmt == "jsonl":
        written = write_jsonl(path, rows, rng)
    else:
        written = write_parquet(path, fields, kinds, rows)
    feed = FileFeed(path, chunk_rows=CHUNK_ROWS) if kind == "price" else ExecFileFeed(path, chunk_rows=CHUNK_ROWS)
    return written, ingester.ingest(feed.batches())


def concurrent_replay(settings, kind: str, ids: list[str]) -> dict[str, object]:
    results, errors = [], []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            with engine.connect(settings) as own:
                start.wait()
                results.append(replay(own, settings, kind=kind, ids=ids))
        except Exception as err:  # reported in the JSON
            errors.append(repr(err))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    totals = Counter()
    for result in results:
        totals.update({k: v for k, v in result.items() if isinstance(v, int)})
    return {**dict(totals), "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=12_000, help="records per kind")
    parser.add_argument("--rate", type=float, default=0.08, help="chance that a field is swapped for a hostile value")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    out: dict[str, object] = {"records_per_kind": args.records, "rate": args.rate, "seed": args.seed}

    with scratch_engine() as (settings, conn), tempfile.TemporaryDirectory() as tmp:
        for account_id in ACCOUNTS:
            accounts.add(conn, account_id, capital="100000")
        directory = Path(tmp)
        totals = Counter()
        for kind in ("price", "exec"):
            rows = records(kind, args.records, rng, args.rate)
            formats = FORMATS[kind]
            share = len(rows) // len(formats)
            per_format, reasons, report_totals = {}, Counter(), Counter()
            read = duplicates = 0
            exceptions: list[str] = []
            started = time.perf_counter()
            for n, fmt in enumerate(formats):
                part = rows[n * share:] if n == len(formats) - 1 else rows[n * share:(n + 1) * share]
                try:
                    written, report = ingest_format(conn, settings, kind, fmt, part, directory, rng)
                except Exception as err:  # must not happen: reported, and counted as lost below
                    exceptions.append(f"{fmt}: {err!r}")
                    written, report = len(part), IngestReport()
                per_format[fmt] = {"read": written, **{k: v for k, v in report.as_dict().items()
                                                        if k != "rejected_by_reason"}}
                read += written
                duplicates += report.duplicates
                reasons.update(report.reasons)
                report_totals.update(inserted=report.inserted, rejected=report.rejected)
            seconds = time.perf_counter() - started
            stored, dead_lettered = table_counts(conn, kind)
            lost = read - stored - duplicates - dead_lettered
            out[kind] = {
                "read": read, "stored": stored, "duplicates": duplicates, "dead_lettered": dead_lettered, "lost": lost,
                "report_mismatch": (report_totals["inserted"] - stored) + (report_totals["rejected"] - dead_lettered),
                "exceptions": exceptions, "by_format": per_format,
                "dead_lettered_by_reason": dict(reasons.most_common()),
                "seconds": round(seconds, 2),
            }
            totals.update(read=read, stored=stored, duplicates=duplicates, dead_lettered=dead_lettered, lost=lost)

        # Baseline in the same run: as many clean records, straight to the ingesters as DataFrames.
        for kind in ("price", "exec"):
            make = plausible_bar if kind == "price" else plausible_fill
            clean = [make(rng) for _ in range(args.records)]
            cls = PriceIngester if kind == "price" else ExecIngester
            started = time.perf_counter()
            cls(conn, settings, source="clean").ingest(
                pd.DataFrame(clean[i:i + CHUNK_ROWS], dtype=object) for i in range(0, len(clean), CHUNK_ROWS))
            clean_seconds = time.perf_counter() - started
            out[kind]["clean_seconds"] = round(clean_seconds, 2)
            out[kind]["seconds_ratio_vs_clean"] = round(out[kind]["seconds"] / clean_seconds, 2)

        out["total"] = dict(totals)
        out["replay"] = {}
        accounts.add(conn, LATE_ACCOUNT, capital="100000")
        for kind in ("price", "exec"):
            letters = pending(conn, kind=kind)
            fixed = [letter.dlq_id for letter in letters if letter.reason_code == "UNKNOWN_ACCOUNT"]
            others = [letter.dlq_id for letter in letters if letter.reason_code != "UNKNOWN_ACCOUNT"]
            ids = fixed + rng.sample(others, min(REPLAY_SAMPLE, len(others)))
            out["replay"][kind] = {"letters": len(ids), "unknown_account_letters": len(fixed),
                                   **concurrent_replay(settings, kind, ids),
                                   "still_pending": len(pending(conn, kind=kind, ids=ids))}
        fills, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (order_id, fill_id)) FROM exec_report_history"
            " WHERE source = 'dlq-replay'").fetchone()
        out["replay"]["exec_rows_inserted_twice"] = fills - distinct
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
