"""Paper path, strategy scoreboard and weights (docs/scoreboard.md), golden cases worked out by hand."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import numpy as np
import pytest
from positions_helpers import rows

from ingest.execs import ExecIngester, Fill
from tradeflow.trading import accounts
from tradeflow.trading.weights import step, update_weights

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=timezone.utc)
STRATEGIES = ("green_candles", "ma_50_200", "momentum", "rsi_threshold", "sma_crossover")  # enabled by default
SHRINKAGE = 20  # scoreboard_shrinkage_trades default

# Round trips per (account, strategy, symbol): the fills of each one close what
# it opened. (side, qty, price, fee) in order. A trade is a round trip (the
# trades view), net of all its fees, its return on the entry notional.
SMA_PAPER = [
    ("BUY", 10, 100, 1), ("SELL", 10, 110, 1),          # LONG  net 100 - 2 = 98 on 10 x 100: 0.098
    ("SELL", 5, 200, "0.5"), ("BUY", 5, 190, "0.5"),    # SHORT net 50 - 1 = 49 on 5 x 200 (entry = sell): 0.049
    ("BUY", 10, 50, 1), ("SELL", 4, 55, "0.4"),         # LONG  one round trip, two FIFO matches: exit notional
    ("SELL", 6, 45, "0.6"),                             #       220 + 270 - 500 = -10, fees 2: -12 on 500: -0.024
    ("BUY", 2, 100, 0), ("SELL", 2, 95, 0),             # LONG  -10 on 200: -0.05
]
SMA_RETURNS = [0.098, 0.049, -0.024, -0.05]
SMA_NET, SMA_FEES = D("125.0"), D("5.0")  # 98 + 49 - 12 - 10; 2 + 1 + 2 + 0

MOMENTUM_PAPER = [
    ("BUY", 1, 10, "0.01"), ("SELL", 1, 12, "0.01"),    # LONG  2 - 0.02 = 1.98 on 10: 0.198
    ("BUY", 1, 12, 0), ("SELL", 1, 11, 0),              # LONG  -1 on 12
    ("SELL", 3, 20, "0.3"), ("BUY", 3, 18, "0.3"),      # SHORT 6 - 0.6 = 5.4 on 60: 0.09
]
MOMENTUM_RETURNS = [0.198, -1 / 12, 0.09]

LOSING_PAPER = [("BUY", 1, 10, 0), ("SELL", 1, 9, 0), ("BUY", 1, 10, 0), ("SELL", 1, 8, 0)]  # -0.1, -0.2


@pytest.fixture
def ingest(conn, embedded_settings):
    """ingest(account_id, strategy_id, symbol, fills): through the exec ingester, one minute apart."""
    ingester = ExecIngester(conn, embedded_settings, source="test")
    clock = iter(range(10_000))

    def add(account_id: str, strategy_id: str, symbol: str, fills) -> None:
        if accounts.get(conn, account_id) is None:
            accounts.add(conn, account_id, capital="100000")
        report = ingester.ingest_fills(
            Fill(account_id=account_id, strategy_id=strategy_id, order_id=f"{account_id}-{symbol}-{i}", fill_id="F1",
                 symbol=symbol, side=side, fill_qty=D(str(qty)), fill_price=D(str(price)), fee=D(str(fee)),
                 exec_ts=T0 + timedelta(minutes=next(clock)))
            for i, (side, qty, price, fee) in enumerate(fills))
        assert report.inserted == len(fills), report

    return add


def stats(returns: list[float]) -> dict[str, float | None]:
    r = np.array(returns, dtype=float)
    n = len(r)
    sd = r.std(ddof=1) if n > 1 else math.nan
    sharpe = r.mean() / sd if n > 1 else None
    return {"trades": n, "mean_return": r.mean(), "stddev_return": None if n < 2 else sd, "sharpe": sharpe,
            "t_stat": None if sharpe is None else r.mean() / (sd / math.sqrt(n)),
            "shrunk_sharpe": 0.0 if sharpe is None else sharpe * n / (n + SHRINKAGE)}


def perf(conn) -> dict[str, dict]:
    return {r["strategy_id"]: r for r in rows(conn, "SELECT * FROM strategy_perf_latest")}


def targets(conn) -> dict[str, D]:
    return {r["strategy_id"]: r["target_weight"] for r in rows(conn, "SELECT * FROM strategy_weight_targets")}


def latest(conn) -> dict[str, dict]:
    return {r["strategy_id"]: r for r in rows(conn, "SELECT * FROM strategy_weights_latest")}


def reference_targets(scores: dict[str, float], floor=0.02, cap=0.5) -> dict[str, float]:
    """The documented target rule, independently: blend, clamp, rescale the unclamped ones."""
    s = len(scores)
    positive = {k: max(v, 0.0) for k, v in scores.items()}
    total = sum(positive.values())
    blend = {k: 0.5 / s + 0.5 * (positive[k] / total if total > 0 else 1 / s) for k in scores}
    clamped = {k: min(max(b, floor), cap) for k, b in blend.items()}
    fixed = {k for k, b in blend.items() if b < floor or b > cap}
    free_total = sum(blend[k] for k in scores if k not in fixed)
    fixed_total = sum(clamped[k] for k in fixed)
    if free_total > 0 and fixed_total < 1:
        return {k: clamped[k] if k in fixed else blend[k] * (1 - fixed_total) / free_total for k in scores}
    return {k: clamped[k] / sum(clamped.values()) for k in scores}


def test_the_golden_cases_assume_the_default_strategies(conn):
    enabled = rows(conn, "SELECT strategy_id FROM strategy_config WHERE enabled ORDER BY strategy_id")
    assert tuple(r["strategy_id"] for r in enabled) == STRATEGIES  # S = 5: equal weight 0.2


# -- paper matches and the scoreboard -----------------------------------------------


@pytest.fixture
def book(conn, ingest):
    ingest("paper:sma_crossover", "sma_crossover", "AAA", SMA_PAPER)
    ingest("paper:momentum", "momentum", "BBB", MOMENTUM_PAPER)
    ingest("paper:rsi_threshold", "rsi_threshold", "CCC", [("BUY", 1, 10, 0), ("SELL", 1, 11, 0)])  # one trade
    # a live account trading the same strategy, very profitably: never scored
    ingest("A1", "sma_crossover", "AAA", [("BUY", 100, 10, 0), ("SELL", 100, 20, 0)])
    return conn


def test_paper_matches_are_the_paper_accounts_matches_only(book):
    live = rows(book, "SELECT match_id, account_id FROM trade_match_history")
    paper = rows(book, "SELECT * FROM paper_trade_match_history ORDER BY match_ts")
    assert {m["account_id"] for m in live} == {"A1", "paper:sma_crossover", "paper:momentum", "paper:rsi_threshold"}
    assert len(live) == 1 + 5 + 3 + 1
    assert {m["account_id"] for m in paper} == {"paper:sma_crossover", "paper:momentum", "paper:rsi_threshold"}
    assert len(paper) == 9
    # all of trade_match_history's columns, unchanged
    [full] = rows(book, "SELECT * FROM trade_match_history WHERE match_id = %s", (paper[0]["match_id"],))
    assert paper[0] == full


@pytest.mark.parametrize(("strategy_id", "returns", "net_pnl", "fees"), [
    ("sma_crossover", SMA_RETURNS, SMA_NET, SMA_FEES),
    ("momentum", MOMENTUM_RETURNS, D("6.38"), D("0.62")),   # 1.98 - 1 + 5.4; 0.02 + 0.6
    ("rsi_threshold", [0.1], D(1), D(0)),                    # one trade: no Sharpe ratio, score 0
])
def test_strategy_perf_matches_numpy(book, strategy_id, returns, net_pnl, fees):
    row = perf(book)[strategy_id]
    for column, expected in stats(returns).items():
        if expected is None:
            assert row[column] is None, column
        else:
            assert row[column] == pytest.approx(expected, rel=1e-12, abs=1e-15), column
    assert (row["net_pnl"], row["fees"]) == (net_pnl, fees)  # exact NUMERIC sums
    assert row["window_trades"] == 100
    assert (row["first_exit_ts"] < row["last_exit_ts"]) == (len(returns) > 1)


def test_one_buy_closed_by_two_sells_is_one_trade(conn, ingest):
    ingest("paper:momentum", "momentum", "AAA", [("BUY", 10, 50, 1), ("SELL", 4, 55, "0.4"), ("SELL", 6, 45, "0.6")])
    assert len(rows(conn, "SELECT * FROM paper_trade_match_history")) == 2  # matches stay matches
    row = perf(conn)["momentum"]
    assert (row["trades"], row["net_pnl"], row["fees"]) == (1, D("-12.0"), D("2.0"))
    assert row["mean_return"] == pytest.approx(-0.024, rel=1e-12)


@pytest.mark.parametrize(("fills", "round_trips", "matches"), [
    ([("BUY", 10, 10, 0), ("SELL", 15, 12, "1.5"), ("BUY", 5, 11, "0.5")], 2, 2),  # a flip closes one, opens one
    ([("BUY", 3, 10, 0), ("BUY", 2, 11, 0), ("SELL", 5, 12, 0), ("SELL", 1, 12, 0)], 1, 2),  # scaled in; a short open
    ([("SELL", 2, 20, 0), ("BUY", 1, 19, 0), ("BUY", 1, 18, 0), ("BUY", 4, 17, 0), ("SELL", 4, 18, 0)], 2, 3),
])
def test_the_scoreboard_counts_the_trades_views_round_trips(conn, ingest, fills, round_trips, matches):
    ingest("paper:momentum", "momentum", "AAA", fills)
    trips = rows(conn, "SELECT return_pct, realized_pnl, fees FROM trades WHERE account_id = 'paper:momentum'")
    assert (len(trips), len(rows(conn, "SELECT * FROM paper_trade_match_history"))) == (round_trips, matches)
    row = perf(conn)["momentum"]
    assert row["trades"] == round_trips
    assert row["mean_return"] == pytest.approx(np.mean([float(t["return_pct"]) for t in trips]), rel=1e-12)
    assert (row["net_pnl"], row["fees"]) == (sum(t["realized_pnl"] for t in trips), sum(t["fees"] for t in trips))


def test_returns_without_dispersion_have_no_sharpe_ratio(conn, ingest):
    ingest("paper:green_candles", "green_candles", "DDD", [("BUY", 1, 10, 0), ("SELL", 1, 11, 0)] * 2)
    row = perf(conn)["green_candles"]
    assert (row["trades"], row["stddev_return"], row["sharpe"], row["t_stat"], row["shrunk_sharpe"]) == (
        2, 0, None, None, 0)


def test_live_accounts_and_strategies_without_paper_trades_are_not_scored(book):
    scored = perf(book)
    assert set(scored) == {"sma_crossover", "momentum", "rsi_threshold"}
    # the live A1 round trip (a return of 1.0) would dominate the mean if it were counted
    assert scored["sma_crossover"]["mean_return"] == pytest.approx(np.mean(SMA_RETURNS), rel=1e-12)


def test_the_window_holds_every_trade_while_fewer_than_n(conn, ingest):
    # the default window is 100 trades (the cut itself is the dbt unit test
    # strategy_perf_scores_the_last_n_paper_trades, with a window of 4)
    ingest("paper:momentum", "momentum", "BBB",
           [fill for i in range(30) for fill in (("BUY", 1, 10, 0), ("SELL", 1, 10 + i % 3, 0))])
    row = perf(conn)["momentum"]
    returns = [(i % 3) / 10 for i in range(30)]
    assert row["trades"] == 30
    assert row["shrunk_sharpe"] == pytest.approx(stats(returns)["shrunk_sharpe"], rel=1e-12)


# -- weight targets --------------------------------------------------------------------


def test_equal_targets_without_paper_trades(conn):
    assert targets(conn) == {s: D("0.2") for s in STRATEGIES}


def test_targets_blend_equal_and_score_shares(book):
    scored = perf(book)
    scores = {s: scored[s]["shrunk_sharpe"] if s in scored else 0.0 for s in STRATEGIES}
    assert scores["sma_crossover"] > 0 and scores["momentum"] > 0
    got, expected = targets(book), reference_targets(scores)
    assert {s: float(w) for s, w in got.items()} == pytest.approx(expected, rel=1e-12)
    assert sum(got.values()) == pytest.approx(1, abs=1e-15)
    assert got["ma_50_200"] == got["green_candles"] == got["rsi_threshold"]  # no positive score: equal half only


def test_a_single_positive_score_is_capped_and_the_rest_rescaled(conn, ingest):
    ingest("paper:sma_crossover", "sma_crossover", "AAA", SMA_PAPER)
    ingest("paper:momentum", "momentum", "BBB", LOSING_PAPER)  # negative score: weighs as 0
    # blends: 0.1 + 0.5 * 1 = 0.6 over the 0.5 cap; the other four 0.1, rescaled to share the remaining 0.5
    assert targets(conn) == {"sma_crossover": D("0.5"), **{s: D("0.125") for s in STRATEGIES if s != "sma_crossover"}}
    [row] = rows(conn, "SELECT blend, is_clamped FROM strategy_weight_targets WHERE strategy_id = 'sma_crossover'")
    assert row == {"blend": D("0.6"), "is_clamped": True}


@pytest.mark.parametrize(("scores", "floor", "cap", "expected"), [
    ({"a": 3.0, "b": 1.0, "c": 0.0, "d": -1.0}, 0.2, 0.5, {"a": 0.4, "b": 0.2, "c": 0.2, "d": 0.2}),  # floor binds
    ({"a": 1.0, "b": 0.0}, 0.02, 0.5, {"a": 0.5, "b": 0.5}),                                       # cap binds
    ({"a": 1.0}, 0.02, 0.5, {"a": 1.0}),                                   # infeasible cap: rescaled to 1
])
def test_reference_rule_cases(scores, floor, cap, expected):
    # the same cases as the dbt unit tests, for the Python reference used above
    assert reference_targets(scores, floor, cap) == pytest.approx(expected, rel=1e-12)


# -- weights: the clamp on how fast they move ----------------------------------------


@pytest.fixture
def capped_book(conn, ingest):
    """Targets sma_crossover 0.5, the other four 0.125; everyone starts at 0.2."""
    ingest("paper:sma_crossover", "sma_crossover", "AAA", SMA_PAPER)
    return conn


def test_first_update_starts_from_the_equal_weight(conn):
    changes = update_weights(conn, at=T0)
    assert [(c.strategy_id, c.previous, c.weight, c.target, c.first) for c in changes] == [
        (s, D("0.2"), D("0.2"), D("0.2"), True) for s in STRATEGIES]
    assert {s: (r["weight"], r["weight_source"], r["size_multiplier"]) for s, r in latest(conn).items()} == {
        s: (D("0.2"), "stored", D("1.0")) for s in STRATEGIES}


@pytest.mark.parametrize(("max_change", "calls"), [("0.05", 6), ("0.07", 5), ("0.1", 3), ("0.3", 1), ("1", 1)])
def test_a_far_target_is_reached_in_steps_of_at_most_max_change(capped_book, max_change, calls):
    conn, max_change = capped_book, D(max_change)
    goal = targets(conn)
    history = []
    for call in range(1, calls + 1):
        changes = update_weights(conn, at=T0 + timedelta(minutes=call), max_change=max_change)
        assert all(abs(c.change) <= max_change for c in changes)
        assert sum(c.weight for c in changes) == pytest.approx(1, abs=1e-10)
        sma = next(c for c in changes if c.strategy_id == "sma_crossover")
        assert sma.first == (call == 1)
        if call < calls:  # the weight furthest from its target moves exactly max_change
            assert sma.change == max_change
            assert sma.weight != sma.target
        history.append(rows(conn, "SELECT * FROM strategy_weight_history ORDER BY at, strategy_id"))
    assert {c.strategy_id: c.weight for c in changes} == goal  # converged on the last call, all together
    # appended, never updated: each call adds 5 rows and leaves the earlier ones as they were
    for i, snapshot in enumerate(history):
        assert len(snapshot) == 5 * (i + 1)
        assert history[-1][:len(snapshot)] == snapshot
    assert {s: r["weight"] for s, r in latest(conn).items()} == goal
    again = update_weights(conn, at=T0 + timedelta(hours=1), max_change=max_change)
    assert all(c.change == 0 for c in again)  # at the target: stays


def test_every_weight_moves_the_same_fraction_of_its_way():
    previous = {"a": D("0.2"), "b": D("0.2"), "c": D("0.6")}
    target = {"a": D("0.5"), "b": D("0.125"), "c": D("0.375")}
    # furthest: a, 0.3 away; with 0.05 every weight moves 1/6 of its way
    assert step(previous, target, D("0.05")) == {"a": D("0.25"), "b": D("0.1875"), "c": D("0.5625")}
    assert step(previous, target, D("0.3")) == target
    with pytest.raises(ValueError, match="max_change"):
        step(previous, target, D(0))


def test_size_multiplier_follows_the_stored_weight(capped_book):
    conn = capped_book
    update_weights(conn, at=T0, updated_by="test")
    weights = latest(conn)
    assert weights["sma_crossover"]["weight"] == D("0.25")
    assert weights["sma_crossover"]["size_multiplier"] == D("1.25")  # weight x S: 0.25 x 5
    assert weights["momentum"]["size_multiplier"] == D("0.9375")     # 0.1875 x 5
    assert {r["updated_by"] for r in weights.values()} == {"test"}


def test_a_time_not_after_the_stored_one_is_moved_just_past_it(conn):
    update_weights(conn, at=T0)
    second = update_weights(conn, at=T0 - timedelta(hours=1))
    assert {c.at for c in second} == {T0 + timedelta(microseconds=1)}
    assert {r["at"] for r in latest(conn).values()} == {T0 + timedelta(microseconds=1)}
    with pytest.raises(ValueError, match="timezone"):
        update_weights(conn, at=datetime(2024, 1, 2))


def test_weights_latest_falls_back_to_the_equal_weight(conn):
    conn.execute("INSERT INTO strategy_weight_history (strategy_id, weight, target, at, updated_by) VALUES"
                 " ('momentum', 0.1, 0.05, %s, 't'), ('momentum', 0.3, 0.4, %s, 't'), ('retired', 0.9, 0.9, %s, 't')",
                 (T0, T0 + timedelta(minutes=1), T0))
    weights = latest(conn)
    assert set(weights) == set(STRATEGIES)  # enabled strategies only
    assert {k: weights["momentum"][k] for k in ("weight", "target", "at", "weight_source", "size_multiplier")} == {
        "weight": D("0.3"), "target": D("0.4"), "at": T0 + timedelta(minutes=1), "weight_source": "stored",
        "size_multiplier": D("1.5")}
    for s in STRATEGIES:
        if s != "momentum":
            assert (weights[s]["weight"], weights[s]["target"], weights[s]["at"], weights[s]["weight_source"],
                    weights[s]["size_multiplier"]) == (D("0.2"), None, None, "equal", 1)
