#!/usr/bin/env python3
"""A 3 x 3 parameter sweep against one run of the same size (issue 15's target: the sweep within
3x the run). Prints JSON.

Both on the same synthetic bars (``--symbols`` x ``--days``, default 10 x 20), strategy
sma_crossover, the default fill model, one account; the sweep is ``sma_crossover.fast`` 5,10,20 x
``sma_crossover.slow`` 21,50,200 (``tradeflow backtest --sweep ...``): one ingest, one signal read
for all nine parameter sets, then nine replays, each stored under its run_id with its metrics and
round trips (each point's write, check, store and metrics run while the next point replays). The one run is ``tradeflow backtest`` with the default parameters (5, 21).

Each backtest schema deployment (dbt, once per set of models and vars: the one run's, the sweep's
with its nine variants) happens before the clock starts and is reported on its own
(``deploy_seconds``), as bench_peers does; ``ratio_with_deploy`` adds the sweep's deployment to
the sweep and the run's to the run. Each side is timed ``--repeat`` times (default 2), the
fastest counts (the machine is shared).

``machine_busy_fraction`` per sweep is the share of the machine's cores kept busy while it ran
(/proc/stat, every process): near 1, the sweep is bound by its work, not by how it overlaps.

``decisions`` per run shows how much sequential work each point brings: the grid's points differ
(a fast SMA next to the slow one signals far more often than the default pair).

Usage: python bench/bench_sweep.py [--symbols 10] [--days 20] [--seed 7] [--repeat 2]
    [--outputs full|matches-only]

By default each side keeps what ``tradeflow backtest`` keeps: the one run everything (``full``), each
sweep run its trades, matches, metrics and config (``matches-only``); ``--outputs`` makes both the same.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from nautilus_sma import synthetic_bars  # bench/ is on sys.path
from scratch import scratch_engine  # also puts the project on sys.path

from tradeflow.research import run_config  # noqa: E402
from tradeflow.research.backtest import Backtest  # noqa: E402
from tradeflow.research.sweep import Sweep  # noqa: E402

TARGET_RATIO = 3.0


def machine_cpu(since: tuple[float, float] | None = None) -> tuple[float, float]:
    """The machine's (busy, idle) CPU seconds from /proc/stat, or since an earlier reading: how
    much of the cores a sweep kept busy (all processes: this one, its finishing process, the
    engine's backends, and anything else running)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = (ticks[3] + ticks[4]) / os.sysconf("SC_CLK_TCK")
    busy = sum(ticks) / os.sysconf("SC_CLK_TCK") - idle
    return (busy - since[0], idle - since[1]) if since else (busy, idle)
GRID = ("sma_crossover.fast=5,10,20", "sma_crossover.slow=21,50,200")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--outputs", default=None,
                        help="what each run keeps, both sides (default: each side's own, as on the command line:"
                             " full for the one run, matches-only for the sweep's runs)")
    args = parser.parse_args()
    bars = synthetic_bars(args.symbols, args.days, args.seed)
    flags = {"from": bars.ts.min().isoformat(), "to": (bars.ts.max() + pd.Timedelta(minutes=1)).isoformat(),
             "strategies": "sma_crossover", "outputs": args.outputs}
    out: dict = {"symbols": args.symbols, "days": args.days, "bars": len(bars), "grid": list(GRID),
                 "machine": {"cpus": os.cpu_count()}, "tradeflow_engine": "embedded PostgreSQL (fsync off)"}
    with scratch_engine() as (settings, _):
        one = run_config.plan(run_config.resolve(None, flags), settings.project_dir)
        grid = run_config.plan(run_config.resolve(None, {**flags, "sweep": run_config.parse_sweep(list(GRID))}),
                               settings.project_dir)
        bt = Backtest(settings, model_vars=one.model_vars)
        started = time.perf_counter()
        bt._prepare_schema()
        deploy_one = time.perf_counter() - started
        singles = []
        for i in range(args.repeat):
            started = time.perf_counter()
            result = bt.run(one.spec, bars, run_id=f"one-{i}")
            singles.append({"seconds": round(time.perf_counter() - started, 3), "phases": result.seconds,
                            "decisions": result.decisions,
                            "trades": int(result.metrics_by_account.loc["(run)", "trades"])})
        sweep = Sweep(bt, grid)
        started = time.perf_counter()
        sweep.bt._prepare_schema()
        deploy_sweep = time.perf_counter() - started
        sweeps = []
        for i in range(args.repeat):
            runner = Sweep(bt, replace(grid, config={**grid.config, "run_id": f"sweep-{i}"}))
            started, machine = time.perf_counter(), machine_cpu()
            outcome = runner.run(bars)
            seconds, (busy, idle) = time.perf_counter() - started, machine_cpu(machine)
            decisions = outcome.ranking.set_index("run_id").decisions
            sweeps.append({"seconds": round(seconds, 3), "runs": len(outcome.ranking),
                           "decisions_per_run": decisions.to_dict(), "decisions_total": int(decisions.sum()),
                           "machine_busy_fraction": round(busy / max(busy + idle, 1e-9), 3)})
        # the (5, 21) point must be the one run, trade for trade
        same = outcome.ranking.set_index(["sma_crossover.fast", "sma_crossover.slow"]).loc[(5, 21), "trades"]
    one_s = min(r["seconds"] for r in singles)
    sweep_s = min(r["seconds"] for r in sweeps)
    out.update({
        "one_run": singles, "sweep": sweeps,
        "deploy_seconds": {"one_run": round(deploy_one, 3), "sweep": round(deploy_sweep, 3)},
        "outputs": {"one_run": one.config["outputs"], "sweep": grid.config["outputs"]},
        "ratio": round(sweep_s / one_s, 3),
        "ratio_with_deploy": round((sweep_s + deploy_sweep) / (one_s + deploy_one), 3),
        "point_5_21_trades_equal_one_run": int(same) == singles[0]["trades"],
        "ranking": json.loads(outcome.ranking.to_json(orient="records")),
    })
    out["targets"] = {f"sweep_within_{TARGET_RATIO:g}x_of_one_run": {"measured": out["ratio"],
                                                                    "met": out["ratio"] < TARGET_RATIO}}
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
