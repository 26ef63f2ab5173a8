"""The audit trail: every operator or process action that changes how the
engine trades leaves exactly one audit_log row with who, when and what."""
from __future__ import annotations

import pytest
from positions_helpers import T0, rows

from tradeflow.ops import audit
from tradeflow.trading import accounts, orders, policy


def audit_rows(conn) -> list[dict]:
    return rows(conn, "SELECT actor, action, target, details, ts FROM audit_log ORDER BY ts")


@pytest.fixture
def account(conn, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_OPERATOR", "carol")
    accounts.add(conn, "A1", capital="100000", max_leverage="1.5")
    conn.execute("TRUNCATE audit_log")  # each test below counts only its own action
    return "A1"


def test_adding_an_account_is_audited(conn, monkeypatch):
    monkeypatch.setenv("TRADEFLOW_OPERATOR", "carol")
    added = accounts.add(conn, "A1", capital="100000", max_leverage="1.5")
    [row] = audit_rows(conn)
    assert row == {"actor": "carol", "action": "ACCOUNT_ADD", "target": "A1", "ts": added.updated_at,
                   "details": {"base_currency": "USD", "initial_capital": "100000", "max_leverage": "1.5",
                               "status": "ACTIVE"}}


def test_a_status_change_is_audited_and_a_no_op_is_not(conn, account):
    blocked = accounts.set_status(conn, account, "BLOCKED", updated_by="gate")
    accounts.set_status(conn, account, "blocked")  # unchanged: no new version, no audit row
    [row] = audit_rows(conn)
    assert row == {"actor": "gate", "action": "ACCOUNT_STATUS", "target": "A1", "ts": blocked.updated_at,
                   "details": {"before": "ACTIVE", "after": "BLOCKED"}}


def test_a_policy_change_is_audited_with_before_and_after(conn, account):
    policy.update(conn, account, max_open_symbols=5, updated_by="alice")
    changed = policy.update(conn, account, max_open_symbols=3, max_drawdown_pct="0.2", updated_by="bob")
    first, second = audit_rows(conn)
    assert (first["actor"], first["action"]) == ("alice", "POLICY_CHANGE")
    assert first["details"] == {"before": {"max_open_symbols": None}, "after": {"max_open_symbols": 5}}
    assert second == {"actor": "bob", "action": "POLICY_CHANGE", "target": "A1", "ts": changed.updated_at,
                      "details": {"before": {"max_drawdown_pct": None, "max_open_symbols": 5},
                                  "after": {"max_drawdown_pct": "0.2", "max_open_symbols": 3}}}


def test_the_kill_switch_is_audited_as_such(conn, account):
    policy.update(conn, account, kill_switch=True, at=T0)  # replays pass their own clock: the row follows it
    policy.update(conn, account, kill_switch=True, updated_by="alice")  # already engaged: a plain policy write
    policy.update(conn, account, kill_switch=False, updated_by="bob")
    engaged, again, released = audit_rows(conn)
    assert (engaged["actor"], engaged["action"], engaged["ts"]) == ("carol", "KILL_SWITCH", T0)
    assert engaged["details"] == {"before": {"kill_switch": None}, "after": {"kill_switch": True}}
    assert (again["action"], again["details"]["after"]) == ("POLICY_CHANGE", {"kill_switch": True})
    assert (released["actor"], released["action"]) == ("bob", "KILL_SWITCH")
    assert released["details"] == {"before": {"kill_switch": True}, "after": {"kill_switch": False}}


def test_an_order_cancel_is_audited(conn, account):
    conn.execute("INSERT INTO order_events (client_order_id, account_id, strategy_id, symbol, side, order_type,"
                 " time_in_force, qty, status, filled_qty, event_ts, source)"
                 " VALUES ('o1', 'A1', 'sma_crossover', 'AAA', 'BUY', 'MARKET', 'DAY', 10, 'ACK', 0, %s, 'test')",
                 (T0,))
    orders.request_cancel(conn, "o1", reason="fat finger", requested_by="dave")
    [row] = audit_rows(conn)
    [command] = rows(conn, "SELECT requested_at FROM order_commands")
    assert row == {"actor": "dave", "action": "ORDER_CANCEL", "target": "o1", "ts": command["requested_at"],
                   "details": {"reason": "fat finger", "status": "ACK"}}


def test_refused_actions_leave_no_audit_row(conn, account):
    with pytest.raises(policy.PolicyError):
        policy.update(conn, account, max_open_symbols=0)
    with pytest.raises(accounts.AccountError):
        accounts.add(conn, account, capital="1")
    with pytest.raises(orders.OrderCommandError):
        orders.request_cancel(conn, "no-such-order")
    assert audit_rows(conn) == []


def test_the_audit_history_mart_shows_the_trail(conn, account):
    policy.update(conn, account, kill_switch=True, updated_by="alice")
    assert rows(conn, "SELECT actor, action, target FROM audit_history") == [
        {"actor": "alice", "action": "KILL_SWITCH", "target": "A1"}]


def test_only_known_actions_are_recorded(conn):
    with pytest.raises(ValueError, match="DROP_TABLE"):
        audit.record(conn, "mallory", "DROP_TABLE", "audit_log", {})
    assert audit_rows(conn) == []
