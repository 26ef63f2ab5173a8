#!/usr/bin/env python3
"""Crash consistency of the order path at scale (issue 13). Prints JSON.

The paper adapter (a forked process, its book rebuilt from the database at
every start) is killed with os._exit at each named write point
(adapters.execution.WRITE_POINTS) --kills-per-point times, then at random
points and hits until --random-kills kills happened; after each episode of
--kills-per-episode kills it runs unharmed until every order is finished and
the book is checked (tests/fault_harness.py). Target: lost_orders,
duplicated_orders, lost_fills, duplicated_fills all 0 (also unfinished
orders, clock violations, position/fill mismatches).

Usage: python bench/bench_faults.py [--kills-per-point 100] [--random-kills 50] [--kills-per-episode 10] [--seed 13]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from scratch import scratch_engine  # also puts the project on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from adapters.execution import WRITE_POINTS  # noqa: E402
from fault_harness import Episode, Tally  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills-per-point", type=int, default=100)
    parser.add_argument("--random-kills", type=int, default=50)
    parser.add_argument("--kills-per-episode", type=int, default=10)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    total, forced, started = Tally(), Tally(), time.perf_counter()
    with scratch_engine() as (settings, conn):
        for point in WRITE_POINTS:
            killed = 0
            while killed < args.kills_per_point:
                episode = Episode(settings, conn, random.Random(rng.random()))
                episode.decide(2)
                episode.run_adapter()
                for _ in range(min(args.kills_per_episode, args.kills_per_point - killed)):
                    killed += episode.kill_at(point)
                forced.add(episode.finish())
        total.add(forced)
        random_kills = 0
        while random_kills < args.random_kills:
            episode = Episode(settings, conn, random.Random(rng.random()))
            start = random_kills
            while random_kills - start < args.kills_per_episode and random_kills < args.random_kills:
                random_kills += episode.random_kill()
            total.add(episode.finish())
    result = {
        **total.as_dict(),
        "forced_kills": sum(forced.kills.values()),
        "random_kills": random_kills,
        "seconds": round(time.perf_counter() - started, 1),
        "target_met": all(total.as_dict()[k] == 0 for k in (
            "lost_orders", "duplicated_orders", "lost_fills", "duplicated_fills", "unfinished_orders",
            "clock_violations", "position_mismatches")),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
