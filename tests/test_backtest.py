"""Backtests: parity with the live loop, determinism, decision times, bad input, the CLI."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pytest
from typer.testing import CliRunner

from ingest.synthetic import generate_bars
from tradeflow import engine
from tradeflow.cli import DEMO_ACCOUNTS, DEMO_PAPER, app
from tradeflow.research.backtest import AccountSpec, Backtest, BacktestError, BacktestSpec, PolicyChange, decision_times
from tradeflow.trading import accounts, policy
from tradeflow.trading.session import ReplaySession

BARS = pd.concat(list(generate_bars(symbols=4, days=1, seed=7)), ignore_index=True)
START = BARS.ts.min().to_pydatetime()
END = BARS.ts.max().to_pydatetime() + timedelta(minutes=1)
KILL = PolicyChange(START + timedelta(hours=3), "ACC-INCOME", {"kill_switch": True}, "operator")
SPEC = BacktestSpec(start=START, end=END, paper=DEMO_PAPER, policy_changes=(KILL,),
                    accounts=tuple(AccountSpec(a, Decimal(100_000), Decimal(2), p) for a, p in DEMO_ACCOUNTS.items()))

# what must agree between the live loop and the backtest, per relation
COMPARED = {
    "trade_decisions": ("decision_id, outcome, reject_code, account_id, qty, ref_price, client_order_id, signal_ts,"
                        " decided_at", "decision_id"),
    "order_events": ("client_order_id, account_id, symbol, side, order_type, qty, status, filled_qty, event_ts",
                     "client_order_id, event_ts, status"),
    "exec_report_history": ("order_id, fill_id, account_id, strategy_id, symbol, side, fill_qty, fill_price, fee,"
                            " exec_ts", "order_id, fill_id"),
    "trade_match_history": ("match_id, account_id, strategy_id, symbol, matched_qty, buy_price, sell_price,"
                            " realized_pnl, match_ts", "match_id"),
    "risk_events": ("account_id, rule, severity, ts", "ts, account_id, rule"),
}
RESULT_TABLE = {"trade_decisions": "backtest_decisions", "order_events": "backtest_order_events",
                "exec_report_history": "backtest_fills", "trade_match_history": "backtest_matches",
                "risk_events": "backtest_risk_events"}


def fetch(conn, query: str, params: tuple = ()) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def stored(conn, relation: str, run_id: str) -> list[tuple]:
    columns, order = COMPARED[relation]
    return fetch(conn, f"SELECT {columns} FROM {RESULT_TABLE[relation]} WHERE run_id = %s ORDER BY {order}",
                 (run_id,))


@pytest.fixture(scope="module")
def backtest_run(engine_settings):
    return Backtest(engine_settings).run(SPEC, BARS, run_id="parity")


def test_backtest_equals_the_live_loop_on_the_same_session(backtest_run, conn, embedded_settings):
    for account, account_policy in DEMO_ACCOUNTS.items():
        accounts.add(conn, account, capital="100000", max_leverage="2")
        policy.update(conn, account, updated_by="backtest", at=START - timedelta(minutes=1), **account_policy)
    live = ReplaySession(conn, embedded_settings, paper=DEMO_PAPER, policy_changes=(KILL,)).run([BARS])

    assert (live.decisions, live.accepted, live.rejects) == (
        backtest_run.decisions, backtest_run.accepted, backtest_run.rejects)
    assert {"OPEN_LIMIT_EXCEEDED", "NO_OPEN_POSITION"} <= set(live.rejects)
    for relation, (columns, order) in COMPARED.items():
        expected = fetch(conn, f"SELECT {columns} FROM {relation} ORDER BY {order}")
        assert stored(conn, relation, "parity") == expected, relation
    assert len(stored(conn, "trade_match_history", "parity")) > 10
    # the kill switch and the drawdown breach both happened along the way
    events = {(account, rule) for account, rule, _, _ in stored(conn, "risk_events", "parity")}
    assert ("ACC-INCOME", "KILL_SWITCH") in events
    assert ("ACC-TIGHT", "DRAWDOWN_BREACHED") in events


def test_same_inputs_same_results_and_run_id(backtest_run, engine_settings):
    again = Backtest(engine_settings).run(SPEC, BARS, run_id="parity-again")
    assert Backtest(engine_settings).run(SPEC, BARS).run_id == f"bt-{SPEC.fingerprint(BARS)}"
    with engine.connect(engine_settings) as conn:
        for relation in COMPARED:
            assert stored(conn, relation, "parity") == stored(conn, relation, again.run_id), relation
        metrics = fetch(conn, "SELECT run_id, scope, key, metrics FROM backtest_metrics"
                              " WHERE run_id IN ('parity', 'parity-again') ORDER BY scope, key, run_id")
    assert len(metrics) >= 2 * (len(DEMO_ACCOUNTS) + 1)
    assert all(a[1:] == b[1:] for a, b in zip(metrics[::2], metrics[1::2]))


def test_matches_only_keeps_the_matches_and_the_metrics(engine_settings):
    result = Backtest(engine_settings).run(replace(SPEC, outputs="matches-only"), BARS, run_id="lean")
    with engine.connect(engine_settings) as conn:
        assert len(stored(conn, "trade_match_history", "lean")) > 0
        assert stored(conn, "trade_decisions", "lean") == []
        assert fetch(conn, "SELECT bars, accepted FROM backtest_runs WHERE run_id = 'lean'") == [
            (len(BARS), result.accepted)]
        assert fetch(conn, "SELECT count(*) FROM backtest_metrics WHERE run_id = 'lean'")[0][0] > 0


def at(minute: int) -> pd.Timestamp:
    return pd.Timestamp("2024-01-02 14:30", tz="UTC") + pd.Timedelta(minutes=minute)


@pytest.mark.parametrize(("minutes", "signal", "expected"), [
    (range(10), ("1m", 3), at(4)),                       # a minute bar: at its close
    (range(10), ("5m", 0), at(5)),                       # all five minutes in: at the 5m bar's close
    ([0, 1, 2, 3, 6, 7], ("5m", 0), at(7)),              # minute 4 missing: final at the next bar's close
    ([0, 1, 2, 3, 4, 9, 11], ("5m", 5), at(12)),         # a lone minute: final when the next bar arrives
    ([0, 1, 2, 3, 90], ("5m", 0), pd.NaT),               # final only 86 minutes later: stale, never decided
    ([0, 1, 2], ("5m", 0), pd.NaT),                      # never final within the data
])
def test_a_signal_is_decided_when_the_live_gate_first_sees_it(minutes, signal, expected):
    bars = pd.DataFrame({"symbol": "AAA", "ts": [at(m) for m in minutes]})
    signals = pd.DataFrame({"symbol": ["AAA"], "timeframe": [signal[0]], "signal_ts": [at(signal[1])]})
    got = decision_times(bars, signals, timedelta(minutes=2)).iloc[0]
    assert (pd.isna(got) and pd.isna(expected)) or got == expected


@pytest.mark.parametrize("unit", ["s", "us", "ns"])
def test_decision_times_do_not_depend_on_the_frames_time_unit(unit):
    bars = pd.DataFrame({"symbol": "AAA", "ts": [at(m) for m in [0, 1, 2, 3, 6, 7]]})
    signals = pd.DataFrame({"symbol": ["AAA", "AAA"], "timeframe": ["5m", "1m"], "signal_ts": [at(0), at(6)]})
    as_unit = {"ts": bars.ts.astype(f"datetime64[{unit}, UTC]")}
    got = decision_times(bars.assign(**as_unit), signals.assign(signal_ts=signals.signal_ts.astype(
        f"datetime64[{unit}, UTC]")), timedelta(minutes=2))
    assert got.tolist() == [at(7), at(7)]


@pytest.mark.parametrize(("change", "field"), [
    ({"end": START}, "end"),
    ({"start": START.replace(tzinfo=None)}, "start/end"),
    ({"accounts": ()}, "accounts"),
    ({"outputs": "everything"}, "outputs"),
])
def test_invalid_specs_name_the_field(change, field):
    with pytest.raises(BacktestError, match=field):
        replace(SPEC, **change)


@pytest.mark.parametrize(("change", "field"), [
    ({"symbols": ("NOPE",)}, "symbols"),
    ({"strategies": ("no_such_strategy",)}, "strategies"),
    ({"start": datetime(2030, 1, 1, tzinfo=timezone.utc), "end": datetime(2030, 1, 2, tzinfo=timezone.utc)}, "bars"),
])
def test_runs_on_unknown_inputs_are_refused_with_the_field(engine_settings, change, field):
    with pytest.raises(BacktestError, match=field):
        Backtest(engine_settings).run(replace(SPEC, **change), BARS)


def test_cli_backtest_writes_the_report_and_keeps_the_run(engine_settings, tmp_path):
    report = tmp_path / "run.html"
    result = CliRunner().invoke(app, ["backtest", "--from", "2024-01-02", "--to", "2024-01-03", "--synthetic", "2",
                                      "--strategies", "sma_crossover,rsi_threshold", "--accounts", "X1:50000,X2",
                                      "--run-id", "cli-run", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "run cli-run" in result.output and "per strategy" in result.output
    html = report.read_text()
    assert 'id="equity-chart"' in html and "X1" in html
    with engine.connect(engine_settings) as conn:
        assert fetch(conn, "SELECT symbols FROM backtest_runs WHERE run_id = 'cli-run'") == [
            (["SYM0000", "SYM0001"],)]
        strategies = {row[0] for row in fetch(conn, "SELECT DISTINCT strategy_id FROM backtest_decisions"
                                                    " WHERE run_id = 'cli-run'")}
    assert strategies <= {"sma_crossover", "rsi_threshold"} and strategies


def test_shadow_accounts_trade_every_signal_without_changing_live_decisions(backtest_run, engine_settings):
    Backtest(engine_settings).run(replace(SPEC, shadow=True), BARS, run_id="shadow")
    with engine.connect(engine_settings) as conn:
        live_only = ("SELECT decision_id, outcome, reject_code, account_id, qty FROM backtest_decisions"
                     " WHERE run_id = %s AND decision_id NOT LIKE 'paper:%%' ORDER BY decision_id")
        assert fetch(conn, live_only, ("shadow",)) == fetch(conn, live_only, ("parity",))
        paper = fetch(conn, "SELECT count(*), count(*) FILTER (WHERE outcome = 'ACCEPTED') FROM backtest_decisions"
                            " WHERE run_id = 'shadow' AND account_id LIKE 'paper:%%'")[0]
        matches = fetch(conn, "SELECT count(*) FROM backtest_matches WHERE run_id = 'shadow'"
                              " AND account_id LIKE 'paper:%%'")[0][0]
    assert paper[1] > 0 and matches > 0


def test_ingested_bars_move_inside_the_engine_and_give_the_same_run(backtest_run, embedded_settings, conn):
    from ingest.prices import PriceIngester

    PriceIngester(conn, embedded_settings, source="test").ingest([BARS])
    Backtest(embedded_settings).run(SPEC, None, run_id="in-engine")
    with engine.connect(embedded_settings) as main:
        for relation in COMPARED:
            assert stored(main, relation, "in-engine") == stored(main, relation, "parity"), relation
        assert fetch(main, "SELECT bars FROM backtest_runs WHERE run_id = 'in-engine'") == [(len(BARS),)]


def test_a_run_whose_book_and_views_disagree_fails(engine_settings, monkeypatch):
    from tradeflow.research.backtest import BacktestMismatchError, SequentialReplay

    original = SequentialReplay._record

    def deaf_book(self, events):  # the fills reach the views but not the book: positions and cash drift apart
        monkeypatch.setattr(self.book, "on_fill", lambda fill: True)
        original(self, events)

    monkeypatch.setattr(SequentialReplay, "_record", deaf_book)
    with pytest.raises(BacktestMismatchError, match="positions|cash"):
        Backtest(engine_settings).run(SPEC, BARS, run_id="deaf")


def test_a_sweep_raises_what_its_finishing_process_raised(engine_settings, monkeypatch):
    """The check against the views runs in the sweep's finishing process: its error reaches the caller."""
    from tradeflow.research import run_config
    from tradeflow.research.backtest import BacktestMismatchError
    from tradeflow.research.sweep import Sweep
    from tradeflow.trading.book import AccountBook

    # the fills reach the views but not the book
    monkeypatch.setattr(AccountBook, "on_fill", lambda self, fill: True)
    plan = run_config.plan(run_config.resolve(None, {
        "from": START.isoformat(), "to": END.isoformat(), "strategies": "sma_crossover", "run_id": "deaf-sweep",
        "sweep": {"sma_crossover.fast": [5, 10]}}), engine_settings.project_dir)
    with pytest.raises(BacktestMismatchError, match="positions|cash"):
        Sweep(Backtest(engine_settings), plan).run(BARS)


def test_a_finishing_process_that_ended_is_a_clear_error(engine_settings):
    from tradeflow.research.backtest import ReplayOutcome, ReplayStats, RunShape
    from tradeflow.research.finishing import Finisher
    from tradeflow.trading.book import AccountBook

    with Finisher(Backtest(engine_settings)) as finisher:
        finisher._process.kill()
        finisher._process.wait()
        with pytest.raises(BacktestError, match="finishing: the process ended"):
            finisher.start(SPEC, RunShape.of(BARS, BARS.head(0)), "gone",
                           ReplayOutcome(AccountBook().ledgers(), ReplayStats(), (), ()), {}, "UTC", {})
            finisher.result()


def test_results_kept_from_an_older_version_gain_the_new_columns(backtest_run, engine_settings):
    with engine.connect(engine_settings) as conn:
        conn.execute("ALTER TABLE backtest_order_events DROP COLUMN seq")  # as a run before order_events.seq left it
    Backtest(engine_settings).run(replace(SPEC, outputs="full"), BARS, run_id="evolved")
    with engine.connect(engine_settings) as conn:
        seqs = fetch(conn, "SELECT count(*) FILTER (WHERE seq IS NULL), count(*) FILTER (WHERE seq > 0)"
                           " FROM backtest_order_events WHERE run_id = 'evolved'")[0]
        assert seqs[1] > 0  # the broker's events are numbered per order; the gate's NEW has none
        assert stored(conn, "order_events", "evolved") == stored(conn, "order_events", "parity")


def round_trips_from_fills(fills: pd.DataFrame) -> pd.DataFrame:
    """An independent count of round trips: walk each key's fills, a trip from flat to flat (a flip
    closes one and opens the next)."""
    trips = []
    for key, group in fills.sort_values(["exec_ts", "order_id", "fill_id"]).groupby(
            ["account_id", "strategy_id", "symbol"]):
        position, entry = Decimal(0), None
        for fill in group.itertuples():
            signed = fill.fill_qty if fill.side == "BUY" else -fill.fill_qty
            if position == 0:
                entry = fill.exec_ts
            after = position + signed
            if position != 0 and (after == 0 or (after > 0) != (position > 0)):
                trips.append((*key, entry, fill.exec_ts, abs(position)))
                entry = fill.exec_ts if after != 0 else None
            position = after
    return pd.DataFrame(trips, columns=["account_id", "strategy_id", "symbol", "entry_ts", "exit_ts", "qty"])


def test_trades_are_round_trips_with_excursions_from_the_bars(backtest_run, engine_settings):
    with engine.connect(engine_settings) as conn:
        fills = engine.query_frame(conn, "SELECT * FROM backtest_fills WHERE run_id = 'parity'")
        trades = engine.query_frame(conn, "SELECT * FROM backtest_trades WHERE run_id = 'parity'")
        matches = fetch(conn, "SELECT count(*) FROM backtest_matches WHERE run_id = 'parity'")[0][0]
        metrics = fetch(conn, "SELECT metrics FROM backtest_metrics WHERE run_id = 'parity' AND scope = 'account'"
                              " AND key = '(run)'")[0][0]
    expected = round_trips_from_fills(fills)
    columns = list(expected.columns)
    got = trades[columns].sort_values(columns).reset_index(drop=True)
    assert len(got) > 5 and matches >= len(got)  # matches stay matches (one or more per round trip)
    pd.testing.assert_frame_equal(got, expected.sort_values(columns).reset_index(drop=True), check_dtype=False)
    assert metrics["trades"] == len(trades)
    assert metrics["win_rate"] == pytest.approx((trades.realized_pnl > 0).mean())
    assert (trades.holding_time == trades.exit_ts - trades.entry_ts).all()
    assert (trades.realized_pnl == trades.realized_pnl_gross - trades.fees).all()
    for trade in trades.head(5).itertuples():  # MAE / MFE against the bars the trade was open through
        held = BARS[(BARS.symbol == trade.symbol) & (BARS.ts > trade.entry_ts - timedelta(minutes=1))
                    & (BARS.ts < trade.exit_ts)]
        low, high = held.low.min() / float(trade.entry_price) - 1, held.high.max() / float(trade.entry_price) - 1
        worst, best = (low, high) if trade.side == "LONG" else (-high, -low)
        assert float(trade.mae_pct) == pytest.approx(worst, abs=1e-9)
        assert float(trade.mfe_pct) == pytest.approx(best, abs=1e-9)
        assert float(trade.mae_pct) <= 0 <= float(trade.mfe_pct)


def test_broker_rejections_are_counted_by_reason_next_to_the_gates(engine_settings):
    # DAY orders end at 15:00 UTC: every order decided after that is refused by the broker
    spec = replace(SPEC, paper=replace(DEMO_PAPER, session_end=datetime.strptime("15:00", "%H:%M").time()))
    result = Backtest(engine_settings).run(spec, BARS, run_id="session-end")
    assert result.broker_rejects.get("SESSION_CLOSED", 0) > 0 and result.rejects
    with engine.connect(engine_settings) as conn:
        stored_rejects = fetch(conn, "SELECT broker_rejects FROM backtest_runs WHERE run_id = 'session-end'")[0][0]
        refused = fetch(conn, "SELECT count(*) FROM backtest_order_events WHERE run_id = 'session-end'"
                              " AND status = 'REJECTED' AND reason LIKE 'SESSION_CLOSED:%%'")[0][0]
    assert stored_rejects == result.broker_rejects and refused == result.broker_rejects["SESSION_CLOSED"]


@pytest.mark.parametrize("tz", ["America/Los_Angeles", "Europe/Oslo", "Asia/Tokyo"])
def test_one_trading_day_is_one_daily_return_in_any_time_zone(engine_settings, tz):
    """The opening sample is the first bar, not --from at midnight UTC (which lies on the day
    before in a zone west of UTC)."""
    spec = replace(SPEC, start=START.replace(hour=0, minute=0), policy_changes=())
    result = Backtest(engine_settings).run(spec, BARS, run_id=f"tz-{tz}", tz=tz)
    run = result.metrics_by_account.loc["(run)"]
    local_days = BARS.ts.dt.tz_convert(tz).dt.date.nunique()
    assert run["days"] == local_days


def test_a_never_deployed_schema_is_refused_or_created_before_any_work(engine_settings):
    fresh = replace(engine_settings, schema="never_deployed")
    with pytest.raises(BacktestError, match="never_deployed.*stg_prices"):
        Backtest(fresh).run(SPEC, None)  # ingested bars: nothing to run on, said before the backtest schema
    with engine.connect(engine_settings) as conn:
        assert not engine.relation_exists(conn, "never_deployed_backtest", "stg_prices")
    result = Backtest(fresh).run(replace(SPEC, outputs="matches-only"), BARS, run_id="fresh")  # results land
    with engine.connect(fresh) as conn:
        assert fetch(conn, 'SELECT accepted FROM "never_deployed".backtest_runs') == [(result.accepted,)]


def test_a_backtest_schema_whose_models_change_kind_is_deployed_again(engine_settings):
    """stg_execs is a view in a schema deployed before refreshed_models and a materialized view
    after: dropping the view would take the views dbt then replaces with it, so the backtest
    schema is deployed from empty whenever its models or vars change."""
    spec = replace(SPEC, policy_changes=())
    views_only = Backtest(engine_settings, model_vars={"refreshed_models": []}).run(spec, BARS, run_id="kind-before")
    materialized = Backtest(engine_settings).run(spec, BARS, run_id="kind-after")
    assert materialized.decisions == views_only.decisions > 0
    with engine.connect(engine_settings) as conn:
        assert conn.execute("SELECT matviewname FROM pg_matviews WHERE schemaname = %s",
                            (f"{engine_settings.schema}_backtest",)).fetchall() == [("stg_execs",)]
