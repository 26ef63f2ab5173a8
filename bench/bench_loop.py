#!/usr/bin/env python3
"""Latency of the trading loop on the embedded engine. Prints JSON.

For each history size (bars already in price_1m_history), a bar that makes
sma_crossover fire on every symbol (after untimed flat bars and a small drop) is
inserted and timed through the loop:
  bar -> accepted order at the adapter (gate pass + submit),
  -> fill (next bar traded by the paper broker, reports recorded, fill ingested),
  -> updated position (open_positions_rollup read for the key).
p50/p99 over the samples, and the ratio of the largest history's p99 to the
smallest's. Target (issue 12): p99 bar -> accepted < 50 ms, flat within ±20%.
Each timed pass also reports its CPU (this process and the server backends), steadier than
wall time on a shared machine.

Scaling in fresh symbols (--scale-symbols N, 0 to skip): a history of N
symbols (--scale-bars bars each), then a steady feed of k of them (k from
--scale-fresh), each minute's pass timed bar -> decided (ingest, gate pass,
submit) over 5 minutes; the others' bars are older than any fresh window.
Reports the median pass (wall and CPU) per k, the least-squares slope in ms per
fresh symbol and the marginal cost per symbol of each step of k. Target (issue 12): linear, at most 1 ms
per fresh symbol at 200 symbols.

Usage: python bench/bench_loop.py [--histories 10000,100000,1000000] [--samples 5] [--symbols 10]
           [--scale-symbols 200] [--scale-fresh 1,50,100,200] [--scale-bars 2000] [--scale-samples 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
from scratch import scratch_engine  # also puts the project on sys.path

from ingest.prices import PriceIngester  # noqa: E402
from ingest.synthetic import generate_bars  # noqa: E402
from tradeflow.trading import accounts, policy  # noqa: E402
from tradeflow.trading.daemon import PaperAdapter, freeze_heap  # noqa: E402
from tradeflow.trading.gate import DecisionGate  # noqa: E402


def cpu_seconds(conn) -> float:
    """CPU time so far of this process and of the scratch server's client backends (Linux
    schedstat, nanoseconds): a pass's CPU, which other load on the machine inflates far
    less than its wall time."""
    total = 0
    for (pid,) in conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"):
        try:
            total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
        except FileNotFoundError:  # a backend that ended
            pass
    return time.process_time() + total / 1e9


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def shaped_bar(symbol: str, ts, last_close: float, move: float, spread: float = 0.0) -> dict:
    """A bar from last_close by move, its range widened by spread (a fraction of the close) and a cent."""
    close = round(last_close * (1 + move), 2)
    high = round(max(last_close, close) * (1 + spread), 2) + 0.01
    low = round(min(last_close, close) * (1 - spread), 2) - 0.01
    return {"symbol": symbol, "ts": ts, "open": last_close, "high": high, "low": low, "close": close,
            "volume": 1_000_000.0}


class Loop:
    """A live loop on `frame`'s bars as history: ingested, one account, the gate's and the
    adapter's first passes done (the history's own signals decided before timing), the heap
    frozen as the gate daemon does once its book is built. `now` is the loop's clock."""

    def __init__(self, conn, settings, frame: pd.DataFrame, max_open_symbols: int) -> None:
        for table in ("price_1m_history", "exec_report_history", "accounts", "account_policy", "trade_decisions",
                      "order_events", "risk_events", "adapter_feed_position"):
            conn.execute(f"TRUNCATE {table}")
        self.now = {"t": frame.ts.max().to_pydatetime() + timedelta(minutes=1)}
        clock = lambda: self.now["t"]  # noqa: E731
        self.prices = PriceIngester(conn, settings, source="bench", clock=clock)
        self.prices.ingest([frame.iloc[i:i + 100_000] for i in range(0, len(frame), 100_000)])
        conn.execute("ANALYZE price_1m_history")
        accounts.add(conn, "B1", capital="100000000", max_leverage="4")
        policy.update(conn, "B1", max_open_symbols=max_open_symbols, allow_scale_in=True,
                      risk_per_trade_pct=Decimal("0.0001"), updated_by="bench")
        self.gate = DecisionGate(conn, settings, clock=clock)
        self.gate.run_once(limit=1_000_000)
        self.adapter = PaperAdapter(conn, settings, clock=clock, consumer="bench")
        self.adapter.step(timeout=0)
        freeze_heap()
        self.last = {s: float(c) for s, c in frame.groupby("symbol").close.last().items()}


def run_history(conn, settings, history: int, symbols: int, samples: int) -> dict:
    days = max(1, -(-history // (symbols * 390)))
    frame = pd.concat(list(generate_bars(symbols=symbols, days=days, seed=11)), ignore_index=True).iloc[:history]
    loop = Loop(conn, settings, frame, max_open_symbols=1000)
    now, prices, gate, adapter, last = loop.now, loop.prices, loop.gate, loop.adapter, loop.last
    ts = now["t"]
    timings = {"bar_to_accepted_ms": [], "bar_to_accepted_cpu_ms": [], "accepted_to_fill_ms": [],
               "fill_to_position_ms": []}
    for _ in range(samples):
        # untimed: 20 flat bars per symbol in one batch and a small drop (sma_5 just below
        # sma_21, whatever came before), decided; timed: a jump, on which sma_5 crosses above
        setup = []
        for move in [0.0] * 20 + [-0.01]:
            rows = [shaped_bar(s, ts, last[s], move, spread=0.005) for s in last]
            last = {r["symbol"]: r["close"] for r in rows}
            setup += rows
            ts += timedelta(minutes=1)
        now["t"] = ts
        prices.ingest_frame(pd.DataFrame(setup))
        gate.run_once()
        adapter.adapter.submit_accepted(timeout=0)
        rows = [shaped_bar(s, ts, last[s], 0.05, spread=0.005) for s in last]
        last = {r["symbol"]: r["close"] for r in rows}
        now["t"] = ts + timedelta(minutes=1)
        c0, t0 = cpu_seconds(conn), time.perf_counter()
        prices.ingest_frame(pd.DataFrame(rows))
        decisions = gate.run_once()
        adapter.adapter.submit_accepted(timeout=0)
        t1, c1 = time.perf_counter(), cpu_seconds(conn)
        ts += timedelta(minutes=1)
        accepted = [d for d in decisions if d.accepted and d.signal.action == "BUY"]
        if not accepted:
            continue
        # the next bar trades the orders
        rows = [shaped_bar(s, ts, last[s], 0.0) for s in last]
        now["t"] = ts + timedelta(minutes=1)
        prices.ingest_frame(pd.DataFrame(rows))
        t2 = time.perf_counter()
        adapter.step(timeout=0)
        t3 = time.perf_counter()
        d = accepted[0]
        conn.execute("SELECT * FROM open_positions_rollup WHERE account_id = %s AND strategy_id = %s AND symbol = %s",
                     (d.account_id, d.signal.strategy_id, d.signal.symbol)).fetchall()
        t4 = time.perf_counter()
        ts += timedelta(minutes=1)
        timings["bar_to_accepted_ms"].append((t1 - t0) * 1000)
        timings["bar_to_accepted_cpu_ms"].append((c1 - c0) * 1000)
        timings["accepted_to_fill_ms"].append((t3 - t2) * 1000)
        timings["fill_to_position_ms"].append((t4 - t3) * 1000)
    adapter.close()
    out = {"history_bars": history, "samples": len(timings["bar_to_accepted_ms"])}
    for name, values in timings.items():
        if values:
            out[name] = {"p50": round(statistics.median(values), 1), "p99": round(percentile(values, 0.99), 1)}
    return out


def run_scaling(conn, settings, symbols: int, fresh_counts: list[int], bars_per_symbol: int, samples: int) -> dict:
    days = -(-bars_per_symbol // 390)
    frame = pd.concat(list(generate_bars(symbols=symbols, days=days, seed=11)), ignore_index=True)
    frame = frame.groupby("symbol", group_keys=False).tail(bars_per_symbol)
    loop = Loop(conn, settings, frame, max_open_symbols=100_000)
    now, prices, gate, adapter, last = loop.now, loop.prices, loop.gate, loop.adapter, loop.last
    names = sorted(last)
    ts = now["t"]
    passes: dict[int, list[float]] = {k: [] for k in fresh_counts}
    cpu: dict[int, list[float]] = {k: [] for k in fresh_counts}
    for sample in range(samples):
        # a gap longer than every fresh window (1h bars + max_signal_age), then a steady feed
        # of the first k symbols for 5 minutes (every phase of a 5m bar), k growing: only
        # those k are fresh
        ts += timedelta(minutes=90)
        for k in fresh_counts:
            for _ in range(5):
                rows = [shaped_bar(s, ts, last[s], 0.002 * (-1) ** sample, spread=0.005) for s in names[:k]]
                last.update({r["symbol"]: r["close"] for r in rows})
                now["t"] = ts + timedelta(minutes=1)
                c0, t0 = cpu_seconds(conn), time.perf_counter()
                prices.ingest_frame(pd.DataFrame(rows))
                gate.run_once()
                adapter.adapter.submit_accepted(timeout=0)
                passes[k].append((time.perf_counter() - t0) * 1000)
                cpu[k].append((cpu_seconds(conn) - c0) * 1000)
                ts += timedelta(minutes=1)
    adapter.close()
    medians = {k: statistics.median(v) for k, v in passes.items()}
    cpu_medians = {k: statistics.median(v) for k, v in cpu.items()}
    steps = [{"fresh": f"{a}->{b}", "ms_per_symbol": round((medians[b] - medians[a]) / (b - a), 2),
              "cpu_ms_per_symbol": round((cpu_medians[b] - cpu_medians[a]) / (b - a), 2)}
             for a, b in zip(fresh_counts, fresh_counts[1:])]
    return {"symbols": symbols, "bars_per_symbol": bars_per_symbol, "samples": samples,
            "pass_ms_p50_by_fresh_symbols": {str(k): round(v, 1) for k, v in medians.items()},
            "pass_cpu_ms_p50_by_fresh_symbols": {str(k): round(v, 1) for k, v in cpu_medians.items()},
            "ms_per_fresh_symbol": slope(medians), "cpu_ms_per_fresh_symbol": slope(cpu_medians),
            "marginal_ms_per_symbol": steps,
            # linear: the last step's cost per symbol over the first step's (1.0 = a straight line)
            "marginal_ratio_last_to_first": (round(steps[-1]["ms_per_symbol"] / steps[0]["ms_per_symbol"], 2)
                                             if len(steps) > 1 and steps[0]["ms_per_symbol"] > 0 else None)}


def slope(by_k: dict[int, float]) -> float | None:
    """Least-squares ms per fresh symbol."""
    if len(by_k) < 2:
        return None
    mean_k, mean_ms = statistics.fmean(by_k), statistics.fmean(by_k.values())
    return round(sum((k - mean_k) * (v - mean_ms) for k, v in by_k.items())
                 / sum((k - mean_k) ** 2 for k in by_k), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--histories", default="10000,100000,1000000")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--scale-symbols", type=int, default=200)
    parser.add_argument("--scale-fresh", default="1,50,100,200")
    parser.add_argument("--scale-bars", type=int, default=2000)
    parser.add_argument("--scale-samples", type=int, default=3)
    args = parser.parse_args()
    with scratch_engine() as (settings, conn):
        results = [run_history(conn, settings, h, args.symbols, args.samples)
                   for h in map(int, args.histories.split(",")) if h]
        scaling = (run_scaling(conn, settings, args.scale_symbols, [int(k) for k in args.scale_fresh.split(",")],
                               args.scale_bars, args.scale_samples) if args.scale_symbols else None)
    summary = {"engine": "embedded (PostgreSQL 18, fsync off)", "symbols": args.symbols, "runs": results}
    if scaling is not None:
        summary["scaling"] = scaling
    first, last = (results[0], results[-1]) if results else ({}, {})
    if "bar_to_accepted_ms" in first and "bar_to_accepted_ms" in last:
        summary["bar_to_accepted_p99_ratio_largest_to_smallest"] = round(
            last["bar_to_accepted_ms"]["p99"] / first["bar_to_accepted_ms"]["p99"], 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
