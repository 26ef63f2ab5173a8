"""CcxtBroker (ccxt pointed at a fake Binance on 127.0.0.1) behind the broker port and
the execution adapter: newClientOrderId, partial fills, a reject, a cancel racing a
fill, a disconnect mid-order and a duplicated trade after it, rate limits, bad keys,
an expiry, start-up history, routing by account, malformed trades dead-lettered once;
the capability check of other ccxt exchanges (their classes, no network)."""
from __future__ import annotations

import dataclasses
import json
import random
import time
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest
from fakes.binance import KEY, SECRET, FakeBinance
from positions_helpers import T0, rows
from typer.testing import CliRunner
from venue_helpers import adapter_with_one_order, buy_signal

from adapters.broker import BrokerError, MalformedReport
from adapters.ccxt_broker import CcxtBroker
from adapters.ccxt_exchanges import UnsupportedExchange, check_bars, check_broker, exchange_id, rest_exchange
from adapters.execution import ExecutionAdapter
from adapters.orders import Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from adapters.resilience import CircuitBreaker, ResilientBroker, RetryPolicy
from ingest.prices import PriceIngester
from tradeflow.cli import app
from tradeflow.clock import utc_now
from tradeflow.ops.metrics import PROCESS_REGISTRY
from tradeflow.ops.venue_keys import Secret
from tradeflow.trading import accounts
from tradeflow.trading.daemon import PaperAdapter
from tradeflow.trading.gate import DecisionGate, Signal

SYMBOL = "BTC/USDT"


@pytest.fixture
def venue():
    fake = FakeBinance()
    yield fake
    fake.stop()


def binance(venue: FakeBinance, key: str = KEY, secret: str = SECRET, **kwargs) -> CcxtBroker:
    exchange = rest_exchange("binance", {"apiKey": Secret("BINANCE_API_KEY", key),
                                         "secret": Secret("BINANCE_API_SECRET", secret)}, rest_url=venue.http)
    return CcxtBroker(exchange, poll_interval=0, **kwargs)


@pytest.fixture
def broker(venue):
    return binance(venue)


def order(n: int = 1, qty: str = "0.5", **fields) -> Order:
    return Order(client_order_id=f"tf-{n:020d}", account_id="A1", strategy_id="s", symbol=SYMBOL, side=Side.BUY,
                 qty=Decimal(qty), created_at=T0, **fields)


def statuses(events: list[OrderEvent]) -> list[tuple[str, Decimal]]:
    return [(str(e.status), e.filled_qty) for e in events]


COID = "tf-00000000000000000001"


def test_submit_sends_our_id_as_new_client_order_id_and_trades_become_partial_then_filled(venue, broker):
    ack = broker.submit(order())
    assert ack.status is OrderStatus.ACK and ack.broker_order_id == str(venue.order(COID)["orderId"])
    [posted] = venue.posted()
    assert posted["newClientOrderId"] == COID and posted["quantity"] == "0.5" and posted["type"] == "MARKET"
    venue.fill(COID, "0.2", "60000.5", commission="0.012", asset="USDT")
    venue.fill(COID, "0.3", "60001.25", commission="0.0003", asset="BTC")  # paid in the base asset
    events = broker.poll_events()
    assert statuses(events) == [("ACK", 0), ("PARTIAL", Decimal("0.2")), ("FILLED", Decimal("0.5"))]
    assert [(e.last_fill_qty, e.last_fill_price, e.fee) for e in events[1:]] == [
        (Decimal("0.2"), Decimal("60000.5"), Decimal("0.012")),
        (Decimal("0.3"), Decimal("60001.25"), Decimal("0.0003") * Decimal("60001.25"))]
    assert [e.fill_id for e in events[1:]] == ["BTCUSDT:5000", "BTCUSDT:5001"]
    assert broker.poll_events() == []  # nothing new: nothing reported twice


@pytest.mark.parametrize(("fields", "sent"), [
    ({"order_type": OrderType.LIMIT, "limit_price": Decimal("59000.10"), "time_in_force": TimeInForce.IOC},
     {"type": "LIMIT", "price": "59000.1", "timeInForce": "IOC"}),  # ccxt trims to the tick size
    ({"order_type": OrderType.STOP, "stop_price": Decimal("55000"), "time_in_force": TimeInForce.GTC},
     {"type": "STOP_LOSS", "stopPrice": "55000"}),
])
def test_limit_and_stop_orders_are_sent_as_binance_order_types(venue, broker, fields, sent):
    assert broker.submit(order(**fields)).status is OrderStatus.ACK
    [posted] = venue.posted()
    assert {k: posted.get(k) for k in sent} == sent


def test_a_day_order_is_refused_here_binance_spot_has_no_day(venue, broker):
    event = broker.submit(order(order_type=OrderType.LIMIT, limit_price=Decimal(1), time_in_force=TimeInForce.DAY))
    assert event.status is OrderStatus.REJECTED and "DAY is not supported" in event.reason
    assert venue.posted() == []


def test_resubmitting_a_known_id_after_a_restart_finds_the_order_and_creates_none(venue, broker):
    broker.submit(order())
    venue.fill(COID, "0.5", "60000")  # filled: Binance would take the same newClientOrderId again
    fresh = binance(venue)  # a restarted adapter: knows nothing
    again = fresh.submit(order())
    assert len(venue.posted()) == 1 and again.status is OrderStatus.FILLED
    assert statuses(fresh.poll_events()) == [("ACK", 0), ("FILLED", Decimal("0.5"))]
    with pytest.raises(BrokerError) as err:
        binance(venue).submit(order(qty="0.6"))
    assert not err.value.retryable


def test_a_venue_refusal_is_a_rejected_event_with_binance_reason(venue, broker):
    venue.reject_next = "insufficient"
    event = broker.submit(order())
    assert event.status is OrderStatus.REJECTED
    assert event.reason == "binance: Account has insufficient balance for requested action."
    assert statuses(broker.poll_events()) == [("REJECTED", 0)]


def test_cancel_returns_cancelled_with_the_filled_quantity(venue, broker):
    broker.submit(order())
    venue.fill(COID, "0.1", "60000")
    assert len(broker.poll_events()) == 2
    cancelled = broker.cancel(COID)
    assert cancelled.status is OrderStatus.CANCELLED and cancelled.filled_qty == Decimal("0.1")
    assert cancelled.reason == "binance: canceled"
    requests = len(venue.requests)
    assert broker.cancel(COID) == cancelled and len(venue.requests) == requests  # terminal: nothing sent
    with pytest.raises(BrokerError):
        broker.cancel("tf-unknown")


def test_a_cancel_racing_a_fill_ends_filled_and_never_invents_a_fill(venue, broker):
    broker.submit(order())
    venue.fill_on_cancel = True  # the order fills before the DELETE reaches it: "Unknown order sent."
    answer = broker.cancel(COID)
    assert answer.status is OrderStatus.FILLED and answer.filled_qty == Decimal("0.5")
    events = broker.poll_events()
    assert statuses(events) == [("ACK", 0), ("FILLED", Decimal("0.5"))]
    assert len(venue.trades) == 1


def test_an_expired_remainder_ends_expired_after_its_fills(venue, broker):
    broker.submit(order(order_type=OrderType.LIMIT, limit_price=Decimal(60000), time_in_force=TimeInForce.IOC))
    venue.fill(COID, "0.2", "60000")
    venue.finish(COID, "EXPIRED")
    events = broker.poll_events()
    assert statuses(events) == [("ACK", 0), ("PARTIAL", Decimal("0.2")), ("EXPIRED", Decimal("0.2"))]
    assert events[-1].reason == "binance: expired"


def test_a_disconnect_mid_order_loses_nothing_and_a_trade_listed_twice_is_one_fill(venue, broker):
    broker.submit(order())
    venue.fill(COID, "0.2", "60000")
    events = broker.poll_events()
    venue.disconnects = 1  # the next poll's connection drops without an answer
    venue.fill(COID, "0.3", "60010")  # executed while we could not ask
    assert broker.poll_events() == [] and broker.poll_failures == 1
    venue.duplicate_trades = True  # after the reconnect the venue lists each trade twice
    events += broker.poll_events()
    events += broker.poll_events()
    assert statuses(events) == [("ACK", 0), ("PARTIAL", Decimal("0.2")), ("FILLED", Decimal("0.5"))]


def test_rate_limit_answers_are_retried_with_backoff_through_the_resilient_broker(venue, broker):
    waits: list[float] = []
    resilient = ResilientBroker(broker, CircuitBreaker(failure_threshold=5),
                                RetryPolicy(attempts=4, sleep=waits.append, rng=random.Random(1)))
    venue.rate_limited = 2
    assert resilient.submit(order()).status is OrderStatus.ACK
    assert len(waits) == 2 and waits[1] > waits[0] * 0.9 and len(venue.posted()) == 1
    venue.rate_limited = 10
    with pytest.raises(BrokerError) as err:
        resilient.submit(order(2))
    assert err.value.retryable and "-1003" in str(err.value)
    venue.rate_limited = 0
    assert statuses(broker.poll_events()) == [("ACK", 0)]
    venue.rate_limited = 1
    venue.fill(COID, "0.5", "60000")
    assert broker.poll_events() == [] and broker.poll_failures == 1  # a poll refused is tried again later
    assert statuses(broker.poll_events()) == [("FILLED", Decimal("0.5"))]


def test_bad_credentials_are_a_permanent_error_without_the_key_or_a_signature(venue):
    bad = binance(venue, key="wrong-key-123", secret="wrong-secret-456")
    with pytest.raises(BrokerError) as err:
        bad.submit(order())
    assert not err.value.retryable
    text = str(err.value)
    assert "wrong-key-123" not in text and "wrong-secret-456" not in text and "signature" not in text


def test_order_history_after_a_restart_needs_the_symbol_and_reads_fills(venue, broker):
    broker.submit(order())
    venue.fill(COID, "0.5", "60000")
    fresh = binance(venue, symbol_of={COID: SYMBOL}.get)
    assert statuses(fresh.order_history([COID, "tf-never-sent"])) == [("ACK", 0), ("FILLED", Decimal("0.5"))]
    assert binance(venue).order_history([COID]) == []  # no symbol: Binance cannot be asked


# -- through the execution adapter -----------------------------------------------------------
def signal(n: int) -> Signal:
    return buy_signal(SYMBOL, n)


def wait_status(conn, adapter_step, coid: str, status: str) -> None:
    deadline = time.monotonic() + 10
    while rows(conn, "SELECT status FROM orders WHERE client_order_id = %s", (coid,))[0]["status"] != status:
        assert time.monotonic() < deadline, f"order never {status}"
        adapter_step()
        time.sleep(0.02)


def test_a_trade_listed_again_after_a_disconnect_records_one_fill(conn, embedded_settings, venue, broker):
    adapter, feed, decision = adapter_with_one_order(conn, embedded_settings, broker, SYMBOL, "binance-test")
    coid = decision.client_order_id
    half = decision.qty / 2
    venue.fill(coid, str(half), "100")
    adapter.process_reports()
    venue.disconnects = 1  # disconnect mid-order
    venue.fill(coid, str(decision.qty - half), "101")
    adapter.process_reports()
    venue.duplicate_trades = True
    wait_status(conn, adapter.process_reports, coid, "FILLED")
    fills = rows(conn, "SELECT fill_qty, fill_price, venue FROM exec_report_history WHERE order_id = %s"
                       " ORDER BY exec_ts, fill_qty", (coid,))
    assert [(f["fill_qty"], f["fill_price"]) for f in fills] == [(half, 100), (decision.qty - half, 101)]
    [position] = rows(conn, "SELECT net_qty FROM open_positions_rollup WHERE account_id = 'A1'")
    assert position["net_qty"] == decision.qty
    feed.close()


def bars(minute: int, price: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame([{"symbol": SYMBOL, "ts": T0 + timedelta(minutes=minute), "open": price,
                          "high": price + 1, "low": price - 1, "close": price, "volume": 1_000_000.0}])


def test_paper_orders_never_reach_binance_and_real_orders_never_fill_on_paper(conn, embedded_settings, venue):
    settings = dataclasses.replace(embedded_settings, paper_accounts=frozenset({"P1"}))
    conn.execute("TRUNCATE adapter_feed_position")
    clock = lambda: T0 + timedelta(minutes=1)  # noqa: E731
    prices = PriceIngester(conn, settings, source="test", clock=clock)
    prices.ingest_frame(bars(0))
    accounts.add(conn, "REAL1", capital="1000000")
    DecisionGate(conn, settings, clock=clock).decide(signal(0))
    accounts.set_status(conn, "REAL1", "BLOCKED")
    accounts.add(conn, "P1", capital="1000000")
    DecisionGate(conn, settings, clock=clock, shadow=True).decide(signal(1))
    by_account = {r["account_id"]: r["client_order_id"] for r in rows(
        conn, "SELECT account_id, client_order_id FROM accepted_trade_signal_history")}
    assert set(by_account) == {"REAL1", "P1", "paper:sma_crossover"}
    broker = binance(venue)
    adapter = PaperAdapter(conn, settings, clock=utc_now, venue=broker)
    assert broker.symbol_of is not None  # the daemon tells the venue where to find an order's symbol
    adapter.step(timeout=2)
    prices.ingest_frame(bars(1, price=101.0))
    adapter.step(timeout=0.5)
    assert [p["newClientOrderId"] for p in venue.posted()] == [by_account["REAL1"]]  # no paper order reached it
    status = {r["client_order_id"]: r["status"] for r in rows(conn, "SELECT client_order_id, status FROM orders")}
    assert status[by_account["P1"]] == "FILLED" and status[by_account["paper:sma_crossover"]] == "FILLED"
    assert status[by_account["REAL1"]] == "ACK"  # the paper book traded the bar; the real order waits
    venue.fill(by_account["REAL1"], venue.order(by_account["REAL1"])["origQty"], "100.5")
    wait_status(conn, lambda: adapter.step(timeout=0.05), by_account["REAL1"], "FILLED")
    venues = {r["order_id"]: r["venue"] for r in rows(conn, "SELECT order_id, venue FROM exec_report_history")}
    assert venues == {by_account["REAL1"]: "BROKER", by_account["P1"]: "PAPER",
                      by_account["paper:sma_crossover"]: "PAPER"}
    adapter.close()


def test_adapter_run_with_binance_and_no_keys_is_one_line_naming_the_variable(embedded_settings, monkeypatch):
    for var in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "TRADEFLOW_VENUE_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["adapter", "run", "--broker", "ccxt:binance", "--once"])
    assert result.exit_code == 2
    assert result.output.strip() == ("missing credential: set BINANCE_API_KEY"
                                     " (or in a file named by TRADEFLOW_VENUE_CREDENTIALS_FILE)")


# -- malformed trades ------------------------------------------------------------------------
def test_a_malformed_trade_is_set_aside_once_and_the_order_and_the_others_go_on(venue, broker):
    broker.submit(order(1))
    broker.submit(order(2))
    coid2 = "tf-00000000000000000002"
    venue.fill(COID, "0", "60000")  # a trade of no quantity: not a fill
    venue.fill(COID, "0.5", "60000")
    venue.fill(coid2, "0.5", "61000")
    events = broker.poll_events()
    assert sorted((e.client_order_id, str(e.status), e.filled_qty) for e in events) == [
        (COID, "ACK", 0), (COID, "FILLED", Decimal("0.5")), (coid2, "ACK", 0), (coid2, "FILLED", Decimal("0.5"))]
    [report] = broker.poll_malformed()
    assert report == MalformedReport("ccxt:binance", venue.trades[0], "amount", "must be positive, got 0")
    broker.order_history([COID])  # read again (a resync): set aside once
    assert broker.poll_malformed() == []


def test_an_order_done_at_the_venue_whose_trades_cannot_add_up_is_not_polled_forever(venue, broker):
    broker.submit(order())
    venue.fill(COID, "0.2", "60000")
    venue.fill(COID, "0.3", "0")  # a price of 0: the order is FILLED at the venue, its last trade unreadable
    assert statuses(broker.poll_events()) == [("ACK", 0), ("PARTIAL", Decimal("0.2"))]
    [report] = broker.poll_malformed()
    assert (report.payload, report.field) == (venue.trades[1], "price")
    requests = len(venue.requests)
    assert broker.poll_events() == [] and len(venue.requests) == requests  # held: the venue is not asked again


def test_a_malformed_trade_reaches_the_dead_letter_table_once_with_its_payload(conn, embedded_settings, venue,
                                                                              broker):
    def dead_lettered() -> float:
        return PROCESS_REGISTRY.get_sample_value("adapter_venue_reports_dead_lettered_total",
                                                 {"venue": "ccxt:binance"}) or 0

    counted = dead_lettered()
    adapter, feed, decision = adapter_with_one_order(conn, embedded_settings, broker, SYMBOL, "binance-test")
    coid = decision.client_order_id
    venue.fill(coid, "0", "100")
    venue.fill(coid, str(decision.qty), "100")
    wait_status(conn, adapter.process_reports, coid, "FILLED")
    adapter.process_reports()
    letters = rows(conn, "SELECT payload, field, reason_code, source FROM dead_letter WHERE kind = 'venue_report'")
    assert letters == [{"payload": venue.trades[0], "field": "amount", "reason_code": "VENUE_REPORT_MALFORMED",
                        "source": "ccxt:binance"}]
    [fill] = rows(conn, "SELECT fill_qty, fill_price FROM exec_report_history WHERE order_id = %s", (coid,))
    assert (fill["fill_qty"], fill["fill_price"]) == (decision.qty, 100)
    # a restart re-reads the order's history (here asked for it again): no second letter
    restarted = ExecutionAdapter(conn, embedded_settings, binance(venue, symbol_of={coid: SYMBOL}.get), feed,
                                 adapter.positions, clock=utc_now)
    assert restarted.broker.order_history([coid])
    restarted.process_reports()
    assert rows(conn, "SELECT count(*) AS n FROM dead_letter WHERE kind = 'venue_report'") == [{"n": 1}]
    assert dead_lettered() == counted + 1  # the letter written, not each time the trade was read
    listed = CliRunner().invoke(app, ["dlq", "list", "--kind", "venue_report", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [(d["reason_code"], d["source"]) for d in json.loads(listed.output)] == [
        ("VENUE_REPORT_MALFORMED", "ccxt:binance")]
    feed.close()


# -- other ccxt exchanges (their classes as ccxt describes them: no network) ------------------------------
@pytest.mark.parametrize("name", ["binance", "kraken", "coinbase", "bybit", "okx"])
def test_exchanges_with_the_needed_capabilities_pass_the_broker_and_bar_checks(name):
    exchange = rest_exchange(exchange_id(f"ccxt:{name}"))
    check_broker(exchange)
    check_bars(exchange)


@pytest.mark.parametrize(("name", "check", "missing"), [
    ("bitflyer", check_broker, "createOrder's clientOrderId param"),  # ccxt's bitflyer sends no client id
    ("bitflyer", check_bars, "fetchOHLCV"),
])
def test_an_exchange_without_a_capability_is_one_line_naming_it(name, check, missing):
    with pytest.raises(UnsupportedExchange) as err:
        check(rest_exchange(name))
    assert str(err.value) == f"ccxt exchange {name!r} cannot be {'a broker' if check is check_broker else 'a bar source'}" \
                             f": ccxt gives it no {missing}"


@pytest.mark.parametrize(("args", "message"), [
    (["adapter", "run", "--broker", "ccxt:nosuchexchange", "--once"],
     "ccxt exchange 'nosuchexchange' is unknown: the valid ids are ccxt.exchanges"
     " (python -c 'import ccxt; print(ccxt.exchanges)')"),
    (["adapter", "run", "--broker", "ccxt:bitflyer", "--once"],
     "ccxt exchange 'bitflyer' cannot be a broker: ccxt gives it no createOrder's clientOrderId param"),
    (["adapter", "run", "--broker", "ccxt:kraken", "--once"],
     "missing credential: set KRAKEN_API_KEY (or in a file named by TRADEFLOW_VENUE_CREDENTIALS_FILE)"),
    (["data", "download", "--source", "ccxt:bitflyer", "--symbols", "BTC/JPY", "--from", "2024-01-01",
      "--to", "2024-01-02"], "error: ccxt exchange 'bitflyer' cannot be a bar source: ccxt gives it no fetchOHLCV"),
    (["ingest", "live", "--source", "ccxt:bitflyer", "--symbols", "BTC/JPY"],
     "error: ccxt exchange 'bitflyer' cannot be a bar source: ccxt gives it no fetchOHLCV"),
])
def test_an_unusable_ccxt_exchange_is_one_line(embedded_settings, monkeypatch, args, message):
    for var in ("KRAKEN_API_KEY", "KRAKEN_API_SECRET", "TRADEFLOW_VENUE_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip() == message
