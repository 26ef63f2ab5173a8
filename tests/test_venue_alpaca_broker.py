"""AlpacaBroker (alpaca-py pointed at a fake Alpaca on 127.0.0.1) behind the
broker port and the execution adapter: partial fills, a reject, a cancel
racing a fill, a disconnect mid-order with a duplicated update after the
reconnect, rate limits, malformed updates dead-lettered once."""
from __future__ import annotations

import json
import random
import time
from decimal import Decimal

import pytest
from fakes.alpaca import KEY, SECRET, FakeAlpaca
from positions_helpers import T0, rows
from typer.testing import CliRunner
from venue_helpers import adapter_with_one_order

from adapters.alpaca import AlpacaBroker
from adapters.broker import BrokerError, MalformedReport
from adapters.execution import ExecutionAdapter
from adapters.orders import Order, OrderEvent, OrderStatus, Side
from adapters.resilience import CircuitBreaker, ResilientBroker, RetryPolicy
from tradeflow.cli import app
from tradeflow.clock import utc_now
from tradeflow.ops.venue_keys import Secret


@pytest.fixture
def venue():
    fake = FakeAlpaca()
    yield fake
    fake.stop()


@pytest.fixture
def broker(venue):
    b = AlpacaBroker(Secret("APCA_API_KEY_ID", KEY), Secret("APCA_API_SECRET_KEY", SECRET), paper=True,
                     url_override=venue.http, stream_url_override=f"{venue.ws}/stream", cancel_wait=5.0,
                     reconnect_min_backoff=0.05)
    venue.wait_for(lambda: venue.trade_connections == 1)
    yield b
    b.close()


def order(n: int = 1, qty: str = "10", account: str = "A1") -> Order:
    return Order(client_order_id=f"tf-{n:020d}", account_id=account, strategy_id="s", symbol="AAPL", side=Side.BUY,
                 qty=Decimal(qty), created_at=T0)


def events_until(broker: AlpacaBroker, done, timeout: float = 10.0) -> list[OrderEvent]:
    """poll_events until done(all events so far) holds, within a deadline."""
    seen: list[OrderEvent] = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"events so far: {[(e.status, e.filled_qty) for e in seen]}")
        seen += broker.poll_events()
        time.sleep(0.01)
    return seen


def statuses(events: list[OrderEvent]) -> list[tuple[str, Decimal]]:
    return [(str(e.status), e.filled_qty) for e in events]


def test_submit_sends_our_client_order_id_and_partial_fills_become_partial_then_filled(venue, broker):
    ack = broker.submit(order())
    assert ack.status is OrderStatus.ACK and ack.broker_order_id == venue.order("tf-00000000000000000001")["id"]
    [(method, path, body)] = [r for r in venue.requests if r[0] == "POST"]
    assert body["client_order_id"] == "tf-00000000000000000001" and body["qty"] == "10"
    venue.fill("tf-00000000000000000001", "4", "100.5")
    venue.fill("tf-00000000000000000001", "6", "100.25")
    events = events_until(broker, lambda es: any(e.status is OrderStatus.FILLED for e in es))
    assert statuses(events) == [("ACK", 0), ("PARTIAL", 4), ("FILLED", 10)]
    assert [(e.last_fill_qty, e.last_fill_price) for e in events[1:]] == [(4, Decimal("100.5")), (6, Decimal("100.25"))]
    assert all(e.fill_id for e in events[1:]) and events[1].fill_id != events[2].fill_id


def test_resubmitting_a_known_id_returns_the_existing_order_without_a_second_one(venue, broker):
    broker.submit(order())
    fresh = AlpacaBroker(Secret("k", KEY), Secret("s", SECRET), url_override=venue.http,
                         stream_url_override=f"{venue.ws}/stream")  # a restarted adapter: knows nothing
    try:
        again = fresh.submit(order())
        assert again.status is OrderStatus.ACK and len(venue.orders) == 1
        with pytest.raises(BrokerError) as err:
            fresh.submit(order(qty="11"))
        assert not err.value.retryable
    finally:
        fresh.close()


def test_a_venue_refusal_is_a_rejected_event_with_the_venue_reason(venue, broker):
    venue.reject_next = "insufficient buying power"
    event = broker.submit(order())
    assert event.status is OrderStatus.REJECTED and event.reason == "alpaca: insufficient buying power"
    assert statuses(broker.poll_events()) == [("REJECTED", 0)]


def test_cancel_returns_cancelled_with_the_filled_quantity(venue, broker):
    broker.submit(order())
    venue.fill("tf-00000000000000000001", "3", "100")
    events_until(broker, lambda es: len(es) == 2)
    cancelled = broker.cancel("tf-00000000000000000001")
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.filled_qty == 3
    assert broker.cancel("tf-00000000000000000001") == cancelled  # terminal: unchanged, nothing sent
    with pytest.raises(BrokerError):
        broker.cancel("tf-unknown")


def test_a_cancel_racing_a_fill_ends_filled_and_never_invents_a_fill(venue, broker):
    broker.submit(order())
    venue.hold_cancels = True  # the cancel is pending at the venue when the fill wins
    racing = broker.cancel_wait
    broker.cancel_wait = 0.2
    answer = broker.cancel("tf-00000000000000000001")
    broker.cancel_wait = racing
    assert answer.status is OrderStatus.ACK  # the latest known step, nothing made up
    venue.fill("tf-00000000000000000001", "10", "99")
    events = events_until(broker, lambda es: any(e.status.terminal for e in es))
    assert statuses(events) == [("ACK", 0), ("FILLED", 10)]
    assert broker.cancel("tf-00000000000000000001").status is OrderStatus.FILLED


def test_updates_missed_while_disconnected_come_from_rest_and_a_resent_update_is_dropped(venue, broker):
    broker.submit(order())
    venue.fill("tf-00000000000000000001", "4", "100")
    events = events_until(broker, lambda es: len(es) == 2)
    venue.drop_streams()
    venue.fill("tf-00000000000000000001", "6", "101", send=False)  # executed while the stream was down
    venue.wait_for(lambda: venue.trade_connections == 2)
    events += events_until(broker, lambda es: len(es) == 1)
    venue.resend(-1)  # the venue re-sends the partial fill after the reconnect
    venue.resend(-1)
    malformed = {"stream": "trade_updates", "data": {"event": "fill"}}  # no order
    venue.send_raw(malformed)
    venue.send_raw(malformed)  # sent again: set aside once
    reports = []
    deadline = time.monotonic() + 5
    while not reports and time.monotonic() < deadline:
        reports += broker.poll_malformed()
        time.sleep(0.01)
    events += broker.poll_events()
    assert statuses(events) == [("ACK", 0), ("PARTIAL", 4), ("FILLED", 10)]
    assert broker.reconnects == 1 and reports == [MalformedReport("alpaca", malformed, "data.order", "missing")]
    assert broker.poll_malformed() == []


def test_rate_limit_answers_are_retried_with_backoff_through_the_resilient_broker(venue, broker):
    waits: list[float] = []
    resilient = ResilientBroker(broker, CircuitBreaker(failure_threshold=5),
                                RetryPolicy(attempts=4, sleep=waits.append, rng=random.Random(1)))
    venue.rate_limited = 2
    assert resilient.submit(order()).status is OrderStatus.ACK
    assert len(waits) == 2 and waits[1] > waits[0] * 0.9 and len(venue.orders) == 1
    venue.rate_limited = 10
    with pytest.raises(BrokerError) as err:
        resilient.submit(order(2))
    assert err.value.retryable and "429" in str(err.value)


def test_bad_credentials_are_a_permanent_error_without_the_key(venue):
    bad = AlpacaBroker(Secret("APCA_API_KEY_ID", "wrong-key-123"), Secret("APCA_API_SECRET_KEY", "wrong-secret-456"),
                       url_override=venue.http, stream_url_override=f"{venue.ws}/stream")
    try:
        with pytest.raises(BrokerError) as err:
            bad.submit(order())
        assert not err.value.retryable
        assert "wrong-key-123" not in str(err.value) and "wrong-secret-456" not in str(err.value)
    finally:
        bad.close()


# -- through the execution adapter -----------------------------------------------------------
def test_a_duplicated_update_after_a_reconnect_records_one_fill(conn, embedded_settings, venue, broker):
    adapter, feed, decision = adapter_with_one_order(conn, embedded_settings, broker, "AAPL", "alpaca-test")
    coid = decision.client_order_id
    half = str(decision.qty / 2)
    venue.fill(coid, half, "100")
    venue.drop_streams()  # disconnect mid-order
    venue.wait_for(lambda: venue.trade_connections == 2)
    venue.resend(-1)  # the partial fill again, after the reconnect
    venue.fill(coid, str(decision.qty - Decimal(half)), "101")
    deadline = time.monotonic() + 10
    while rows(conn, "SELECT status FROM orders WHERE client_order_id = %s", (coid,))[0]["status"] != "FILLED":
        assert time.monotonic() < deadline, "order never filled"
        adapter.process_reports()
        time.sleep(0.02)
    fills = rows(conn, "SELECT fill_qty, fill_price, venue FROM exec_report_history WHERE order_id = %s"
                       " ORDER BY exec_ts, fill_qty", (coid,))
    assert [f["fill_qty"] for f in fills] == [Decimal(half), decision.qty - Decimal(half)]
    assert {f["venue"] for f in fills} == {"BROKER"}
    [position] = rows(conn, "SELECT net_qty FROM open_positions_rollup WHERE account_id = 'A1'")
    assert position["net_qty"] == decision.qty
    feed.close()


def dead_letters(conn) -> list[dict]:
    return rows(conn, "SELECT kind, payload, field, reason_code, source FROM dead_letter WHERE kind = 'venue_report'"
                      " ORDER BY field")


def test_a_malformed_trade_update_is_dead_lettered_once_and_the_other_orders_fill(conn, embedded_settings, venue,
                                                                                broker, caplog):
    adapter, feed, decision = adapter_with_one_order(conn, embedded_settings, broker, "AAPL", "alpaca-test")
    coid = decision.client_order_id
    # a fill of our order whose price is not a number, then one with no quantity: neither can be an event
    bad_price = {"stream": "trade_updates", "data": {
        "event": "partial_fill", "order": dict(venue.order(coid), filled_qty="1"), "timestamp": "2024-03-04T14:31:00Z",
        "execution_id": "x-1", "price": "n/a", "qty": "1"}}
    no_qty = {"stream": "trade_updates", "data": dict(bad_price["data"], price="100", qty=None, execution_id="x-2")}
    venue.send_raw(bad_price)
    venue.fill(coid, str(decision.qty), "100")
    venue.send_raw(no_qty)
    venue.resend(-1)  # the good fill again
    deadline = time.monotonic() + 10
    while rows(conn, "SELECT status FROM orders WHERE client_order_id = %s", (coid,))[0]["status"] != "FILLED" \
            or len(dead_letters(conn)) < 2:
        assert time.monotonic() < deadline, "order never filled, or the malformed updates never dead-lettered"
        adapter.process_reports()
        time.sleep(0.02)
    letters = dead_letters(conn)
    assert [(d["payload"], d["field"], d["reason_code"], d["source"]) for d in letters] == [
        (bad_price, "data.price", "VENUE_REPORT_MALFORMED", "alpaca"),
        (no_qty, "data.qty", "VENUE_REPORT_MALFORMED", "alpaca")]
    [fill] = rows(conn, "SELECT fill_qty, fill_price FROM exec_report_history WHERE order_id = %s", (coid,))
    assert (fill["fill_qty"], fill["fill_price"]) == (decision.qty, 100)
    # a restart reads the same updates again: no second letter
    caplog.clear()
    again = AlpacaBroker(Secret("k", KEY), Secret("s", SECRET), url_override=venue.http,
                         stream_url_override=f"{venue.ws}/stream")
    try:
        venue.wait_for(lambda: venue.trade_connections == 2)
        restarted = ExecutionAdapter(conn, embedded_settings, again, feed, adapter.positions, clock=utc_now)
        venue.send_raw(bad_price)
        deadline = time.monotonic() + 5
        while "malformed alpaca report" not in caplog.text:  # set aside by the restarted broker
            assert time.monotonic() < deadline, "the restarted broker never read the update"
            time.sleep(0.01)
        restarted.process_reports()
    finally:
        again.close()
    assert len(dead_letters(conn)) == 2
    listed = CliRunner().invoke(app, ["dlq", "list", "--kind", "venue_report", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {(d["field"], d["source"]) for d in json.loads(listed.output)} == {("data.price", "alpaca"),
                                                                              ("data.qty", "alpaca")}
    refused = CliRunner().invoke(app, ["dlq", "replay", "--kind", "venue_report"])
    assert refused.exit_code == 2 and "has no replay" in refused.output
    feed.close()
