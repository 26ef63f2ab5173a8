#!/usr/bin/env python3
"""Benchmark of the SQL spine on the embedded engine. Prints JSON.

* ingest: bars/s through PriceIngester (validation, dedup lookup, batched
  multi-row INSERTs) against a raw COPY of the same rows into a table of the
  same shape, measured in the same run; the ratio is what the target speaks of
  (>= 0.30).
* compute: seconds to compute indicator_history and strategy_signal_history
  in full (COPY ... TO /dev/null, so every column is evaluated, nothing is
  shipped to the client) for 10k, 100k and 1M one-minute bars, as bars/s
  (target >= 150k at 1M), and against a plain SMA window pass over the same
  bars in the same run (the machine is noisy: the ratio is the steadier figure),
  also in backend CPU seconds (the server process's user + system time, which
  excludes waiting for a core on a loaded machine).

Usage: python bench/bench_spine.py [--sizes 10000,100000,1000000] [--ingest-bars 200000]
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import time
from pathlib import Path

import pandas as pd
from scratch import scratch_engine  # also puts the project on sys.path

from ingest.prices import PriceIngester  # noqa: E402
from ingest.synthetic import generate_bars  # noqa: E402
from tradeflow.config import Settings  # noqa: E402

BARS_PER_DAY = 390


def bars_for(n: int, symbols: int) -> pd.DataFrame:
    days = math.ceil(n / (symbols * BARS_PER_DAY))
    frame = pd.concat(list(generate_bars(symbols=symbols, days=days, seed=42)), ignore_index=True)
    return frame.iloc[:n]


def bench_ingest(conn, settings: Settings, bars: pd.DataFrame) -> dict[str, float]:
    conn.execute("TRUNCATE price_1m_history, dead_letter, dead_letter_replay")
    conn.execute("DROP TABLE IF EXISTS copy_baseline")
    conn.execute("CREATE TABLE copy_baseline (LIKE price_1m_history INCLUDING ALL)")
    chunks = [bars.iloc[i:i + 50_000] for i in range(0, len(bars), 50_000)]

    started = time.perf_counter()
    report = PriceIngester(conn, settings, source="bench").ingest(chunks)
    ingest_s = time.perf_counter() - started
    assert report.inserted == len(bars), report.as_dict()

    buffer = io.StringIO()
    bars.assign(source="bench", batch_id="copy", received_at=pd.Timestamp.now(tz="UTC")).to_csv(
        buffer, index=False, header=False)
    payload = buffer.getvalue()
    started = time.perf_counter()
    with conn.cursor().copy("COPY copy_baseline FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(payload)
    copy_s = time.perf_counter() - started
    conn.execute("DROP TABLE copy_baseline")
    return {
        "bars": len(bars),
        "ingest_seconds": round(ingest_s, 3),
        "ingest_bars_per_second": round(len(bars) / ingest_s),
        "copy_seconds": round(copy_s, 3),
        "copy_bars_per_second": round(len(bars) / copy_s),
        "ratio_ingest_to_copy": round(copy_s / ingest_s, 3),
    }


# The reference the issue compares with: one plain SMA window over the same bars.
SMA_PASS = ("(SELECT symbol, ts, avg(close) OVER (PARTITION BY symbol ORDER BY ts"
            " ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) FROM price_1m_history) AS sma_pass")


def backend_cpu_seconds(pid: int) -> float:
    """User + system CPU of the server process serving our connection (the embedded server is local)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_full_read(conn, relation: str) -> tuple[float, float, int]:
    """Wall and backend CPU seconds of one full read, and its row count. On this shared
    2-core machine the wall time includes waiting for a core; the CPU time does not."""
    pid = conn.info.backend_pid
    cpu_before = backend_cpu_seconds(pid)
    started = time.perf_counter()
    conn.execute(f"COPY (SELECT * FROM {relation}) TO '/dev/null'")
    elapsed = time.perf_counter() - started
    cpu = backend_cpu_seconds(pid) - cpu_before
    rows = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
    return elapsed, cpu, rows


def bench_compute(conn, settings: Settings, n: int, symbols: int) -> dict[str, float]:
    conn.execute("TRUNCATE price_1m_history, dead_letter, dead_letter_replay")
    bars = bars_for(n, symbols)
    PriceIngester(conn, settings, source="bench").ingest([bars.iloc[i:i + 100_000] for i in range(0, n, 100_000)])
    conn.execute("ANALYZE price_1m_history")
    sma_s, sma_cpu, _ = timed_full_read(conn, SMA_PASS)
    indicators_s, indicators_cpu, indicator_rows = timed_full_read(conn, "indicator_history")
    signals_s, signals_cpu, signal_rows = timed_full_read(conn, "strategy_signal_history")
    full_pass_s = indicators_s + signals_s
    full_pass_cpu = indicators_cpu + signals_cpu
    return {
        "bars": n,
        "symbols": symbols,
        "indicator_rows": indicator_rows,
        "indicators_seconds": round(indicators_s, 3),
        "signal_rows": signal_rows,
        "signals_seconds": round(signals_s, 3),
        "indicators_plus_signals_seconds": round(full_pass_s, 3),
        "full_pass_bars_per_second": round(n / full_pass_s),
        "sma_pass_seconds": round(sma_s, 3),
        "sma_pass_bars_per_second": round(n / sma_s),
        "ratio_full_pass_to_sma_pass": round(sma_s / full_pass_s, 3),
        "indicators_backend_cpu_seconds": round(indicators_cpu, 2),
        "signals_backend_cpu_seconds": round(signals_cpu, 2),
        "full_pass_bars_per_backend_cpu_second": round(n / max(full_pass_cpu, 0.01)),
        "sma_pass_backend_cpu_seconds": round(sma_cpu, 2),
        "ratio_full_pass_to_sma_pass_backend_cpu": round(sma_cpu / max(full_pass_cpu, 0.01), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--ingest-bars", type=int, default=200_000)
    args = parser.parse_args()
    with scratch_engine() as (settings, conn):
        result = {
            "engine": "embedded (PostgreSQL 18, fsync off for both sides)",
            "ingest": bench_ingest(conn, settings, bars_for(args.ingest_bars, 50)),
            "compute": [bench_compute(conn, settings, n, symbols=max(1, min(100, n // 10_000)))
                        for n in map(int, args.sizes.split(","))],
        }
    first, last = result["compute"][0], result["compute"][-1]
    result["compute_cost_ratio_largest_to_smallest"] = round(
        last["indicators_plus_signals_seconds"] / max(first["indicators_plus_signals_seconds"], 1e-9), 2)
    result["bars_ratio_largest_to_smallest"] = round(last["bars"] / first["bars"], 2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
