"""The adapter killed (os._exit, as kill -9) at each of its write points and at
random ones, restarted each time with its paper book rebuilt from the
database: no order or fill lost or duplicated, positions equal to fills, and
every order's clock moving forward. bench/bench_faults.py runs the same at
scale (>= 100 kills per point)."""
from __future__ import annotations

import random

import pytest
from fault_harness import Episode

from adapters.execution import WRITE_POINTS


@pytest.mark.parametrize("point", WRITE_POINTS)
def test_killed_at_a_write_point_loses_and_duplicates_nothing(conn, embedded_settings, point):
    episode = Episode(embedded_settings, conn, random.Random(point))
    episode.decide(2)
    episode.run_adapter()
    killed = sum(episode.kill_at(point) for _ in range(2))
    tally = episode.finish()
    assert killed == 2 and tally.kills == {point: 2}
    assert tally.orders >= 2
    assert (tally.lost_orders, tally.duplicated_orders, tally.lost_fills, tally.duplicated_fills) == (0, 0, 0, 0)
    assert (tally.unfinished_orders, tally.clock_violations, tally.position_mismatches) == (0, 0, 0)


def test_killed_at_random_points_loses_and_duplicates_nothing(conn, embedded_settings):
    episode = Episode(embedded_settings, conn, random.Random(13))
    kills = 0
    for _ in range(20):
        kills += episode.random_kill()
        if kills == 4:
            break
    tally = episode.finish()
    assert sum(tally.kills.values()) == kills == 4
    assert (tally.lost_orders, tally.duplicated_orders, tally.lost_fills, tally.duplicated_fills) == (0, 0, 0, 0)
    assert (tally.unfinished_orders, tally.clock_violations, tally.position_mismatches) == (0, 0, 0)
