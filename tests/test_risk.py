"""Risk depth (docs/risk.md): instruments, the risk views against numpy, the
portfolio checks against hand-computed numbers, the margin-call path, lot and
tick sizes from the instruments, and late data."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from positions_helpers import rows

from adapters.orders import Order, OrderStatus, OrderType, Side, TimeInForce
from adapters.paper import PaperBroker, PaperConfig
from ingest.execs import ExecIngester, Fill
from ingest.instruments import InstrumentIngester
from ingest.prices import PriceIngester
from tradeflow.ops.metrics import PROCESS_REGISTRY
from tradeflow.reasons import ReasonCode
from tradeflow.trading import accounts, policy
from tradeflow.trading.book import AccountBook, BookFill
from tradeflow.trading.book_sync import bootstrap
from tradeflow.trading.gate import DecisionGate, Gatekeeper, Signal, Sizing
from tradeflow.trading.risk import tail_count

DAY0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
Z95, Z99 = 1.6448536269514722, 2.3263478740408408
INSTRUMENTS = pd.DataFrame([
    # symbol, asset_class, sector, industry, currency, lot, tick, calendar, shortable, margin_class
    ("AAA", "equity", "TECH", "software", "USD", "1", "0.01", "XNYS", "true", "standard"),
    ("BBB", "equity", "TECH", "hardware", "USD", "10", "0.05", "XNYS", "yes", "volatile"),
    ("CCC", "equity", "ENERGY", "oil", "USD", "1", "0.01", "XNYS", "0", "standard"),
], columns=["symbol", "asset_class", "sector", "industry", "currency", "lot_size", "tick_size", "calendar",
            "shortable", "margin_class"], dtype=object)


def load_instruments(conn, settings, frame: pd.DataFrame = INSTRUMENTS):
    return InstrumentIngester(conn, settings, source="test").ingest_frame(frame)


# -- instruments ----------------------------------------------------------------------------
def test_instruments_are_validated_and_rejections_dead_lettered(conn, embedded_settings):
    bad = pd.DataFrame([
        ("DDD", "equity", "TECH", "", "USD", "0", "0.01", "", "true", "standard"),
        ("EEE", "equity", "TECH", "", "USD", "1", "0.01", "", "maybe", "standard"),
        ("FFF", "equity", "TECH", "", "USD", "1", "0.01", "", "true", "gold"),
        ("GGG", "equity", "", "", "USD", "1", "0.01", "", "true", "standard"),
        ("HHH", "equity", "TECH", "", "USD", "abc", "0.01", "", "true", "standard"),
        ("III", "fx", "FX", "", "EUR", "1000", "0.00001", "", "", "cash"),
    ], columns=INSTRUMENTS.columns, dtype=object)
    report = load_instruments(conn, embedded_settings, pd.concat([INSTRUMENTS, bad], ignore_index=True))
    assert (report.inserted, report.rejected) == (4, 5)
    letters = rows(conn, "SELECT payload->>'symbol' AS symbol, field, reason_code FROM dead_letter"
                         " WHERE kind = 'instrument' ORDER BY 1")
    assert letters == [
        {"symbol": "DDD", "field": "lot_size", "reason_code": "NON_POSITIVE_STEP"},
        {"symbol": "EEE", "field": "shortable", "reason_code": "NOT_A_BOOLEAN"},
        {"symbol": "FFF", "field": "margin_class", "reason_code": "UNKNOWN_MARGIN_CLASS"},
        {"symbol": "GGG", "field": "sector", "reason_code": "MISSING_FIELD"},
        {"symbol": "HHH", "field": "lot_size", "reason_code": "NOT_A_NUMBER"},
    ]
    current = {r["symbol"]: r for r in rows(conn, "SELECT * FROM stg_instruments")}
    assert (current["BBB"]["lot_size"], current["BBB"]["tick_size"], current["CCC"]["shortable"]) == (
        Decimal(10), Decimal("0.05"), False)
    assert (current["III"]["shortable"], current["III"]["industry"]) == (True, "")  # optional fields' defaults
    # an exact re-send is a duplicate; a changed row is the symbol's new version
    assert load_instruments(conn, embedded_settings).duplicates == 3
    changed = INSTRUMENTS.assign(sector=["TECH", "TECH", "UTILITIES"])
    assert load_instruments(conn, embedded_settings, changed).inserted == 1
    assert rows(conn, "SELECT sector FROM stg_instruments WHERE symbol = 'CCC'") == [{"sector": "UTILITIES"}]


def test_a_dead_lettered_instrument_replays_once_fixed(conn, embedded_settings):
    from ingest.replay import replay

    bad = INSTRUMENTS.iloc[:1].assign(margin_class="gold")
    assert load_instruments(conn, embedded_settings, bad).rejected == 1
    outcome = replay(conn, embedded_settings, kind="instrument", overrides={"margin_class": "volatile"})
    assert (outcome["replayed"], outcome.get("inserted")) == (1, 1)
    assert rows(conn, "SELECT symbol, margin_class FROM stg_instruments") == [{"symbol": "AAA",
                                                                               "margin_class": "volatile"}]


def test_instruments_cli_loads_a_csv(conn, embedded_settings, tmp_path):
    from typer.testing import CliRunner

    from tradeflow.cli import app

    path = tmp_path / "instruments.csv"
    INSTRUMENTS.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["ingest", "instruments", str(path)])
    assert result.exit_code == 0, result.output
    assert '"inserted": 3' in result.output
    assert len(rows(conn, "SELECT * FROM stg_instruments")) == 3


# -- the views against numpy ------------------------------------------------------------------
DAYS = 45


def market(seed: int = 3) -> dict[str, np.ndarray]:
    """Daily closes of three symbols: BBB follows AAA, CCC moves against it."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.02, DAYS)
    moves = {"AAA": base, "BBB": 0.8 * base + rng.normal(0, 0.005, DAYS), "CCC": -base + rng.normal(0, 0.01, DAYS)}
    return {symbol: np.round(100 * np.cumprod(1 + r), 2) for symbol, r in moves.items()}


def write_days(conn, closes: dict[str, np.ndarray]) -> None:
    """Two bars a day per symbol; the day's close is the later one's."""
    values = []
    for symbol, series in closes.items():
        for day, close in enumerate(series):
            for minute, price in ((0, close + 1), (390, close)):
                values.append((symbol, DAY0 + timedelta(days=day, hours=14, minutes=minute), Decimal(str(price))))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO price_1m_history (symbol, ts, open, high, low, close, volume, source, batch_id,"
                        " received_at) VALUES (%s, %s, %s, %s, %s, %s, 1, 't', 'b', now())",
                        [(s, ts, p, p, p, p) for s, ts, p in values])


def hold(conn, account_id: str, positions: dict[str, int], day: int = DAYS - 1) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO exec_report_history (account_id, strategy_id, order_id, fill_id, symbol, side, fill_qty,"
            " fill_price, fee, venue, exec_ts, source, batch_id, received_at) VALUES"
            " (%s, 's', %s, '1', %s, %s, %s, 100, 0, 'T', %s, 't', 'b', now())",
            [(account_id, f"{account_id}-{symbol}", symbol, "BUY" if qty > 0 else "SELL", abs(qty),
              DAY0 + timedelta(days=day, hours=15)) for symbol, qty in positions.items()])


def numpy_returns(closes: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {symbol: series[1:] / series[:-1] - 1 for symbol, series in closes.items()}


@pytest.fixture
def risk_data(conn, embedded_settings):
    closes = market()
    write_days(conn, closes)
    load_instruments(conn, embedded_settings)
    accounts.add(conn, "A1", capital="100000", max_leverage="4")
    hold(conn, "A1", {"AAA": 300, "BBB": -200, "CCC": 150})
    return closes


def test_daily_returns_and_correlations_match_numpy(conn, risk_data):
    returns = numpy_returns(risk_data)
    got = rows(conn, "SELECT symbol, day_rank, close, daily_return FROM daily_returns ORDER BY symbol, day_rank DESC")
    for symbol, expected in returns.items():
        mine = [r for r in got if r["symbol"] == symbol]
        assert [r["day_rank"] for r in mine] == list(range(DAYS - 1, 0, -1))
        np.testing.assert_allclose([r["daily_return"] for r in mine], expected, rtol=1e-12)
    for pair in rows(conn, "SELECT symbol_a, symbol_b, days, correlation FROM return_correlation"):
        expected = np.corrcoef(returns[pair["symbol_a"]], returns[pair["symbol_b"]])[0, 1]
        assert pair["days"] == DAYS - 1
        assert pair["correlation"] == pytest.approx(expected, rel=1e-9)


def test_the_window_keeps_the_newest_days(conn):
    # 70 days of closes: the view keeps risk_window_days (60) returns, the newest
    closes = {"AAA": np.round(100 + np.cumsum(np.random.default_rng(5).normal(0, 1, 70)), 2)}
    write_days(conn, closes)
    got = rows(conn, "SELECT trading_day, daily_return FROM daily_returns WHERE symbol = 'AAA' ORDER BY trading_day")
    assert len(got) == 60
    assert got[-1]["trading_day"] == datetime(2024, 1, 1) + timedelta(days=69)
    np.testing.assert_allclose([r["daily_return"] for r in got], numpy_returns(closes)["AAA"][-60:], rtol=1e-12)


def portfolio_pnl(closes: dict[str, np.ndarray], positions: dict[str, int]) -> np.ndarray:
    returns = numpy_returns(closes)
    values = np.array([qty * closes[symbol][-1] for symbol, qty in positions.items()])
    return np.column_stack([returns[symbol] for symbol in positions]) @ values


def test_var_matches_numpy_on_the_same_returns(conn, embedded_settings, risk_data):
    positions = {"AAA": 300, "BBB": -200, "CCC": 150}
    pnl = portfolio_pnl(risk_data, positions)
    n = len(pnl)
    ordered = np.sort(pnl)
    k95, k99 = math.ceil(0.05 * n - 1e-9), math.ceil(0.01 * n - 1e-9)
    assert (tail_count(n, Decimal("0.95")), tail_count(n, Decimal("0.99"))) == (k95, k99) == (3, 1)
    [view] = rows(conn, "SELECT * FROM account_var")
    assert view["scenarios"] == n
    assert view["var_95"] == pytest.approx(-ordered[k95 - 1], rel=1e-9)
    # numpy's inverted-CDF quantile is the same order statistic (n * 0.05 = 2.2 is not a boundary)
    assert view["var_95"] == pytest.approx(-np.quantile(pnl, 0.05, method="inverted_cdf"), rel=1e-9)
    assert view["var_99"] == pytest.approx(-ordered[0], rel=1e-9)
    assert view["cvar_95"] == pytest.approx(-ordered[:k95].mean(), rel=1e-9)
    assert view["cvar_99"] == pytest.approx(-ordered[0], rel=1e-9)
    # parametric: z * the P&L's sample standard deviation = z * sqrt(w' S w)
    returns = numpy_returns(risk_data)
    weights = np.array([qty * risk_data[s][-1] for s, qty in positions.items()])
    sigma = math.sqrt(weights @ np.cov(np.vstack([returns[s] for s in positions])) @ weights)
    assert view["parametric_var_95"] == pytest.approx(Z95 * np.std(pnl, ddof=1), rel=1e-9)
    assert view["parametric_var_95"] == pytest.approx(Z95 * sigma, rel=1e-9)
    assert view["parametric_var_99"] == pytest.approx(Z99 * sigma, rel=1e-9)
    # the gate's book computes the same VaR from the same rows (loaded because a policy asks for it)
    policy.update(conn, "A1", max_var_pct=Decimal("0.5"))
    book = AccountBook()
    bootstrap(conn, embedded_settings, book, DAY0 + timedelta(days=DAYS))
    state = book.state("A1", DAY0 + timedelta(days=DAYS))
    var, cvar, scenarios = book.risk.value_at_risk_after(state, (), Decimal("0.95"))
    assert (var, cvar, scenarios) == (pytest.approx(view["var_95"], rel=1e-9),
                                      pytest.approx(view["cvar_95"], rel=1e-9), n)
    assert book.risk.correlation("AAA", "BBB") == pytest.approx(
        np.corrcoef(returns["AAA"], returns["BBB"])[0, 1], rel=1e-9)


def test_exposure_by_class_and_margin_by_hand(conn, risk_data):
    last = {symbol: Decimal(str(series[-1])) for symbol, series in risk_data.items()}
    aaa, bbb, ccc = 300 * last["AAA"], 200 * last["BBB"], 150 * last["CCC"]
    got = {(r["dimension"], r["bucket"]): r for r in rows(conn, "SELECT * FROM account_exposure_by_class")}
    assert (got[("sector", "TECH")]["gross_exposure"], got[("sector", "TECH")]["net_exposure"]) == (aaa + bbb,
                                                                                                  aaa - bbb)
    assert got[("sector", "ENERGY")]["gross_exposure"] == ccc
    assert got[("asset_class", "equity")]["gross_exposure"] == aaa + bbb + ccc
    # equity = 100000 - (300 - 200 + 150) * 100 (fills at 100) + market value
    equity = Decimal(100000) - 25000 + aaa - bbb + ccc
    assert got[("sector", "TECH")]["pct_of_equity"] == pytest.approx((aaa + bbb) / equity, rel=Decimal("1e-18"))
    [margin] = rows(conn, "SELECT * FROM account_margin")
    # AAA, CCC standard (0.5 / 0.25), BBB volatile (0.75 / 0.5)
    initial = (aaa + ccc) * Decimal("0.5") + bbb * Decimal("0.75")
    maintenance = (aaa + ccc) * Decimal("0.25") + bbb * Decimal("0.5")
    assert (margin["equity"], margin["initial_margin"], margin["maintenance_margin"]) == (equity, initial,
                                                                                        maintenance)
    assert (margin["margin_available"], margin["maintenance_excess"], margin["margin_call"]) == (
        equity - initial, equity - maintenance, False)


# -- pre-trade checks against hand-computed numbers ------------------------------------------
T = datetime(2024, 3, 1, 15, 0, tzinfo=timezone.utc)
RISK_INSTRUMENTS = [
    ("AAA", "equity", "TECH", "", "USD", Decimal(1), Decimal("0.01"), "", True, "standard"),
    ("BBB", "equity", "TECH", "", "USD", Decimal(1), Decimal("0.01"), "", True, "volatile"),
    ("CCC", "equity", "ENERGY", "", "USD", Decimal(1), Decimal("0.01"), "", True, "standard"),
]
RATES = [("standard", Decimal("0.5"), Decimal("0.25"), True), ("volatile", Decimal("0.75"), Decimal("0.5"), False)]


def keeper_with(policy_values: dict, held: dict[str, int], returns: dict[str, list[float]] | None = None,
                capital: int = 100_000) -> Gatekeeper:
    """One account holding `held` bought at 100 and marked at 100."""
    book = AccountBook()
    book.open_account("A1", Decimal(capital), max_leverage=Decimal(4))
    book.set_policy("A1", {"max_open_symbols": 10, "allow_scale_in": True, **policy_values})
    book.risk.set_instruments(RISK_INSTRUMENTS)
    book.risk.set_margin_rates(RATES)
    if returns:
        book.risk.set_returns([(s, DAY0 + timedelta(days=d), r) for s, values in returns.items()
                               for d, r in enumerate(values)], T)
    for symbol, qty in held.items():
        book.on_fill(BookFill("A1", "s", symbol, f"o-{symbol}", "1", "BUY", Decimal(qty), Decimal(100), Decimal(0), T))
    book.on_bars([(s, T, Decimal(100)) for s in ("AAA", "BBB", "CCC")])
    keeper = Gatekeeper(book, clock=lambda: T + timedelta(minutes=2), max_signal_age=timedelta(days=1))
    keeper.terms = {"s": Sizing()}
    return keeper


def buy(keeper: Gatekeeper, symbol: str, qty: int, n: int = 0):
    keeper.terms = {"s": Sizing(fixed_qty=Decimal(qty))}
    signal = Signal(f"s:{symbol}:{n}", "s", symbol, "1m", T, "BUY", 1.0, 1.0, Decimal(100), 1.0)
    return keeper.decide(signal).decisions[0]


def test_sector_exposure_limit():
    # equity 100k, TECH holds AAA 10k; limit 25% = 25k
    keeper = keeper_with({"max_sector_exposure_pct": Decimal("0.25")}, {"AAA": 100})
    assert buy(keeper, "BBB", 160).code is ReasonCode.SECTOR_EXPOSURE_EXCEEDED   # 10k + 16k = 26k
    assert buy(keeper, "CCC", 200).accepted                                      # ENERGY: 20k
    assert buy(keeper, "BBB", 150, 1).accepted                                   # 10k + 15k = 25k: at the limit
    # the accepted BBB order is pending: it counts (25k + 1k)
    assert buy(keeper, "AAA", 10, 2).code is ReasonCode.SECTOR_EXPOSURE_EXCEEDED


def test_correlated_exposure_limit():
    # BBB = 2 x AAA's returns (correlation 1), CCC = -AAA's (-1); AAA held 10k; limit 15k, threshold 0.7
    aaa = [0.01, -0.02, 0.03, 0.0, -0.01]
    keeper = keeper_with({"max_correlated_exposure_pct": Decimal("0.15")}, {"AAA": 100},
                         {"AAA": aaa, "BBB": [2 * r for r in aaa], "CCC": [-r for r in aaa]})
    assert keeper.book.risk.correlation("AAA", "BBB") == pytest.approx(1.0)
    assert keeper.book.risk.correlation("AAA", "CCC") == pytest.approx(-1.0)
    assert buy(keeper, "BBB", 60).code is ReasonCode.CORRELATED_EXPOSURE_EXCEEDED   # 10k + 6k > 15k
    assert buy(keeper, "CCC", 60).accepted                                          # uncorrelated: 6k
    assert buy(keeper, "BBB", 50, 1).accepted                                       # 10k + 5k = 15k
    # a symbol without returns correlates with nothing but itself
    assert keeper.book.risk.correlation("AAA", "ZZZ") is None


def test_var_limit_after_the_order():
    # AAA's 20 returns: one -10% day; n = 20, k95 = 1: VaR = 10% of AAA's value
    returns = {"AAA": [-0.10, -0.05] + [0.01] * 18}
    keeper = keeper_with({"max_var_pct": Decimal("0.015")}, {"AAA": 100}, returns)
    state = keeper.book.state("A1", T)
    assert keeper.book.risk.value_at_risk_after(state, (), Decimal("0.95")) == (
        pytest.approx(1000.0), pytest.approx(1000.0), 20)
    assert buy(keeper, "AAA", 100).code is ReasonCode.VAR_LIMIT_EXCEEDED  # (10k + 10k) x 10% = 2000 > 1500
    assert buy(keeper, "AAA", 50).accepted                                # 15k x 10% = 1500: at the limit
    # 40 days, k95 = 2: CVaR 95 = mean of the two worst
    keeper = keeper_with({}, {"AAA": 100}, {"AAA": [-0.10, -0.05] + [0.01] * 38})
    var, cvar, n = keeper.book.risk.value_at_risk_after(keeper.book.state("A1", T), (), Decimal("0.95"))
    assert (var, cvar, n) == (pytest.approx(500.0), pytest.approx(750.0), 40)


def test_initial_margin_check():
    # equity 100k; AAA 120k held (standard 0.5: 60k initial); BBB is volatile (0.75)
    keeper = keeper_with({"margin_check": True}, {"AAA": 1200})
    assert buy(keeper, "BBB", 600).code is ReasonCode.INSUFFICIENT_MARGIN  # 60k + 45k > 100k
    assert buy(keeper, "BBB", 500).accepted                                # 60k + 37.5k
    assert buy(keeper, "CCC", 60, 1).code is ReasonCode.INSUFFICIENT_MARGIN  # + pending 37.5k + 3k > 100k


def test_checks_are_off_by_default():
    returns = {"AAA": [-0.5] * 20}
    keeper = keeper_with({}, {"AAA": 1200}, returns)
    assert buy(keeper, "BBB", 600).accepted


def test_post_trade_warnings_when_the_market_moves():
    # 400 AAA at 100: TECH 40k of equity 100k; VaR 95 (k = 1 of 20) = 10% of 40k = 4k
    keeper = keeper_with({"max_sector_exposure_pct": Decimal("0.5"), "max_var_pct": Decimal("0.05")}, {"AAA": 400},
                         {"AAA": [-0.10] + [0.01] * 19})
    assert keeper.monitor("test") == []
    keeper.book.on_bar("AAA", T + timedelta(minutes=1), Decimal(150))   # TECH 60k of 120k: at the limit
    assert keeper.monitor("test") == []
    keeper.book.on_bar("AAA", T + timedelta(minutes=2), Decimal(200))   # 80k of 140k; VaR 8k > 7k
    raised = keeper.monitor("test")
    assert sorted((r[3], r[4]) for r in raised) == [("SECTOR_EXPOSURE_EXCEEDED", "WARNING"),
                                                    ("VAR_LIMIT_EXCEEDED", "WARNING")]
    assert keeper.monitor("test") == []                                 # raised once per breach
    keeper.book.on_bar("AAA", T + timedelta(minutes=3), Decimal(100))
    assert keeper.monitor("test") == []
    keeper.book.on_bar("AAA", T + timedelta(minutes=4), Decimal(200))
    assert len(keeper.monitor("test")) == 2                             # a new breach after it ended


# -- the margin-call path, live ---------------------------------------------------------------
def test_margin_call_raises_a_critical_event_and_stops_new_risk(conn, embedded_settings):
    clock = {"now": T + timedelta(minutes=10)}
    load_instruments(conn, embedded_settings)
    accounts.add(conn, "A1", capital="100000", max_leverage="10")  # leverage leaves room: margin decides
    policy.update(conn, "A1", margin_check=True, max_open_symbols=5)
    prices = PriceIngester(conn, embedded_settings, source="test", clock=lambda: clock["now"])

    def bar(minute: int, close: str) -> None:
        prices.ingest_frame(pd.DataFrame([{"symbol": "AAA", "ts": T + timedelta(minutes=minute), "open": close,
                                           "high": close, "low": close, "close": close, "volume": 1000}]))

    bar(0, "100")
    ExecIngester(conn, embedded_settings, source="test").ingest_fills([Fill(
        account_id="A1", strategy_id="s", order_id="o1", fill_id="1", symbol="AAA", side="BUY",
        fill_qty=Decimal(3000), fill_price=Decimal(100), exec_ts=T + timedelta(minutes=1))])
    gate = DecisionGate(conn, embedded_settings, clock=lambda: clock["now"], max_signal_age=timedelta(days=1))
    gate.sync()
    assert gate.run_once() == []
    # cash -200k; at 90 equity 70k >= maintenance 0.25 x 270k = 67.5k
    bar(2, "90")
    gate.run_once()
    assert rows(conn, "SELECT rule FROM risk_events WHERE rule = 'MARGIN_CALL'") == []
    # at 88: equity 64k < 66k
    bar(3, "88")
    gate.run_once()
    gate.run_once()
    [event] = rows(conn, "SELECT account_id, rule, severity, message FROM risk_events WHERE rule = 'MARGIN_CALL'")
    assert (event["account_id"], event["severity"]) == ("A1", "CRITICAL")
    assert "below maintenance margin 66000.00" in event["message"]
    [margin] = rows(conn, "SELECT equity, maintenance_margin, maintenance_excess, margin_call FROM account_margin")
    assert margin == {"equity": Decimal(64000), "maintenance_margin": Decimal(66000),
                      "maintenance_excess": Decimal(-2000), "margin_call": True}
    # no new risk while in the call: the initial-margin check refuses
    decision = gate.decide(Signal("sig:CCC", "sma_crossover", "CCC", "1m", T + timedelta(minutes=8), "BUY", 1.0, 1.0,
                                  Decimal(50), 1.0))
    assert (decision.accepted, decision.code) == (False, ReasonCode.INSUFFICIENT_MARGIN)


# -- lot and tick sizes ------------------------------------------------------------------------
def test_gate_sizes_in_the_instruments_lots(conn, embedded_settings):
    load_instruments(conn, embedded_settings)
    accounts.add(conn, "A1", capital="100000", max_leverage="2")
    gate = DecisionGate(conn, embedded_settings, clock=lambda: T + timedelta(minutes=2),
                        max_signal_age=timedelta(days=1))
    signal = Signal("sig:BBB", "sma_crossover", "BBB", "1m", T, "BUY", 1.0, 1.0, Decimal(100), 3.0)
    decision = gate.decide(signal)
    # 100k x 1% / (ATR 3 x 2) = 166.7 shares: 160 in BBB's lots of 10 (166 in lots of 1)
    assert (decision.accepted, decision.qty) == (True, Decimal(160))


def test_paper_broker_uses_each_symbols_lot_and_tick():
    broker = PaperBroker(PaperConfig(max_participation=Decimal("0.5"), slippage_bps=Decimal(3)), clock=lambda: T)
    broker.set_steps({"BBB": (Decimal(10), Decimal("0.05"))})
    order = Order(client_order_id="c1", account_id="A1", strategy_id="s", symbol="BBB", side=Side.BUY,
                  qty=Decimal(100), order_type=OrderType.MARKET, time_in_force=TimeInForce.GTC, limit_price=None,
                  stop_price=None, ref_price=Decimal(100), created_at=T)
    broker.submit(order)
    broker.on_bar("BBB", T, Decimal("100.01"), Decimal(101), Decimal(99), Decimal(100), Decimal(75))
    fill = [e for e in broker.poll_events() if e.last_fill_qty][0]
    # half of 75 rounded down to lots of 10; 100.01 x 1.0003 = 100.04 rounded up to the 0.05 tick
    assert (fill.last_fill_qty, fill.last_fill_price) == (Decimal(30), Decimal("100.05"))
    off_tick = replace(order, client_order_id="c2", order_type=OrderType.LIMIT, limit_price=Decimal("100.02"))
    assert broker.submit(off_tick).status is OrderStatus.REJECTED


# -- late data ----------------------------------------------------------------------------------
def late_count(kind: str) -> float:
    return PROCESS_REGISTRY.get_sample_value("ingest_late_records_total", {"kind": kind}) or 0


def test_a_late_bar_is_stored_flagged_counted_and_raised(conn, embedded_settings):
    settings = replace(embedded_settings, price_lateness=timedelta(seconds=90))
    prices = PriceIngester(conn, settings, source="feed", clock=lambda: T + timedelta(hours=1))

    def bars(*minutes: int) -> pd.DataFrame:
        return pd.DataFrame([{"symbol": "AAA", "ts": T + timedelta(minutes=m), "open": 1, "high": 1, "low": 1,
                              "close": 1, "volume": 1} for m in minutes])

    before = late_count("price")
    prices.ingest_frame(bars(10, 11, 12))
    assert late_count("price") == before
    prices.ingest_frame(bars(1, 14, 13, 9))  # minute 1 and 9 are late; 13 is within 90 s of 14
    stored = rows(conn, "SELECT count(*) AS n FROM price_1m_history")
    assert stored == [{"n": 7}]                     # nothing lost
    late = rows(conn, "SELECT kind, record_key, event_ts, watermark_ts FROM late_arrivals ORDER BY event_ts")
    assert [(r["kind"], r["event_ts"]) for r in late] == [("price", T + timedelta(minutes=1)),
                                                         ("price", T + timedelta(minutes=9))]
    assert late[0]["watermark_ts"] == T + timedelta(minutes=12) - timedelta(seconds=90)
    assert late[1]["watermark_ts"] == T + timedelta(minutes=14) - timedelta(seconds=90)
    assert late_count("price") == before + 2
    [event] = rows(conn, "SELECT rule, severity, symbol, message FROM risk_events")
    assert (event["rule"], event["severity"], event["symbol"]) == ("LATE_PRICE", "WARNING", "AAA")
    assert event["message"].startswith("2 price record(s)")


def test_a_late_fill_is_stored_and_the_book_replays_it(conn, embedded_settings):
    accounts.add(conn, "A1", capital="100000")
    ingester = ExecIngester(conn, embedded_settings, source="venue")

    def fill(n: int, seconds: int, side: str = "BUY") -> Fill:
        return Fill(account_id="A1", strategy_id="s", order_id=f"o{n}", fill_id="1", symbol="AAA", side=side,
                    fill_qty=Decimal(10), fill_price=Decimal(100 + n), exec_ts=T + timedelta(seconds=seconds))

    before = late_count("exec")
    ingester.ingest_fills([fill(1, 0), fill(2, 10)])
    ingester.ingest_fills([fill(3, 6, "SELL")])    # 4 s behind the newest: within the 5 s bound
    assert late_count("exec") == before
    ingester.ingest_fills([fill(4, 2, "SELL")])    # 8 s behind: late
    assert late_count("exec") == before + 1
    assert rows(conn, "SELECT record_key, account_id FROM late_arrivals") == [{"record_key": "o4/1",
                                                                             "account_id": "A1"}]
    assert [r["rule"] for r in rows(conn, "SELECT rule FROM risk_events")] == ["LATE_FILL"]
    # the views and the book apply it in event time: FIFO sells o1's lot first
    book = AccountBook()
    bootstrap(conn, embedded_settings, book, T + timedelta(minutes=5))
    [realized] = rows(conn, "SELECT realized_pnl FROM realized_pnl_latest")
    assert book.ledger("A1")["realized_pnl"] == realized["realized_pnl"] == (104 - 101) * 10 + (103 - 102) * 10


# -- backtests ----------------------------------------------------------------------------------
def test_backtest_decides_with_the_portfolio_checks_as_the_live_loop(conn, embedded_settings):
    from ingest.synthetic import generate_bars
    from tradeflow.research.backtest import AccountSpec, Backtest, BacktestSpec
    from tradeflow.trading.session import ReplaySession

    bars = pd.concat(list(generate_bars(symbols=4, days=1, seed=7)), ignore_index=True)
    start, end = bars.ts.min().to_pydatetime(), bars.ts.max().to_pydatetime() + timedelta(minutes=1)
    load_instruments(conn, embedded_settings, pd.DataFrame(
        [(f"SYM000{i}", "equity", "TECH" if i < 3 else "ENERGY", "", "USD", "1", "0.01", "", "true",
          "volatile" if i == 0 else "standard") for i in range(4)], columns=INSTRUMENTS.columns, dtype=object))
    checks = {"max_open_symbols": 4, "risk_per_trade_pct": Decimal("0.01"),
              "max_sector_exposure_pct": Decimal("0.3"), "margin_check": True}
    spec = BacktestSpec(start=start, end=end, accounts=(AccountSpec("ACC-RISK", Decimal(100_000), Decimal(2), checks),))
    result = Backtest(embedded_settings).run(spec, bars, run_id="risk-checks")
    accounts.add(conn, "ACC-RISK", capital="100000", max_leverage="2")
    policy.update(conn, "ACC-RISK", updated_by="backtest", at=start - timedelta(minutes=1), **checks)
    live = ReplaySession(conn, embedded_settings).run([bars])
    assert (live.decisions, live.accepted, live.rejects) == (result.decisions, result.accepted, result.rejects)
    assert result.rejects.get("SECTOR_EXPOSURE_EXCEEDED", 0) > 0
    columns = "decision_id, outcome, reject_code, account_id, qty"
    assert rows(conn, f"SELECT {columns} FROM backtest_decisions WHERE run_id = 'risk-checks' ORDER BY decision_id") \
        == rows(conn, f"SELECT {columns} FROM trade_decisions ORDER BY decision_id")
