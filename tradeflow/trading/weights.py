"""Strategy weights: move each stored weight toward its target, at a bounded speed.

strategy_weight_targets (a view) says where each enabled strategy's weight
should be: half equal weight, half its share of the positive shrunk Sharpe
ratios of the paper scoreboard, floored and capped. How fast a weight may get
there is sequential (each new weight depends on the previous stored one), so
it is not a view: update_weights reads the targets and the current weights
(strategy_weights_latest: the newest stored weight, or the equal weight 1/S for
a strategy never stored) and appends one row per enabled strategy to
strategy_weight_history. Rows are only ever appended.

The step: with d_i = target_i - weight_i and D = max |d_i|, every weight moves
the same fraction min(1, max_change / D) of the way to its target. So no
weight moves by more than max_change, the one furthest away moves exactly
max_change, all reach their targets on the same call (after ceil(D /
max_change) calls while the targets hold), and the sum of the weights is kept
(1 while the set of enabled strategies is unchanged: the targets sum to 1, and
so does the first, equal, start). Weights are stored to 12 decimal places.

Run it from one process (the gate's or the session's loop): two concurrent
updates would both step from the same stored weights. On RisingWave a write
is visible in the views at the next barrier (~1 s): do not call it again
within a second there.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Mapping

import psycopg

from tradeflow.writer import insert_rows

COLUMNS = ("strategy_id", "weight", "target", "at", "updated_by")
PLACES = Decimal("1e-12")  # stored precision of weights and targets


@dataclass(frozen=True, slots=True)
class WeightChange:
    """One stored step: previous -> weight, on the way to target."""
    strategy_id: str
    previous: Decimal  # the stored weight before, or the equal weight 1/S the first time
    weight: Decimal
    target: Decimal
    at: datetime
    first: bool  # no weight was stored for this strategy before

    @property
    def change(self) -> Decimal:
        return self.weight - self.previous


def _places(value: Decimal | float | int | str) -> Decimal:
    return Decimal(str(value)).quantize(PLACES, rounding=ROUND_HALF_EVEN)


def step(previous: Mapping[str, Decimal], targets: Mapping[str, Decimal], max_change: Decimal) -> dict[str, Decimal]:
    """The next weights: every weight moves the same fraction of the way to its
    target, the largest fraction (at most 1) that moves none by more than max_change."""
    if max_change <= 0:
        raise ValueError(f"max_change: must be positive, got {max_change}")
    if set(previous) != set(targets):
        raise ValueError(f"previous and targets must name the same strategies: {sorted(previous)} != {sorted(targets)}")
    distance = max((abs(targets[s] - previous[s]) for s in targets), default=Decimal(0))
    if distance <= max_change:
        return dict(targets)
    fraction = max_change / distance
    return {s: _places(previous[s] + fraction * (targets[s] - previous[s])) for s in targets}


def update_weights(conn: psycopg.Connection, *, at: datetime, max_change: Decimal = Decimal("0.05"),
                   updated_by: str = "weights") -> list[WeightChange]:
    """Step every enabled strategy's weight toward its target and append the
    new weights (one row per strategy, all stamped with one time). `at` is
    moved 1 microsecond past the newest stored weight if it is not already
    later, so the newest row per strategy is always the current one."""
    if at.tzinfo is None:
        raise ValueError("at: must be timezone-aware")
    max_change = Decimal(str(max_change))
    targets = {strategy_id: _places(target) for strategy_id, target in conn.execute(
        "SELECT strategy_id, target_weight FROM strategy_weight_targets").fetchall()}
    current = {strategy_id: (weight, stored_at, source) for strategy_id, weight, stored_at, source in conn.execute(
        "SELECT strategy_id, weight, at, weight_source FROM strategy_weights_latest").fetchall()}
    missing = set(targets) ^ set(current)
    if missing:  # both views list the enabled strategies of strategy_config
        raise RuntimeError(f"strategy_weight_targets and strategy_weights_latest disagree on {sorted(missing)}")
    if not targets:
        return []
    previous = {s: _places(weight) for s, (weight, _, _) in current.items()}
    weights = step(previous, targets, max_change)
    newest = max((stored_at for _, stored_at, _ in current.values() if stored_at is not None), default=None)
    if newest is not None and at <= newest:
        at = newest + timedelta(microseconds=1)
    changes = [WeightChange(s, previous[s], weights[s], targets[s], at, current[s][2] != "stored")
               for s in sorted(targets)]
    insert_rows(conn, "strategy_weight_history", COLUMNS,
                [(c.strategy_id, c.weight, c.target, c.at, updated_by) for c in changes], batch_rows=len(changes))
    return changes


__all__ = ["WeightChange", "step", "update_weights"]
