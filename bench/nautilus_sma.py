#!/usr/bin/env python3
"""NautilusTrader half of the peer benchmark (issue 6): tradeflow's ``sma_crossover``
run by NautilusTrader's ``BacktestEngine`` on the same 1-minute bars.

Benchmark-only dependency: ``nautilus_trader`` (written against 1.221.0, the last
release for Python 3.11; it pins ``pandas>=2.2.3,<3``).

Strategy (mirrors models/strategies/strategy_sma_crossover.sql + macros/strategies.sql)
    Per symbol, on each completed bar: SMA(fast) and SMA(slow) of the close,
    spread = fast - slow, defined once ``slow`` bars have been seen (the SQL
    leaves sma_N NULL until bar_number >= N). BUY when the previous bar's spread
    is <= 0 and this bar's is > 0, SELL when the previous is >= 0 and this one
    < 0 (no signal while the previous spread is undefined). Long-only, fixed
    size: BUY opens a long of ``qty`` if flat, SELL closes the long if one is
    open, other signals are ignored.

    The SMAs are exact: closes are taken as Nautilus fixed-point raw integers
    (``Price.raw``), kept as rolling integer sums, and the spread sign is
    ``sign(slow * sum_fast - fast * sum_slow)``. Nautilus' own
    ``SimpleMovingAverage`` averages doubles, which can flip the sign of a spread
    that is exactly 0 (it happens: prices are on a 0.01 grid); ``expected_trades``
    uses the same integer rule on cents.

Fill model (exact configuration, see ``_venue_kwargs``)
    * Venue SIM, ``OmsType.NETTING``, ``AccountType.CASH``, one USD balance
      (``starting_cash``, default 1e12, so cash never binds), ``book_type=L1_MBP``.
    * ``bar_execution=True``: each bar is replayed by the matching engine as
      trade ticks Open -> High -> Low -> Close (``bar_adaptive_high_low_ordering=False``,
      fixed order; the ordering only matters for resting orders, of which this
      strategy has none). After a bar the L1 book's bid = ask = the bar's close.
    * The engine loop, per bar: ``exchange.process_bar(bar)`` (market moves to
      the close), then ``data_engine.process(bar)`` -> ``Strategy.on_bar`` ->
      ``submit_order`` (queued, ``use_message_queue=True``), then
      ``exchange.process(ts)`` executes the queue. So a MARKET order sent from
      ``on_bar`` fills in the same iteration, at the CLOSE of the signal bar, with
      ``ts_event`` = that bar's ``ts_init``.
    * ``fill_model=BestPriceFillModel(prob_slippage=0.0)``: the whole order
      fills at the best price of a simulated book with unlimited size. With the
      default ``FillModel`` an order larger than the L1 top size (bar volume / 4)
      would have its remainder filled one tick worse.
    * ``latency_model=None`` (no latency), ``reject_stop_orders`` irrelevant.
    * Fees: ``MakerTakerFeeModel`` (the default) with each Equity's
      ``taker_fee = maker_fee = fee_bps / 10_000``: commission = notional * rate,
      as ``Money`` in USD, i.e. rounded to the cent half away from zero (see ``_fee``).
    * Bars: ``BarType("<SYM>.SIM-1-MINUTE-LAST-EXTERNAL")``; Nautilus stamps a bar
      with its CLOSE time, so ``ts_event = ts_init = ts + 1 minute`` for the
      input's bar-OPEN ``ts``.

Realized P&L (average cost)
    From Nautilus' positions report (``trader.generate_positions_report()``, which
    includes the snapshots NETTING takes each time a closed position reopens):
    ``Position.realized_pnl`` is average-cost P&L net of every commission of the
    position (including the opening one). Per symbol: ``realized_pnl_net`` = sum
    of ``realized_pnl`` over the symbol's positions, ``fees`` = sum of their
    ``commissions``, ``realized_pnl_gross`` = net + fees (average-cost P&L of the
    closed quantity before fees).

Usage: python bench/nautilus_sma.py [--symbols 1] [--days 20] [--seed 7] [--check]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_FEE_BPS = 1.0
DEFAULT_STARTING_CASH = 1e12
VENUE_NAME = "SIM"
BAR_NS = 60_000_000_000  # the bars are 1 minute long; Nautilus stamps bars at their close

TRADE_COLUMNS = ["ts", "symbol", "side", "qty", "price", "fee"]


@dataclass(frozen=True, eq=False)
class NautilusResult:
    bars_processed: int  # bars delivered to the strategy's on_bar
    seconds: float  # wall time of BacktestEngine.run() only
    setup_seconds: float  # engine/venue/instrument setup + DataFrame -> Bar conversion + add_data (sorting)
    report_seconds: float  # fills + positions reports -> trades / realized_pnl, and engine.dispose()
    trades: pd.DataFrame  # ts (signal bar OPEN time, UTC), symbol, side, qty, price, fee, fill_ts (Nautilus ts_event)
    realized_pnl: pd.DataFrame  # index symbol: realized_pnl_gross, fees, realized_pnl_net, positions
    nautilus_version: str = ""
    config: dict = field(default_factory=dict)

    @property
    def bars_per_second(self) -> float:
        return self.bars_processed / self.seconds if self.seconds > 0 else float("inf")


# ---------------------------------------------------------------------------
# Reference: the expected trade list from pandas
# ---------------------------------------------------------------------------

def crossover_signals(bars: pd.DataFrame, fast: int = 5, slow: int = 21) -> pd.DataFrame:
    """Rows of ``bars`` where sma_crossover fires, with ``action`` BUY/SELL.

    Exact arithmetic: closes in integer cents, rolling sums by cumsum, spread sign
    = sign(slow * sum_fast - fast * sum_slow) (same sign as sma_fast - sma_slow)."""
    if fast < 1 or slow < 1:
        raise ValueError("fast and slow must be >= 1")
    frames = []
    for symbol, g in bars.sort_values(["symbol", "ts"]).groupby("symbol", sort=True):
        cents = np.rint(g["close"].to_numpy(dtype=np.float64) * 100).astype(np.int64)
        csum = np.concatenate([[0], np.cumsum(cents)])
        n = len(cents)
        idx = np.arange(n)
        sum_fast = csum[idx + 1] - csum[np.maximum(idx + 1 - fast, 0)]
        sum_slow = csum[idx + 1] - csum[np.maximum(idx + 1 - slow, 0)]
        valid = idx >= max(fast, slow) - 1  # both SMAs complete (SQL: bar_number >= N)
        sign = np.sign(slow * sum_fast - fast * sum_slow)
        prev_sign = np.roll(sign, 1)
        prev_valid = np.roll(valid, 1)
        prev_valid[:1] = False
        ok = valid & prev_valid
        buy = ok & (prev_sign <= 0) & (sign > 0)
        sell = ok & (prev_sign >= 0) & (sign < 0)
        hits = g.loc[buy | sell, ["symbol", "ts", "close"]].copy()
        hits["action"] = np.where(buy[buy | sell], "BUY", "SELL")
        frames.append(hits)
    if not frames:
        return pd.DataFrame(columns=["symbol", "ts", "close", "action"])
    return pd.concat(frames, ignore_index=True)


def expected_trades(bars: pd.DataFrame, fast: int = 5, slow: int = 21, qty: int = 100,
                    fee_bps: float = DEFAULT_FEE_BPS) -> pd.DataFrame:
    """The fills sma_crossover should produce: long-only, ``qty`` per entry, filled
    at the close of the signal bar. Columns ts (signal bar open time), symbol,
    side, qty, price, fee (qty * price * fee_bps / 1e4 rounded to the cent half
    away from zero, as Nautilus' Money does), sorted by ts, symbol."""
    rows = []
    for symbol, sig in crossover_signals(bars, fast, slow).groupby("symbol", sort=True):
        long = False
        for ts, close, action in zip(sig["ts"], sig["close"], sig["action"]):
            if action == "BUY" and not long:
                long = True
            elif action == "SELL" and long:
                long = False
            else:
                continue
            price = round(float(close), 2)
            rows.append((ts, symbol, action, qty, price, _fee(qty, price, fee_bps)))
    out = pd.DataFrame(rows, columns=TRADE_COLUMNS)
    if out.empty:
        return out
    return out.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def _fee(qty: int, price: float, fee_bps: float) -> float:
    """Commission as Nautilus books it: notional * fee_bps / 1e4 as Money(USD),
    i.e. rounded to the cent half away from zero (Money(1.115, USD) == 1.12 USD)."""
    exact = Decimal(qty) * Decimal(f"{price:.2f}") * Decimal(str(fee_bps)) / Decimal(10_000)
    return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def average_cost_pnl(trades: pd.DataFrame) -> pd.DataFrame:
    """Realized P&L per symbol by the average-cost method from a trade list
    (columns symbol, side, qty, price, fee). Long and short both handled."""
    out = {}
    for symbol, g in trades.sort_values(["ts"], kind="stable").groupby("symbol", sort=True):
        pos = 0
        avg = 0.0
        gross = 0.0
        for side, q, px in zip(g["side"], g["qty"], g["price"]):
            signed = q if side == "BUY" else -q
            if pos == 0 or (pos > 0) == (signed > 0):
                avg = (avg * abs(pos) + px * abs(signed)) / (abs(pos) + abs(signed))
                pos += signed
                continue
            closed = min(abs(pos), abs(signed))
            gross += closed * (px - avg) * (1 if pos > 0 else -1)
            pos += signed
            if pos == 0:
                avg = 0.0
            elif (pos > 0) == (signed > 0):  # flipped through zero
                avg = px
        fees = float(g["fee"].sum())
        out[symbol] = {"realized_pnl_gross": round(gross, 2), "fees": round(fees, 2),
                       "realized_pnl_net": round(gross - fees, 2), "open_qty": pos}
    frame = pd.DataFrame.from_dict(out, orient="index")
    frame.index.name = "symbol"
    return frame


def compare_trades(actual: pd.DataFrame, expected: pd.DataFrame) -> dict:
    """Row-by-row comparison on TRADE_COLUMNS; prices and fees exact to the cent."""
    a = actual[TRADE_COLUMNS].sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    e = expected[TRADE_COLUMNS].sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    report = {"actual": len(a), "expected": len(e)}
    if len(a) != len(e):
        merged = a.merge(e, on=["ts", "symbol", "side"], how="outer", indicator=True)
        report["only_actual"] = int((merged["_merge"] == "left_only").sum())
        report["only_expected"] = int((merged["_merge"] == "right_only").sum())
        report["match"] = False
        return report
    same = ((a["ts"] == e["ts"]) & (a["symbol"] == e["symbol"]) & (a["side"] == e["side"])
            & (a["qty"] == e["qty"]) & (np.rint(a["price"] * 100) == np.rint(e["price"] * 100))
            & (np.rint(a["fee"] * 100) == np.rint(e["fee"] * 100)))
    report["mismatched_rows"] = int((~same).sum())
    report["match"] = bool(same.all())
    return report


# ---------------------------------------------------------------------------
# NautilusTrader
# ---------------------------------------------------------------------------

def _nautilus_strategy_class():
    """Defined lazily so the pandas reference above imports without nautilus_trader."""
    from nautilus_trader.config import StrategyConfig
    from nautilus_trader.model.data import Bar, BarType
    from nautilus_trader.model.enums import OrderSide
    from nautilus_trader.model.objects import Quantity
    from nautilus_trader.trading.strategy import Strategy

    class SmaCrossoverConfig(StrategyConfig, frozen=True):
        bar_types: list[str]
        fast: int = 5
        slow: int = 21
        qty: int = 100

    class SmaCrossover(Strategy):
        """One strategy instance for all symbols; per-bar-type rolling integer sums."""

        def __init__(self, config: SmaCrossoverConfig) -> None:
            super().__init__(config)
            self.fast = config.fast
            self.slow = config.slow
            self.qty = Quantity.from_int(config.qty)
            self.bar_types = [BarType.from_str(s) for s in config.bar_types]
            # bar_type -> [window deque, sum_fast, sum_slow, seen, prev_sign or None]
            self._windows: dict = {}
            self.bars_seen = 0

        def on_start(self) -> None:
            for bar_type in self.bar_types:
                self._windows[bar_type] = [deque(maxlen=self.slow), 0, 0, 0, None]
                self.subscribe_bars(bar_type)

        def on_bar(self, bar: Bar) -> None:
            self.bars_seen += 1
            st = self._windows[bar.bar_type]
            window, sum_fast, sum_slow, seen, prev = st
            close = bar.close.raw
            fast, slow = self.fast, self.slow
            n = len(window)
            if n >= fast:
                sum_fast -= window[-fast]
            if n == slow:
                sum_slow -= window[0]
            window.append(close)
            sum_fast += close
            sum_slow += close
            seen += 1
            st[1], st[2], st[3] = sum_fast, sum_slow, seen
            if seen < slow or seen < fast:
                return
            diff = slow * sum_fast - fast * sum_slow
            sign = (diff > 0) - (diff < 0)
            st[4] = sign
            if prev is None:
                return
            if prev <= 0 < sign:
                instrument_id = bar.bar_type.instrument_id
                if self.portfolio.is_flat(instrument_id):
                    self.submit_order(self.order_factory.market(instrument_id, OrderSide.BUY, self.qty))
            elif prev >= 0 > sign:
                instrument_id = bar.bar_type.instrument_id
                if self.portfolio.is_net_long(instrument_id):
                    self.submit_order(
                        self.order_factory.market(instrument_id, OrderSide.SELL, self.qty, reduce_only=True))

    return SmaCrossoverConfig, SmaCrossover


def _money_value(text) -> float:
    """'-12.34 USD' -> -12.34; None/'None' -> 0."""
    if text is None:
        return 0.0
    text = str(text).strip()
    if not text or text == "None":
        return 0.0
    return float(text.split()[0].replace(",", ""))


def run_nautilus(
    bars: pd.DataFrame,
    *,
    fast: int = 5,
    slow: int = 21,
    qty: int = 100,
    fee_bps: float = DEFAULT_FEE_BPS,
    starting_cash: float = DEFAULT_STARTING_CASH,
    log_level: str = "ERROR",
) -> NautilusResult:
    """Run sma_crossover on ``bars`` (symbol, ts = bar OPEN time tz-aware UTC,
    open, high, low, close, volume; 1-minute bars, 2-decimal prices) in a fresh
    BacktestEngine. See the module docstring for the exact venue configuration."""
    import nautilus_trader
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.backtest.models import BestPriceFillModel, MakerTakerFeeModel
    from nautilus_trader.config import LoggingConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.enums import AccountType, BookType, OmsType
    from nautilus_trader.model.identifiers import InstrumentId, Symbol, TraderId, Venue
    from nautilus_trader.model.instruments import Equity
    from nautilus_trader.model.objects import Money, Price, Quantity
    from nautilus_trader.persistence.wranglers import BarDataWrangler

    SmaCrossoverConfig, SmaCrossover = _nautilus_strategy_class()

    t0 = time.perf_counter()
    venue = Venue(VENUE_NAME)
    engine = BacktestEngine(BacktestEngineConfig(
        trader_id=TraderId("BENCH-001"),
        logging=LoggingConfig(log_level=log_level),
        run_analysis=False,
    ))
    venue_kwargs = _venue_kwargs()
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.CASH,
        starting_balances=[Money(starting_cash, USD)],
        base_currency=USD,
        book_type=BookType.L1_MBP,
        fill_model=BestPriceFillModel(prob_slippage=0.0),
        fee_model=MakerTakerFeeModel(),
        **venue_kwargs,
    )

    rate = Decimal(str(fee_bps)) / Decimal(10_000)
    symbols = sorted(bars["symbol"].unique())
    bar_types: list[str] = []
    per_symbol = []
    for symbol in symbols:
        instrument = Equity(
            instrument_id=InstrumentId(Symbol(symbol), venue),
            raw_symbol=Symbol(symbol),
            currency=USD,
            price_precision=2,
            price_increment=Price.from_str("0.01"),
            lot_size=Quantity.from_int(1),
            ts_event=0,
            ts_init=0,
            maker_fee=rate,
            taker_fee=rate,
        )
        engine.add_instrument(instrument)
        bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-LAST-EXTERNAL")
        bar_types.append(str(bar_type))
        g = bars.loc[bars["symbol"] == symbol].sort_values("ts")
        frame = pd.DataFrame(
            g[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64),
            columns=["open", "high", "low", "close", "volume"],
            index=pd.DatetimeIndex(g["ts"]).tz_convert("UTC") + pd.Timedelta(nanoseconds=BAR_NS),
        )
        per_symbol.append(BarDataWrangler(bar_type, instrument).process(frame))
    for i, bar_list in enumerate(per_symbol):
        engine.add_data(bar_list, sort=(i == len(per_symbol) - 1))
    n_bars = sum(len(b) for b in per_symbol)
    del per_symbol
    strategy = SmaCrossover(SmaCrossoverConfig(bar_types=bar_types, fast=fast, slow=slow, qty=qty))
    engine.add_strategy(strategy)
    setup_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    engine.run()
    seconds = time.perf_counter() - t1

    t2 = time.perf_counter()
    trades = _trades_from_fills(engine.trader.generate_fills_report())
    pnl = _pnl_from_positions(engine.trader.generate_positions_report(), symbols)
    bars_processed = strategy.bars_seen
    engine.dispose()
    report_seconds = time.perf_counter() - t2
    if bars_processed != n_bars:
        raise RuntimeError(f"strategy saw {bars_processed} bars of {n_bars}")

    return NautilusResult(
        bars_processed=bars_processed,
        seconds=seconds,
        setup_seconds=setup_seconds,
        report_seconds=report_seconds,
        trades=trades,
        realized_pnl=pnl,
        nautilus_version=nautilus_trader.__version__,
        config={
            "venue": VENUE_NAME, "oms_type": "NETTING", "account_type": "CASH", "book_type": "L1_MBP",
            "fill_model": "BestPriceFillModel(prob_slippage=0.0)", "fee_model": "MakerTakerFeeModel",
            "taker_fee": str(rate), "maker_fee": str(rate), "starting_cash_usd": starting_cash,
            "bar_type": "1-MINUTE-LAST-EXTERNAL, ts_event = ts_init = bar open + 1 min", **venue_kwargs,
            "fast": fast, "slow": slow, "qty": qty,
        },
    )


def _venue_kwargs() -> dict:
    # Spelled out (all are the 1.221.0 defaults) so the benchmark records them.
    return {
        "bar_execution": True,
        "bar_adaptive_high_low_ordering": False,
        "trade_execution": False,
        "use_message_queue": True,
        "use_reduce_only": True,
        "latency_model": None,
    }


def _trades_from_fills(report: pd.DataFrame) -> pd.DataFrame:
    if report is None or report.empty:
        return pd.DataFrame(columns=TRADE_COLUMNS + ["fill_ts"])
    fill_ts = pd.DatetimeIndex(pd.to_datetime(report["ts_event"], utc=True))
    out = pd.DataFrame({
        "ts": fill_ts - pd.Timedelta(nanoseconds=BAR_NS),  # back to the signal bar's open time
        "symbol": report["instrument_id"].astype(str).str.rsplit(".", n=1).str[0].to_numpy(),
        "side": report["order_side"].astype(str).to_numpy(),
        "qty": report["last_qty"].astype(str).astype(float).astype(np.int64).to_numpy(),
        "price": report["last_px"].astype(str).astype(float).to_numpy(),
        "fee": [_money_value(c) for c in report["commission"]],
        "fill_ts": fill_ts,
    })
    return out.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def _pnl_from_positions(report: pd.DataFrame, symbols: list[str]) -> pd.DataFrame:
    pnl = pd.DataFrame(0.0, index=pd.Index(symbols, name="symbol"),
                       columns=["realized_pnl_gross", "fees", "realized_pnl_net"])
    pnl["positions"] = 0
    if report is None or report.empty:
        return pnl
    for _, row in report.iterrows():
        symbol = str(row["instrument_id"]).rsplit(".", 1)[0]
        net = _money_value(row["realized_pnl"])
        commissions = row["commissions"]
        if isinstance(commissions, str):
            commissions = [commissions]
        fees = sum(_money_value(c) for c in (commissions if commissions is not None else []))
        pnl.loc[symbol, "realized_pnl_net"] += net
        pnl.loc[symbol, "fees"] += fees
        pnl.loc[symbol, "positions"] += 1
    pnl["realized_pnl_gross"] = pnl["realized_pnl_net"] + pnl["fees"]
    return pnl.round({"realized_pnl_gross": 2, "fees": 2, "realized_pnl_net": 2})


# ---------------------------------------------------------------------------

def synthetic_bars(symbols: int, days: int, seed: int = 7) -> pd.DataFrame:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for ingest/
    from ingest.synthetic import generate_bars

    return pd.concat(list(generate_bars(symbols=symbols, days=days, seed=seed)), ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fast", type=int, default=5)
    parser.add_argument("--slow", type=int, default=21)
    parser.add_argument("--qty", type=int, default=100)
    parser.add_argument("--fee-bps", type=float, default=DEFAULT_FEE_BPS)
    parser.add_argument("--check", action="store_true",
                        help="also compare trades and average-cost P&L with the pandas reference")
    args = parser.parse_args()

    bars = synthetic_bars(args.symbols, args.days, args.seed)
    result = run_nautilus(bars, fast=args.fast, slow=args.slow, qty=args.qty, fee_bps=args.fee_bps)
    out = {
        "symbols": args.symbols,
        "days": args.days,
        "bars": result.bars_processed,
        "seconds": round(result.seconds, 3),
        "setup_seconds": round(result.setup_seconds, 3),
        "report_seconds": round(result.report_seconds, 3),
        "bars_per_second": round(result.bars_per_second, 1),
        "trades": len(result.trades),
        "nautilus_trader": result.nautilus_version,
    }
    if args.check:
        expected = expected_trades(bars, args.fast, args.slow, args.qty, args.fee_bps)
        out["trade_check"] = compare_trades(result.trades, expected)
        ref = average_cost_pnl(expected)
        joined = result.realized_pnl.join(ref, rsuffix="_ref", how="outer")
        out["pnl_check"] = {
            "max_abs_diff_gross": float((joined["realized_pnl_gross"] - joined["realized_pnl_gross_ref"]).abs().max()),
            "max_abs_diff_fees": float((joined["fees"] - joined["fees_ref"]).abs().max()),
            "max_abs_diff_net": float((joined["realized_pnl_net"] - joined["realized_pnl_net_ref"]).abs().max()),
            "total_net": round(float(result.realized_pnl["realized_pnl_net"].sum()), 2),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
