"""The decision gate: routing, sizing, pre-trade risk, exactly-once and
serialized decisions, on the embedded engine."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from positions_helpers import T0, add_price, rows

from adapters.orders import client_order_id
from ingest.execs import ExecIngester, Fill
from tradeflow.reasons import ReasonCode
from tradeflow.trading import accounts
from tradeflow.engine import read_scope
from tradeflow.trading.gate import TIMEFRAMES, DecisionGate, Signal, last_minute_of_first_bar


def signal(n: int, symbol: str, action: str = "BUY", *, price: str = "100", atr: float = 1.0,
           strategy: str = "sma_crossover") -> Signal:
    return Signal(signal_id=f"{strategy}:{symbol}:1m:{n}", strategy_id=strategy, symbol=symbol, timeframe="1m",
                  signal_ts=T0 + timedelta(minutes=n), action=action, size_hint=1.0, confidence=1.0,
                  ref_price=Decimal(price), atr_14=atr)


def set_policy(conn, account_id: str, **policy) -> None:
    columns = ["account_id", "updated_at", "updated_by", *policy]
    conn.execute(f"INSERT INTO account_policy ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                 [account_id, T0, "test", *policy.values()])


def fill_for(decision, price: str = "100") -> Fill:
    return Fill(account_id=decision.account_id, strategy_id=decision.signal.strategy_id,
                order_id=decision.client_order_id, fill_id="1", symbol=decision.signal.symbol,
                side=decision.signal.action, fill_qty=decision.qty, fill_price=Decimal(price),
                exec_ts=decision.signal.signal_ts + timedelta(minutes=1))


@pytest.fixture
def gate(conn, embedded_settings):
    clock = {"now": T0 + timedelta(hours=1)}
    accounts.add(conn, "A1", capital="100000", max_leverage="1")
    accounts.add(conn, "A2", capital="100000", max_leverage="1")
    # these tests are about routing and risk: every signal counts as fresh
    g = DecisionGate(conn, embedded_settings, clock=lambda: clock["now"], max_signal_age=timedelta(days=30))
    g.test_clock = clock
    return g


def test_buy_is_sized_from_risk_budget_and_atr(gate, conn):
    decision = gate.decide(signal(1, "AAA", atr=2.0))
    # equity 100k * 1% risk / (ATR 2 * multiple 2) = 250 shares
    assert (decision.accepted, decision.account_id, decision.qty) == (True, "A1", Decimal(250))
    [order] = rows(conn, "SELECT client_order_id, status, qty, side FROM orders")
    assert order == {"client_order_id": client_order_id(decision.signal.signal_id), "status": "NEW",
                     "qty": Decimal(250), "side": "BUY"}
    [accepted] = rows(conn, "SELECT account_id, qty, reason FROM accepted_trade_signal_history")
    assert accepted == {"account_id": "A1", "qty": Decimal(250), "reason": "OK"}


def test_routing_prefers_the_least_loaded_then_round_robin(gate):
    chosen = [gate.decide(signal(i, sym)).account_id for i, sym in enumerate(["AAA", "BBB", "CCC", "DDD"])]
    assert chosen == ["A1", "A2", "A1", "A2"]


def test_open_symbol_limit_counts_pending_orders(gate, conn):
    for account in ("A1", "A2"):
        set_policy(conn, account, max_open_symbols=1)
    assert gate.decide(signal(1, "AAA")).accepted
    assert gate.decide(signal(2, "BBB")).accepted
    third = gate.decide(signal(3, "CCC"))
    assert (third.accepted, third.code) == (False, ReasonCode.OPEN_LIMIT_EXCEEDED)
    [rejection] = rows(conn, "SELECT reject_code FROM trade_rejections")
    assert rejection == {"reject_code": "OPEN_LIMIT_EXCEEDED"}


def test_reservation_expires_after_its_ttl(gate, conn):
    for account in ("A1", "A2"):
        set_policy(conn, account, max_open_symbols=1, reservation_ttl_seconds=60)
    gate.decide(signal(1, "AAA"))
    gate.decide(signal(2, "BBB"))
    gate.test_clock["now"] += timedelta(minutes=5)  # no fill arrived: both reservations lapse
    assert gate.decide(signal(3, "CCC")).accepted


def test_sell_requires_an_open_long(gate, conn, embedded_settings):
    refused = gate.decide(signal(1, "AAA", "SELL"))
    assert refused.code == ReasonCode.NO_OPEN_POSITION
    buy = gate.decide(signal(2, "AAA"))
    ExecIngester(conn, embedded_settings, source="test").ingest_fills([fill_for(buy)])
    add_price(conn, "AAA", "100")
    sell = gate.decide(signal(3, "AAA", "SELL"))
    assert (sell.accepted, sell.account_id, sell.qty) == (True, buy.account_id, buy.qty)


def test_blocked_account_takes_no_new_risk_but_may_close(gate, conn, embedded_settings):
    buy = gate.decide(signal(1, "AAA"))
    ExecIngester(conn, embedded_settings, source="test").ingest_fills([fill_for(buy)])
    add_price(conn, "AAA", "100")
    for account in ("A1", "A2"):
        accounts.set_status(conn, account, "BLOCKED")
    assert gate.decide(signal(2, "BBB")).code == ReasonCode.ACCOUNT_BLOCKED
    assert gate.decide(signal(3, "AAA", "SELL")).accepted


def test_kill_switch_stops_everything_at_once(gate, conn, embedded_settings):
    buy = gate.decide(signal(1, "AAA"))
    ExecIngester(conn, embedded_settings, source="test").ingest_fills([fill_for(buy)])
    add_price(conn, "AAA", "100")
    for account in ("A1", "A2"):
        set_policy(conn, account, kill_switch=True)
    assert gate.decide(signal(2, "BBB")).code == ReasonCode.KILL_SWITCH_ENGAGED
    assert gate.decide(signal(3, "AAA", "SELL")).code == ReasonCode.KILL_SWITCH_ENGAGED


@pytest.mark.parametrize(("policy", "code"), [
    ({"max_order_notional": Decimal(1000)}, ReasonCode.ORDER_NOTIONAL_EXCEEDED),
    ({"max_position_qty": Decimal(100)}, ReasonCode.POSITION_LIMIT_EXCEEDED),
    ({"max_concentration_pct": Decimal("0.1")}, ReasonCode.CONCENTRATION_EXCEEDED),
    ({"risk_per_trade_pct": Decimal("0.5")}, ReasonCode.LEVERAGE_EXCEEDED),  # 25k shares x 100 > equity x 1
])
def test_each_risk_check_refuses_with_its_code(gate, conn, policy, code):
    for account in ("A1", "A2"):
        set_policy(conn, account, **policy)
    decision = gate.decide(signal(1, "AAA"))
    assert (decision.accepted, decision.code) == (False, code)
    assert decision.inputs["account"]["equity"] == "100000"


def test_drawdown_breach_blocks_the_account_and_raises_an_event(gate, conn, embedded_settings):
    set_policy(conn, "A1", max_drawdown_pct=Decimal("0.05"))
    set_policy(conn, "A2", kill_switch=True)
    buy = gate.decide(signal(1, "AAA", atr=0.5))
    ExecIngester(conn, embedded_settings, source="test").ingest_fills([fill_for(buy)])
    add_price(conn, "AAA", "100", minute=2)   # peak equity while flat-ish
    add_price(conn, "AAA", "40", minute=3)    # 1000 shares lose 60k: far past 5 %
    decision = gate.decide(signal(4, "BBB"))
    assert decision.code == ReasonCode.DRAWDOWN_BREACHED
    assert accounts.get(conn, "A1").status == "BLOCKED"
    [event] = rows(conn, "SELECT account_id, rule, severity FROM risk_events")
    assert event == {"account_id": "A1", "rule": "DRAWDOWN_BREACHED", "severity": "CRITICAL"}


def test_a_decision_is_made_once_and_never_changes(gate, conn):
    first = gate.decide(signal(1, "AAA"))
    accounts.set_status(conn, "A1", "BLOCKED")
    accounts.set_status(conn, "A2", "BLOCKED")
    again = gate.decide(signal(1, "AAA"))
    assert (again.accepted, again.account_id, again.qty) == (first.accepted, first.account_id, first.qty)
    assert rows(conn, "SELECT count(*) AS n FROM trade_decisions") == [{"n": 1}]


def test_concurrent_candidates_never_jointly_break_a_limit(gate, conn):
    for account in ("A1", "A2"):
        set_policy(conn, account, max_open_symbols=2)
    signals = [signal(i, f"S{i:02d}") for i in range(20)]
    barrier = threading.Barrier(len(signals))
    results = []

    def fire(s):
        barrier.wait()  # all threads decide at the same moment
        results.append(gate.decide(s))

    threads = [threading.Thread(target=fire, args=(s,)) for s in signals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [d for d in results if d.accepted]
    assert len(accepted) == 4  # 2 accounts x 2 open symbols, never more
    per_account = rows(conn, "SELECT account_id, count(DISTINCT symbol) AS n FROM accepted_trade_signal_history"
                             " GROUP BY account_id ORDER BY account_id")
    assert per_account == [{"account_id": "A1", "n": 2}, {"account_id": "A2", "n": 2}]
    assert len(rows(conn, "SELECT * FROM trade_rejections")) == 16


def test_gate_decides_the_strategies_signals(gate, conn, embedded_settings):
    from ingest.prices import PriceIngester
    from ingest.synthetic import generate_bars

    PriceIngester(conn, embedded_settings, source="test").ingest(generate_bars(symbols=2, days=1, seed=3))
    gate.test_clock["now"] = datetime(2024, 1, 3, tzinfo=timezone.utc)  # the gate sees bars closed before its clock
    decisions = gate.run_once()
    total = rows(conn, "SELECT count(*) AS n FROM strategy_signal_history")[0]["n"]
    assert len(decisions) == total > 0
    assert gate.run_once() == []  # nothing left undecided
    codes = {d.code for d in decisions if not d.accepted}
    assert codes <= set(ReasonCode)


def test_policy_change_applies_to_the_next_decision_and_is_audited(gate, conn):
    from tradeflow.trading import policy

    policy.update(conn, "A1", kill_switch=True, updated_by="alice")
    policy.update(conn, "A2", kill_switch=True, updated_by="alice")
    assert gate.decide(signal(1, "AAA")).code == ReasonCode.KILL_SWITCH_ENGAGED
    policy.update(conn, "A1", kill_switch=False, updated_by="bob")
    assert gate.decide(signal(2, "AAA")).account_id == "A1"
    versions = rows(conn, "SELECT account_id, kill_switch, updated_by FROM account_policy ORDER BY updated_at")
    assert [v["updated_by"] for v in versions] == ["alice", "alice", "bob"]
    events = rows(conn, "SELECT account_id, rule, severity FROM risk_events ORDER BY ts, account_id")
    assert [(e["account_id"], e["severity"]) for e in events] == [("A1", "CRITICAL"), ("A2", "CRITICAL"),
                                                                  ("A1", "INFO")]


@pytest.mark.parametrize(("changes", "field"), [
    ({"max_open_symbols": 0}, "max_open_symbols"),
    ({"max_drawdown_pct": "1.5"}, "max_drawdown_pct"),
    ({"kill_switch": "yes"}, "kill_switch"),
    ({"max_speed": 3}, "max_speed"),
])
def test_invalid_policy_changes_name_the_field(gate, conn, changes, field):
    from tradeflow.trading import policy

    with pytest.raises(policy.PolicyError, match=field):
        policy.update(conn, "A1", **changes)


def test_signals_older_than_max_signal_age_are_recorded_stale(gate, conn, embedded_settings):
    strict = DecisionGate(conn, embedded_settings, clock=lambda: T0 + timedelta(minutes=10))  # default: 2 minutes
    assert strict.decide(signal(8, "BBB")).accepted  # bar 8 closed at minute 9: fresh
    decision = strict.decide(signal(1, "AAA"))
    assert (decision.accepted, decision.code) == (False, ReasonCode.STALE_SIGNAL)
    assert rows(conn, "SELECT reject_code FROM trade_rejections") == [{"reject_code": "STALE_SIGNAL"}]
    assert [d.code for d in strict.run_once()] == []  # nothing left undecided


def test_shadow_decides_every_signal_again_for_the_strategys_paper_account(conn, embedded_settings):
    accounts.add(conn, "A1", capital="100000", max_leverage="1")
    set_policy(conn, "A1", max_open_symbols=1)
    gate = DecisionGate(conn, embedded_settings, clock=lambda: T0 + timedelta(hours=1),
                        max_signal_age=timedelta(days=30), shadow=True)
    live = [gate.decide(signal(i, sym)) for i, sym in enumerate(["AAA", "BBB"])]
    assert [d.accepted for d in live] == [True, False]  # the live account's cap binds...
    paper = rows(conn, "SELECT decision_id, account_id, outcome FROM trade_decisions"
                       " WHERE account_id LIKE 'paper:%%' ORDER BY decision_id")
    assert paper == [  # ...the paper account has none, and takes both, under its own decision ids
        {"decision_id": f"paper:{d.signal.signal_id}", "account_id": "paper:sma_crossover", "outcome": "ACCEPTED"}
        for d in live]
    assert gate.decide(signal(0, "AAA")) == live[0]  # deciding again changes nothing, adds no paper decision
    assert rows(conn, "SELECT count(*) AS n FROM trade_decisions") == [{"n": 4}]
    assert {o["account_id"] for o in rows(conn, "SELECT account_id FROM orders")} == {"A1", "paper:sma_crossover"}


def test_the_strategy_weight_scales_the_size(gate, conn):
    conn.execute("INSERT INTO strategy_weight_history (strategy_id, weight, target, at, updated_by)"
                 " SELECT strategy_id, CASE WHEN strategy_id = 'sma_crossover' THEN 0.1 ELSE 0.225 END, 0.2, %s, 'test'"
                 " FROM strategy_config WHERE enabled", (T0,))
    decision = gate.decide(signal(1, "AAA", atr=2.0))
    # 250 shares at an equal weight (see test_buy_is_sized_from_risk_budget_and_atr); weight 0.1 of 5 strategies
    assert (decision.accepted, decision.qty) == (True, Decimal(125))
    assert decision.inputs["size_multiplier"] == "0.5"


@pytest.mark.parametrize(("side", "qty", "terms", "accepted", "code"), [
    ("BUY", "10", {}, True, None),
    ("BUY", "10", {"order_type": "LIMIT", "limit_price": "99.50"}, True, None),
    ("BUY", "5000", {}, False, ReasonCode.LEVERAGE_EXCEEDED),   # 500k of notional on 100k at leverage 1
    ("SELL", "10", {}, False, ReasonCode.NO_OPEN_POSITION),     # nothing to close
])
def test_manual_orders_go_through_the_gate_once_with_risk_checks_and_audit(gate, conn, side, qty, terms,
                                                                           accepted, code):
    from tradeflow.trading.orders import request_manual_order

    add_price(conn, "AAA", "100", minute=10)  # a bar closed before the request
    request = request_manual_order(conn, "A2", "AAA", side, qty, requested_by="alice", reason="hedge",
                                   at=gate.clock(), **terms)
    [decision] = gate.run_once()
    assert (decision.decision_id, decision.accepted, decision.code) == (f"manual:{request.request_id}", accepted,
                                                                       code)
    assert gate.run_once() == []  # decided once
    assert decision.inputs["manual"] == {"request_id": request.request_id, "requested_by": "alice",
                                         "reason": "hedge"}
    [audit] = rows(conn, "SELECT actor, target, details FROM audit_history WHERE action = 'MANUAL_ORDER'")
    assert (audit["actor"], audit["target"], audit["details"]["request_id"]) == ("alice", "A2", request.request_id)
    orders_ = rows(conn, "SELECT account_id, qty, order_type, limit_price FROM orders")
    assert orders_ == ([{"account_id": "A2", "qty": Decimal(qty), "order_type": terms.get("order_type", "MARKET"),
                         "limit_price": Decimal(terms["limit_price"]) if "limit_price" in terms else None}]
                       if accepted else [])


def test_a_manual_order_the_gate_sees_too_late_is_stale(gate, conn):
    from tradeflow.trading.orders import request_manual_order

    request_manual_order(conn, "A1", "AAA", "BUY", 1, requested_by="alice", at=gate.clock() - timedelta(days=31))
    [decision] = gate.run_once()
    assert (decision.accepted, decision.code) == (False, ReasonCode.STALE_SIGNAL)


@pytest.mark.parametrize(("args", "kwargs", "field"), [
    (("A1", "AAA", "HOLD", 1), {}, "side"),
    (("A1", "AAA", "BUY", 0), {}, "qty"),
    (("A1", "AAA", "BUY", "ten"), {}, "qty"),
    (("NOPE", "AAA", "BUY", 1), {}, "account_id"),
    (("A1", "", "BUY", 1), {}, "symbol"),
    (("A1", "AAA", "BUY", 1), {"order_type": "LIMIT"}, "order_type"),
    (("A1", "AAA", "BUY", 1), {"order_type": "MARKET", "limit_price": "10"}, "order_type"),
    (("A1", "AAA", "BUY", 1), {"order_type": "ICEBERG"}, "order_type"),
    (("A1", "AAA", "BUY", 1), {"time_in_force": "FOK"}, "time_in_force"),
    (("A1", "AAA", "BUY", 1), {"order_type": "LIMIT", "limit_price": "-1"}, "limit_price"),
])
def test_invalid_manual_orders_name_the_field(gate, conn, args, kwargs, field):
    from tradeflow.trading.orders import OrderCommandError, request_manual_order

    with pytest.raises(OrderCommandError, match=field):
        request_manual_order(conn, *args, **kwargs)
    assert rows(conn, "SELECT count(*) AS n FROM manual_order_requests") == [{"n": 0}]


@pytest.mark.parametrize(("since", "bar", "expected"), [
    ("10:00:00", timedelta(minutes=5), "10:04:00"),
    ("10:00:01", timedelta(minutes=5), "10:09:00"),
    ("10:04:59", timedelta(minutes=1), "10:05:00"),
    ("10:05:00", timedelta(minutes=1), "10:05:00"),
    ("10:00:01", timedelta(hours=1), "11:59:00"),
])
def test_last_minute_of_the_first_bar_after_since(since, bar, expected):
    day = "2024-01-02T"
    assert (last_minute_of_first_bar(datetime.fromisoformat(day + since + "+00:00"), bar)
            == datetime.fromisoformat(day + expected + "+00:00"))


def test_live_reads_find_every_fresh_signal_the_whole_history_has(conn, embedded_settings):
    """The gate's bounded reads (newest bars of the symbols that can have a fresh final bar)
    against the views over all history, bar by bar as a feed delivers them, the clock on
    and off the minute, with a gap that leaves a 5m bar incomplete and a feed that stops."""
    from ingest.prices import PriceIngester
    from ingest.synthetic import generate_bars

    frame = next(generate_bars(symbols=3, days=1, seed=7))
    names = sorted(frame.symbol.unique())
    gap = (frame.symbol == names[1]) & frame.ts.between(T0 + timedelta(minutes=157), T0 + timedelta(minutes=158))
    stops = (frame.symbol == names[2]) & (frame.ts > T0 + timedelta(minutes=163))
    frame = frame[~gap & ~stops]
    clock = {"now": T0 + timedelta(minutes=125)}
    prices = PriceIngester(conn, embedded_settings, source="test", clock=lambda: clock["now"])
    gate = DecisionGate(conn, embedded_settings, clock=lambda: clock["now"])
    prices.ingest([frame[frame.ts < T0 + timedelta(minutes=125)]])
    seen = {"1m": 0, "5m": 0}
    for minute in range(125, 176):
        clock["now"] = T0 + timedelta(minutes=minute + 1)
        assert prices.ingest_frame(frame[frame.ts == T0 + timedelta(minutes=minute)]).rejected == 0
        for offset in (timedelta(minutes=1), timedelta(minutes=1, seconds=17)):
            clock["now"] = now = T0 + timedelta(minutes=minute) + offset
            live = {(s.signal_id, s.action) for s in gate.undecided_signals()}
            whole = set()
            for timeframe in seen:
                since = now - gate.max_signal_age - TIMEFRAMES[timeframe]
                with read_scope(conn, embedded_settings, as_of=now):
                    found = set(conn.execute("SELECT signal_id, action FROM strategy_signal_history"
                                             " WHERE timeframe = %s AND signal_ts >= %s", (timeframe, since)))
                seen[timeframe] += len(found)
                whole |= found
            assert live == whole, now
    gate.close()
    assert min(seen.values()) > 0
