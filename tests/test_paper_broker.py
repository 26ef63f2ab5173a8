"""PaperBroker: fill timing, prices, fees, participation, time in force, idempotency, determinism."""
from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal as D

import pytest

from adapters.broker import Broker, BrokerError
from adapters.orders import Order, OrderEvent, OrderStatus, OrderType, Side, TimeInForce
from adapters.paper import PaperBroker, PaperConfig
from ingest.synthetic import generate_bars

T0 = datetime(2024, 3, 4, 14, 30, tzinfo=UTC)
CLOCK_TS = T0 + timedelta(seconds=45)  # when submit/cancel happen in these tests


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def make_order(coid: str = "o1", **fields: object) -> Order:
    values = dict(client_order_id=coid, account_id="ACC1", strategy_id="s1", symbol="AAPL", side=Side.BUY,
                  qty=D(100), time_in_force=TimeInForce.GTC, created_at=T0 + timedelta(seconds=30))
    return Order(**(values | fields))


def make_broker(**config: object) -> PaperBroker:
    return PaperBroker(PaperConfig(**config), clock=lambda: CLOCK_TS)


def feed(broker: PaperBroker, ts: datetime, open: str, high: str, low: str, close: str, volume: int = 100_000,
         symbol: str = "AAPL") -> None:
    broker.on_bar(symbol, ts, D(open), D(high), D(low), D(close), D(volume))


def ack(coid: str = "o1") -> OrderEvent:
    return OrderEvent(client_order_id=coid, status=OrderStatus.ACK, event_ts=CLOCK_TS, broker_order_id=f"paper-{coid}")


def fill(status: OrderStatus, ts: datetime, cum: str, qty: str, price: str, fee: str = "0", n: int = 1,
         coid: str = "o1") -> OrderEvent:
    return OrderEvent(client_order_id=coid, status=status, event_ts=ts, filled_qty=D(cum), last_fill_qty=D(qty),
                      last_fill_price=D(price), fee=D(fee), fill_id=f"{coid}-{n}", broker_order_id=f"paper-{coid}")


def test_paper_broker_is_a_broker():
    assert isinstance(make_broker(), Broker)


@pytest.mark.parametrize("fill_at, side, price, fee, at", [
    # 100 * (1 +/- 5 bps), rounded against the order; fee 0.005/share + 1 bp of notional, rounded up to the cent
    ("open", Side.BUY, "100.05", "1.51", minute(1)),     # 0.5 + 1.0005
    ("open", Side.SELL, "99.95", "1.50", minute(1)),     # 0.5 + 0.9995
    ("close", Side.BUY, "101.06", "1.52", minute(2)),    # 101.0505 up; 0.5 + 1.0106; stamped at the bar's end
    ("close", Side.SELL, "100.94", "1.51", minute(2)),   # 100.9495 down; 0.5 + 1.0094
])
def test_market_order_fills_at_next_bar_with_slippage_and_fees(fill_at, side, price, fee, at):
    broker = make_broker(fill_at=fill_at, slippage_bps=D(5), fee_per_share=D("0.005"), fee_bps=D(1))
    assert broker.submit(make_order(side=side)) == ack()
    feed(broker, minute(0), "90", "91", "89", "90")  # the bar it was placed in: never filled from
    assert broker.poll_events() == [ack()]
    feed(broker, minute(1), "100", "102", "99", "101")
    assert broker.poll_events() == [fill(OrderStatus.FILLED, at, "100", "100", price, fee)]


@pytest.mark.parametrize("created, first_bar", [
    (T0, 0),                              # placed at 14:30:00, after bar 14:29 closed: bar 14:30 is next
    (T0 + timedelta(microseconds=1), 1),  # placed during bar 14:30
    (T0 + timedelta(seconds=59), 1),
])
def test_order_trades_from_the_bar_after_the_one_it_was_placed_in(created, first_bar):
    broker = make_broker()
    broker.submit(make_order(created_at=created))
    for n in range(2):
        feed(broker, minute(n), f"{100 + n}", "105", "95", "100")
    assert broker.poll_events()[1].last_fill_price == D(100 + first_bar)


def test_min_fee_applies_once_per_order_across_partial_fills():
    broker = make_broker(fee_per_share=D("0.005"), min_fee=D(1))
    broker.submit(make_order(qty=D(250)))
    for n in (1, 2, 3):
        feed(broker, minute(n), "10", "10", "10", "10", volume=1000)
    # cumulative fee max(1, 0.005 x filled): 1.00, 1.00, 1.25
    assert [(e.last_fill_qty, e.fee) for e in broker.poll_events()[1:]] == [
        (D(100), D("1.00")), (D(100), D("0.00")), (D(50), D("0.25"))]


def test_partial_fills_follow_volume_participation():
    broker = make_broker(max_participation=D("0.1"))
    broker.submit(make_order(qty=D(250)))
    feed(broker, minute(1), "10.00", "10.50", "9.50", "10.20", volume=1000)
    feed(broker, minute(2), "10.20", "10.50", "9.50", "10.30", volume=1009)  # 100.9 rounds down to a lot
    feed(broker, minute(3), "10.30", "10.50", "9.50", "10.40", volume=5000)
    assert broker.poll_events()[1:] == [
        fill(OrderStatus.PARTIAL, minute(1), "100", "100", "10.00", n=1),
        fill(OrderStatus.PARTIAL, minute(2), "200", "100", "10.20", n=2),
        fill(OrderStatus.FILLED, minute(3), "250", "50", "10.30", n=3),
    ]


def test_orders_share_a_bars_participation_first_submitted_first():
    broker = make_broker(max_participation=D("0.1"))
    broker.submit(make_order("o1", qty=D(150)))
    broker.submit(make_order("o2", qty=D(100), side=Side.SELL))
    for n in (1, 2, 3):
        feed(broker, minute(n), "10", "10", "10", "10", volume=1000)
    fills = [(e.client_order_id, e.event_ts, e.last_fill_qty) for e in broker.poll_events() if e.fill_id]
    assert fills == [("o1", minute(1), D(100)),
                     ("o1", minute(2), D(50)), ("o2", minute(2), D(50)),
                     ("o2", minute(3), D(50))]


def test_fractional_lot_size():
    broker = make_broker(lot_size=D("0.001"), max_participation=D("0.5"))
    broker.submit(make_order(qty=D("0.75")))
    feed(broker, minute(1), "60000", "60000", "60000", "60000", volume=D("1.0005"))
    assert broker.poll_events()[1].last_fill_qty == D("0.500")


def test_ioc_remainder_is_cancelled_after_the_first_bar():
    broker = make_broker()
    broker.submit(make_order(qty=D(250), time_in_force=TimeInForce.IOC))
    feed(broker, minute(1), "10", "10", "10", "10", volume=1000)
    feed(broker, minute(2), "10", "10", "10", "10", volume=1000)
    assert broker.poll_events()[1:] == [
        fill(OrderStatus.PARTIAL, minute(1), "100", "100", "10.00"),
        OrderEvent(client_order_id="o1", status=OrderStatus.CANCELLED, event_ts=minute(2), filled_qty=D(100),
                   broker_order_id="paper-o1", reason="IOC: remainder cancelled"),
    ]


def test_ioc_limit_that_does_not_trade_is_cancelled_unfilled():
    broker = make_broker()
    broker.submit(make_order(order_type=OrderType.LIMIT, limit_price=D("9.00"), time_in_force=TimeInForce.IOC))
    feed(broker, minute(1), "10", "10.5", "9.5", "10")
    feed(broker, minute(2), "8", "8", "8", "8")  # would have filled: too late
    [cancelled] = broker.poll_events()[1:]
    assert (cancelled.status, cancelled.filled_qty) == (OrderStatus.CANCELLED, 0)


@pytest.mark.parametrize("session_end, first, deadline", [
    (time(21, 0), datetime(2024, 3, 4, 20, 57, tzinfo=UTC), datetime(2024, 3, 4, 21, 0, tzinfo=UTC)),
    (None, datetime(2024, 3, 4, 23, 57, tzinfo=UTC), datetime(2024, 3, 5, 0, 0, tzinfo=UTC)),  # date change
])
@pytest.mark.parametrize("expiry_symbol", ["AAPL", "MSFT"])  # any symbol's bar moves the session on
def test_day_order_remainder_expires_at_session_end(session_end, first, deadline, expiry_symbol):
    broker = make_broker(session_end=session_end)
    broker.submit(make_order(qty=D(250), time_in_force=TimeInForce.DAY, created_at=first + timedelta(seconds=30)))
    feed(broker, first, "10", "10", "10", "10", volume=1000)  # placed in this bar
    for n in (1, 2):
        feed(broker, first + timedelta(minutes=n), "10", "10", "10", "10", volume=1000)
    feed(broker, deadline + timedelta(minutes=5), "10", "10", "10", "10", volume=1000, symbol=expiry_symbol)
    events = broker.poll_events()
    assert [e.status for e in events] == [OrderStatus.ACK, OrderStatus.PARTIAL, OrderStatus.PARTIAL,
                                          OrderStatus.EXPIRED]
    assert (events[-1].event_ts, events[-1].filled_qty) == (deadline, D(200))


@pytest.mark.parametrize("symbol, created, deadline", [
    ("AAPL", datetime(2024, 7, 1, 19, 57, 30, tzinfo=UTC), datetime(2024, 7, 1, 20, 0, tzinfo=UTC)),  # NYSE in summer
    ("AAPL", datetime(2024, 11, 29, 17, 57, 30, tzinfo=UTC), datetime(2024, 11, 29, 18, 0, tzinfo=UTC)),  # early close
    ("AAPL", datetime(2024, 7, 4, 12, 0, 30, tzinfo=UTC), datetime(2024, 7, 5, 20, 0, tzinfo=UTC)),  # holiday: next
    ("BTC/USD", datetime(2024, 7, 6, 23, 57, 30, tzinfo=UTC), datetime(2024, 7, 7, 0, 0, tzinfo=UTC)),  # 24/7
])
def test_day_orders_expire_at_the_close_of_their_market_session(symbol, created, deadline):
    broker = make_broker()  # session_end="calendar"
    ack = broker.submit(make_order(symbol=symbol, qty=D(250), time_in_force=TimeInForce.DAY, created_at=created))
    assert ack.status is OrderStatus.ACK
    feed(broker, deadline - timedelta(minutes=1), "10", "10", "10", "10", volume=1000, symbol=symbol)
    feed(broker, deadline, "10", "10", "10", "10", volume=1000, symbol=symbol)
    events = broker.poll_events()
    assert [e.status for e in events][-1] is OrderStatus.EXPIRED and events[-1].event_ts == deadline


def test_gtc_order_carries_over_the_session_end():
    broker = make_broker()
    broker.submit(make_order(qty=D(150), created_at=datetime(2024, 3, 4, 20, 58, 30, tzinfo=UTC)))
    feed(broker, datetime(2024, 3, 4, 20, 59, tzinfo=UTC), "10", "10", "10", "10", volume=1000)
    feed(broker, datetime(2024, 3, 5, 14, 30, tzinfo=UTC), "11", "11", "11", "11", volume=1000)
    assert [(e.status, e.last_fill_price) for e in broker.poll_events()[1:]] == [
        (OrderStatus.PARTIAL, D("10.00")), (OrderStatus.FILLED, D("11.00"))]


def test_day_order_that_cannot_trade_before_the_session_end_is_rejected():
    broker = make_broker()
    event = broker.submit(make_order(time_in_force=TimeInForce.DAY,
                                     created_at=datetime(2024, 3, 4, 20, 59, 30, tzinfo=UTC)))
    assert event.status is OrderStatus.REJECTED and "session end" in event.reason


# One bar for every case: open 100, high 102, low 98, close 101; slippage 10 bps.
@pytest.mark.parametrize("order_type, side, price, expected", [
    (OrderType.LIMIT, Side.BUY, "99", "99.00"),      # low <= limit: at the limit
    (OrderType.LIMIT, Side.BUY, "101", "100.00"),    # open is better than the limit
    (OrderType.LIMIT, Side.BUY, "97", None),         # low never reached it
    (OrderType.LIMIT, Side.SELL, "101", "101.00"),
    (OrderType.LIMIT, Side.SELL, "99", "100.00"),
    (OrderType.LIMIT, Side.SELL, "103", None),
    (OrderType.STOP, Side.BUY, "101", "101.11"),     # high >= stop: 101 * 1.001 = 101.101, rounded up
    (OrderType.STOP, Side.BUY, "99", "100.10"),      # opened through the stop: from the open
    (OrderType.STOP, Side.BUY, "103", None),
    (OrderType.STOP, Side.SELL, "99", "98.90"),      # low <= stop: 99 * 0.999 = 98.901, rounded down
    (OrderType.STOP, Side.SELL, "101", "99.90"),
    (OrderType.STOP, Side.SELL, "97", None),
])
def test_limit_and_stop_trigger(order_type, side, price, expected):
    broker = make_broker(slippage_bps=D(10))
    key = "limit_price" if order_type is OrderType.LIMIT else "stop_price"
    broker.submit(make_order(side=side, order_type=order_type, **{key: D(price)}))
    feed(broker, minute(1), "100", "102", "98", "101")
    fills = broker.poll_events()[1:]
    assert [e.last_fill_price for e in fills] == ([D(expected)] if expected else [])


def test_triggered_stop_remainder_fills_as_a_market_order():
    broker = make_broker(slippage_bps=D(10))
    broker.submit(make_order(qty=D(150), order_type=OrderType.STOP, stop_price=D(101)))
    feed(broker, minute(1), "100", "102", "98", "101", volume=1000)
    feed(broker, minute(2), "99", "99", "98", "98", volume=1000)  # below the stop, but it has triggered
    assert [e.last_fill_price for e in broker.poll_events()[1:]] == [D("101.11"), D("99.10")]


@pytest.mark.parametrize("fields, reason", [
    ({"order_type": OrderType.LIMIT, "limit_price": D("10.005")},
     "PRICE_OFF_TICK: limit_price 10.005 is not a positive multiple"),
    ({"order_type": OrderType.STOP, "stop_price": D("-1")}, "PRICE_OFF_TICK: stop_price -1 is not a positive multiple"),
    ({"created_at": datetime(2024, 3, 4, 14, 30)}, "NO_TIME_ZONE: created_at has no time zone"),
])
def test_rejections(fields, reason):
    broker = make_broker()
    event = broker.submit(make_order(**fields))
    assert event.status is OrderStatus.REJECTED and event.reason.startswith(reason)
    assert broker.poll_events() == [event]
    assert broker.submit(make_order(**fields)) == event  # idempotent too
    feed(broker, minute(1), "10", "11", "9", "10")
    assert broker.poll_events() == []


def test_resubmit_returns_the_latest_event_and_creates_nothing():
    broker = make_broker()
    assert broker.submit(make_order()) == broker.submit(make_order()) == ack()
    feed(broker, minute(1), "10", "10", "10", "10")
    filled = fill(OrderStatus.FILLED, minute(1), "100", "100", "10.00")
    assert broker.submit(make_order()) == filled
    assert broker.poll_events() == [ack(), filled]
    assert broker.submit(make_order("o2")) == ack("o2")


def test_reusing_an_id_for_another_order_is_a_permanent_error():
    broker = make_broker()
    broker.submit(make_order())
    with pytest.raises(BrokerError, match="already used") as raised:
        broker.submit(make_order(qty=D(101)))
    assert raised.value.retryable is False


def test_cancel_live_order_then_terminal_order_returns_it_unchanged():
    broker = make_broker()
    broker.submit(make_order(qty=D(250)))
    feed(broker, minute(1), "10", "10", "10", "10", volume=1000)
    cancelled = broker.cancel("o1")
    assert cancelled == OrderEvent(client_order_id="o1", status=OrderStatus.CANCELLED, event_ts=CLOCK_TS,
                                   filled_qty=D(100), broker_order_id="paper-o1", reason="cancelled on request")
    feed(broker, minute(2), "10", "10", "10", "10", volume=1000)
    assert broker.cancel("o1") is cancelled
    assert [e.status for e in broker.poll_events()] == [OrderStatus.ACK, OrderStatus.PARTIAL, OrderStatus.CANCELLED]


def test_cancel_filled_order_returns_the_fill():
    broker = make_broker()
    broker.submit(make_order())
    feed(broker, minute(1), "10", "10", "10", "10")
    [_, filled] = broker.poll_events()
    assert broker.cancel("o1") == filled
    assert broker.poll_events() == []


def test_cancel_unknown_order_is_a_permanent_error():
    with pytest.raises(BrokerError, match="unknown") as raised:
        make_broker().cancel("nope")
    assert raised.value.retryable is False


@pytest.mark.parametrize("field, value, error", [
    ("slippage_bps", 0.5, TypeError), ("fill_at", "mid", ValueError), ("max_participation", D(0), ValueError),
    ("tick_size", D(0), ValueError), ("fee_bps", D(-1), ValueError),
])
def test_config_validation(field, value, error):
    with pytest.raises(error, match=field):
        PaperConfig(**{field: value})


def _session(config: PaperConfig) -> list[OrderEvent]:
    """Three synthetic days, orders of every kind placed as the bars come in, one cancelled."""
    now = [T0]
    broker = PaperBroker(config, clock=lambda: now[0])
    kinds = [lambda close: {},
             lambda close: dict(side=Side.SELL, time_in_force=TimeInForce.IOC),
             lambda close: dict(order_type=OrderType.LIMIT, limit_price=_tick(close * D("0.995")),
                                time_in_force=TimeInForce.DAY),
             lambda close: dict(order_type=OrderType.STOP, stop_price=_tick(close * D("1.003")))]
    rows = (row for day in generate_bars(symbols=2, days=3, seed=11, start=T0.date())
            for row in day.itertuples(index=False))
    for i, row in enumerate(rows):
        ts = row.ts.to_pydatetime()
        now[0] = ts + timedelta(seconds=30)
        bar = [D(str(getattr(row, k))) for k in ("open", "high", "low", "close")]
        if i % 97 == 0:
            broker.submit(make_order(f"o{i}", symbol=row.symbol, qty=D(5000), created_at=now[0],
                                     **kinds[i // 97 % len(kinds)](bar[3])))
        if i == 200:
            broker.cancel("o194")
        broker.on_bar(row.symbol, ts, *bar, D(str(int(row.volume))))
    return broker.poll_events()


def _tick(price: D) -> D:
    return price.quantize(D("0.01"))


def test_same_orders_and_bars_give_identical_events():
    config = PaperConfig(slippage_bps=D(3), fee_per_share=D("0.003"), min_fee=D(1), max_participation=D("0.02"))
    first = _session(config)
    assert first == _session(config)
    assert {e.status for e in first} == {OrderStatus.ACK, OrderStatus.PARTIAL, OrderStatus.FILLED,
                                         OrderStatus.CANCELLED, OrderStatus.EXPIRED}
    fill_ids = [e.fill_id for e in first if e.fill_id]
    assert len(fill_ids) == len(set(fill_ids))


@pytest.mark.parametrize("rounding, fee", [("up", "1.12"), ("nearest", "1.11")])
def test_signal_close_fills_market_orders_at_the_triggering_close_on_submit(rounding, fee):
    # 100 shares at 111.11: 1 bp of notional = 1.1111
    broker = make_broker(fill_at="signal_close", fee_bps=D(1), fee_rounding=rounding)
    assert broker.submit(make_order(ref_price=D("111.11"))) == ack()
    assert broker.poll_events() == [ack(), fill(OrderStatus.FILLED, T0 + timedelta(seconds=30), "100", "100",
                                                "111.11", fee)]
    assert not broker.has_live_orders


def test_signal_close_needs_the_reference_price():
    broker = make_broker(fill_at="signal_close")
    assert broker.submit(make_order()).status is OrderStatus.REJECTED
    assert "ref_price" in broker.poll_events()[-1].reason


@pytest.mark.parametrize("field, value", [("fill_at", "midpoint"), ("fee_rounding", "down")])
def test_unknown_fill_modes_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PaperConfig(**{field: value})


def test_signal_close_fills_a_day_order_decided_at_the_session_end():
    # the 20:59 bar's signal is decided at 21:00: no bar is left, but the order fills at submit
    broker = PaperBroker(PaperConfig(fill_at="signal_close"), clock=lambda: datetime(2024, 3, 4, 21, 0, tzinfo=UTC))
    order = make_order(time_in_force=TimeInForce.DAY, ref_price=D("100"),
                       created_at=datetime(2024, 3, 4, 21, 0, tzinfo=UTC))
    assert broker.submit(order).status is OrderStatus.ACK
    assert broker.poll_events()[-1].status is OrderStatus.FILLED


def test_broker_order_ids_stay_unique_across_a_restarted_book():
    before = make_broker()
    before.submit(make_order("o1"))
    restarted = make_broker()  # a new process: a counter would number its first order 1 again
    restarted.submit(make_order("o2"))
    ids = [e.broker_order_id for e in before.poll_events() + restarted.poll_events()]
    assert ids == ["paper-o1", "paper-o2"]


def test_a_broker_that_forgets_finished_orders_still_refuses_their_ids():
    """retain_finished=False (backtests): a terminal order's state and history are
    dropped, a working one's kept, and a finished order's id cannot trade again."""
    broker = PaperBroker(PaperConfig(fee_per_share=D(0), fee_bps=D(0), min_fee=D(0)), clock=lambda: CLOCK_TS,
                         retain_finished=False)
    broker.submit(make_order("done"))
    broker.submit(make_order("working", order_type=OrderType.LIMIT, limit_price=D("90")))
    feed(broker, minute(1), "100", "101", "99", "100")
    assert [e.status for e in broker.poll_events()] == [OrderStatus.ACK, OrderStatus.ACK, OrderStatus.FILLED]
    assert broker.order_history(["done"]) == [] and len(broker.order_history(["working"])) == 1
    assert broker.open_orders == 1
    with pytest.raises(BrokerError, match="already used by a finished order"):
        broker.submit(make_order("done"))
