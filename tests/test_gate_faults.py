"""The gate killed (os._exit, as kill -9) between its writes: a decision, its NEW
order event and any block land together or not at all, and a restarted gate
decides the same signal once."""
from __future__ import annotations

import multiprocessing
import os
from datetime import timedelta

import pytest
from positions_helpers import T0, rows

from adapters.execution import CRASH_AT_ENV, CRASH_EXIT_CODE
from tradeflow import engine
from tradeflow.trading import accounts
from tradeflow.trading.gate import DecisionGate

from test_gate import signal  # noqa: E402

CLOCK = T0 + timedelta(minutes=30)


def _decide_and_die(settings, crash_at: str) -> None:
    os.environ[CRASH_AT_ENV] = crash_at
    with engine.connect(settings) as conn:
        DecisionGate(conn, settings, clock=lambda: CLOCK, max_signal_age=timedelta(days=1)).decide(signal(1, "AAA"))


@pytest.mark.parametrize(("crash_at", "written"), [
    ("gate_order_events_written", 0),   # inside the transaction: nothing stays
    ("gate_trade_decisions_written", 0),
    ("gate_committed", 1),              # after the commit: all of it stays
])
def test_a_gate_killed_at_a_write_point_leaves_all_or_nothing(conn, embedded_settings, crash_at, written):
    accounts.add(conn, "A1", capital="100000", max_leverage="1")
    child = multiprocessing.get_context("fork").Process(target=_decide_and_die, args=(embedded_settings, crash_at))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == CRASH_EXIT_CODE
    count = "SELECT (SELECT count(*) FROM trade_decisions) AS decisions, (SELECT count(*) FROM order_events) AS events"
    assert rows(conn, count) == [{"decisions": written, "events": written}]
    restarted = DecisionGate(conn, embedded_settings, clock=lambda: CLOCK, max_signal_age=timedelta(days=1))
    try:
        decision = restarted.decide(signal(1, "AAA"))
    finally:
        restarted.close()
    assert decision.accepted
    assert rows(conn, count) == [{"decisions": 1, "events": 1}]
