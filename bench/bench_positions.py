#!/usr/bin/env python3
"""Benchmark of the position views on the embedded engine. Prints JSON.

* throughput: fills/s through the exec ingester and a full read of the
  position views (rollup, lots, realized, matches, portfolio).
* new_fill_cost: for one (account, strategy, symbol) key that already has
  1k, 10k and 100k fills, the time to ingest one more fill and read that
  key's rollup, lots and realized P&L (median of repeats), with the ratio to
  the smallest history: what "the cost of a new fill grows with history" means
  on an engine that computes views on read.

Usage: python bench/bench_positions.py [--histories 1000,10000,100000] [--throughput-fills 20000]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from scratch import scratch_engine  # also puts the project on sys.path

from ingest.execs import ExecIngester, Fill  # noqa: E402
from tradeflow.trading import accounts  # noqa: E402

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc)
KEY_READS = (
    "SELECT * FROM open_positions_rollup WHERE account_id = %(a)s AND strategy_id = %(s)s AND symbol = %(y)s",
    "SELECT * FROM open_positions_lots WHERE account_id = %(a)s AND strategy_id = %(s)s AND symbol = %(y)s",
    "SELECT * FROM realized_pnl_latest WHERE account_id = %(a)s AND strategy_id = %(s)s AND symbol = %(y)s",
)


def random_fills(n: int, *, symbol: str, strategy: str, start: int, rng: random.Random) -> list[Fill]:
    fills, position = [], 0
    for i in range(n):
        # drift back towards flat so positions cycle long/short like a real book
        side = "SELL" if rng.random() < 0.5 + max(-0.3, min(0.3, position / 2000)) else "BUY"
        qty = rng.randint(1, 100)
        position += qty if side == "BUY" else -qty
        fills.append(Fill(account_id="ACC1", strategy_id=strategy, order_id=f"{symbol}-{strategy}-{start + i}",
                          fill_id="1", symbol=symbol, side=side, fill_qty=Decimal(qty),
                          fill_price=Decimal(rng.randint(9000, 11000)) / 100, fee=Decimal("0.35"),
                          venue="BENCH", exec_ts=T0 + timedelta(seconds=start + i)))
    return fills


def bench_throughput(conn, settings, n: int) -> dict:
    rng = random.Random(1)
    fills = [f for k in range(50) for f in random_fills(n // 50, symbol=f"S{k:02d}", strategy="T", start=0, rng=rng)]
    started = time.perf_counter()
    report = ExecIngester(conn, settings, source="bench").ingest_fills(fills)
    ingest_s = time.perf_counter() - started
    assert report.inserted == len(fills), report.as_dict()
    started = time.perf_counter()
    for relation in ("open_positions_rollup", "open_positions_lots", "realized_pnl_latest",
                     "trade_match_history", "portfolio_state"):
        conn.execute(f"COPY (SELECT * FROM {relation}) TO '/dev/null'")
    read_s = time.perf_counter() - started
    return {"fills": len(fills), "keys": 50, "ingest_seconds": round(ingest_s, 3), "views_seconds": round(read_s, 3),
            "fills_per_second_ingest": round(len(fills) / ingest_s),
            "fills_per_second_through_views": round(len(fills) / (ingest_s + read_s))}


def bench_new_fill(conn, settings, history: int, repeats: int = 7) -> dict:
    conn.execute("TRUNCATE exec_report_history")
    rng = random.Random(history)
    strategy = f"H{history}"
    ingester = ExecIngester(conn, settings, source="bench")
    ingester.ingest_fills(random_fills(history, symbol="KEY", strategy=strategy, start=0, rng=rng))
    # other keys in the same tables, as in a real book
    ingester.ingest_fills(random_fills(5_000, symbol="OTHER", strategy=strategy, start=0, rng=rng))
    conn.execute("ANALYZE exec_report_history")
    params = {"a": "ACC1", "s": strategy, "y": "KEY"}
    timings = []
    for r in range(repeats):
        [fill] = random_fills(1, symbol="KEY", strategy=strategy, start=history + r, rng=rng)
        started = time.perf_counter()
        ingester.ingest_fills([fill])
        for query in KEY_READS:
            conn.execute(query, params).fetchall()
        timings.append(time.perf_counter() - started)
    return {"history_fills": history, "new_fill_ms_median": round(statistics.median(timings) * 1000, 2),
            "new_fill_ms_min": round(min(timings) * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", default="1000,10000,100000")
    parser.add_argument("--throughput-fills", type=int, default=20_000)
    args = parser.parse_args()
    with scratch_engine() as (settings, conn):
        accounts.add(conn, "ACC1", capital=Decimal("1000000000"))
        result = {"engine": "embedded (PostgreSQL 18, fsync off)",
                  "throughput": bench_throughput(conn, settings, args.throughput_fills),
                  "new_fill_cost": [bench_new_fill(conn, settings, h) for h in map(int, args.histories.split(","))]}
    base = result["new_fill_cost"][0]
    for row in result["new_fill_cost"]:
        row["cost_ratio_vs_smallest"] = round(row["new_fill_ms_median"] / base["new_fill_ms_median"], 2)
        row["history_ratio_vs_smallest"] = round(row["history_fills"] / base["history_fills"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
