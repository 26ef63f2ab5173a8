"""Portfolio risk in the account book: instruments, margin rates, daily returns,
and the checks that read them (docs/risk.md). Plain Python and numpy, no SQL.

The market-wide hot data (MarketRisk) is loaded when the book is built and
refreshed on a cadence (book_sync.load_market / load_returns live, the
backtest from its own bars): a decision reads it, never history. Each check
is off until its policy field is set; each refusal has its own reason code.

Definitions are the views' (models/marts/risk), one each:
- a symbol's sector and asset class come from stg_instruments; a symbol
  without an instruments row is UNCLASSIFIED and default_margin_class;
- daily returns are daily_returns' rows (the newest risk_window_days per
  symbol); a correlation is Pearson's over the days both symbols have;
- scenario P&L of a day = sum of market_value * return over the symbols held
  (a symbol without a return that day adds 0), over the days any of them has
  one; historical VaR at c is minus the k-th worst, k = ceil((1 - c) * n),
  CVaR minus the mean of the k worst (account_var);
- initial / maintenance margin = sum of gross exposure * the symbol's class
  rate (account_margin).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from tradeflow.reasons import ReasonCode

if TYPE_CHECKING:
    from tradeflow.trading.book import AccountState

UNCLASSIFIED = "UNCLASSIFIED"
ZERO = Decimal(0)
ONE = Decimal(1)
INSTRUMENT_COLUMNS = ("symbol", "asset_class", "sector", "industry", "currency", "lot_size", "tick_size", "calendar",
                      "shortable", "margin_class")


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    asset_class: str
    sector: str
    industry: str
    currency: str
    lot_size: Decimal
    tick_size: Decimal
    calendar: str
    shortable: bool
    margin_class: str


@dataclass(frozen=True, slots=True)
class PortfolioLimits:
    """An account's portfolio checks (policy fields), each off while unset."""
    max_sector_exposure_pct: Decimal | None = None
    max_correlated_exposure_pct: Decimal | None = None
    correlation_threshold: Decimal = Decimal("0.7")
    max_var_pct: Decimal | None = None
    var_confidence: Decimal = Decimal("0.95")
    margin_check: bool = False

    @classmethod
    def from_policy(cls, policy: Mapping[str, object]) -> PortfolioLimits:
        return cls(policy["max_sector_exposure_pct"], policy["max_correlated_exposure_pct"],
                   policy["correlation_threshold"], policy["max_var_pct"], policy["var_confidence"],
                   bool(policy["margin_check"]))

    @property
    def active(self) -> bool:
        return self.needs_returns or self.monitored

    @property
    def needs_returns(self) -> bool:
        """A check that reads the daily returns is on."""
        return self.max_var_pct is not None or self.max_correlated_exposure_pct is not None

    @property
    def monitored(self) -> bool:
        """A post-trade check (margin calls, VaR or sector limits) is on."""
        return self.margin_check or self.max_var_pct is not None or self.max_sector_exposure_pct is not None


NO_LIMITS = PortfolioLimits()


def tail_count(scenarios: int, confidence: Decimal) -> int:
    """k = ceil((1 - c) * n), exactly (the views compute it in NUMERIC)."""
    return int((scenarios * (ONE - confidence)).to_integral_value(rounding=ROUND_CEILING))


class MarketRisk:
    """Instruments, margin rates and the daily-return window, shared by every account."""

    def __init__(self) -> None:
        self.instruments: dict[str, Instrument] = {}
        self.margin_rates: dict[str, tuple[Decimal, Decimal]] = {}  # class -> (initial, maintenance)
        self.default_margin_class: str | None = None
        self._default_rates = (ONE, ONE)
        self.returns_as_of: datetime | None = None
        self._row: dict[str, int] = {}             # symbol -> row of the matrices
        self._returns = np.zeros((0, 0))           # symbols x days, 0 where a symbol has no return
        self._present = np.zeros((0, 0), dtype=bool)
        self._correlations = np.zeros((0, 0))    # symbols x symbols, NaN where undefined
        self._correlated: dict[tuple[str, float], frozenset[str]] = {}  # (symbol, threshold) -> symbols
        self._positions_pnl: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}  # account -> (valuation, pnl, days)
        # per-symbol lookups a decision makes, built when the data is loaded
        self.sector_of: dict[str, str] = {}
        self._rates_of: dict[str, tuple[Decimal, Decimal]] = {}

    # -- loading -------------------------------------------------------------------
    def set_instruments(self, rows: Iterable[tuple]) -> None:
        """stg_instruments rows in INSTRUMENT_COLUMNS order: the whole set, replacing the last."""
        self.instruments = {row[0]: Instrument(*row) for row in rows}
        self.sector_of = {symbol: instrument.sector for symbol, instrument in self.instruments.items()}
        self._index_rates()

    def set_margin_rates(self, rows: Iterable[tuple[str, Decimal, Decimal, bool]]) -> None:
        """margin_rates rows: (margin_class, initial_rate, maintenance_rate, is_default)."""
        self.margin_rates = {}
        for margin_class, initial, maintenance, is_default in rows:
            self.margin_rates[margin_class] = (Decimal(initial), Decimal(maintenance))
            if is_default:
                self.default_margin_class = margin_class
        self._index_rates()

    def _index_rates(self) -> None:
        self._rates_of = {symbol: self.margin_rates.get(instrument.margin_class, (ONE, ONE))
                          for symbol, instrument in self.instruments.items()}
        self._default_rates = self.margin_rates.get(self.default_margin_class, (ONE, ONE))

    def set_returns(self, rows: Iterable[tuple[str, object, float]], as_of: datetime | None = None) -> None:
        """daily_returns rows (symbol, day, daily_return): the whole window, replacing the last."""
        by_symbol: dict[str, dict[object, float]] = {}
        for symbol, day, value in rows:
            by_symbol.setdefault(symbol, {})[day] = float(value)
        days = sorted({day for returns in by_symbol.values() for day in returns})
        column = {day: i for i, day in enumerate(days)}
        self._row = {symbol: i for i, symbol in enumerate(sorted(by_symbol))}
        self._returns = np.zeros((len(self._row), len(days)))
        self._present = np.zeros((len(self._row), len(days)), dtype=bool)
        for symbol, returns in by_symbol.items():
            row = self._row[symbol]
            for day, value in returns.items():
                self._returns[row, column[day]] = value
                self._present[row, column[day]] = True
        self._correlations = self._pairwise_correlations()
        self._correlated = {}
        self._positions_pnl = {}
        self.returns_as_of = as_of

    def _pairwise_correlations(self) -> np.ndarray:
        """Pearson's r of every pair over the days both have (return_correlation's sums), all
        pairs at once: a decision then looks a pair up instead of computing it."""
        x, present = self._returns, self._present.astype(float)
        days = present @ present.T
        sum_x = x @ present.T                   # [i, j]: sum of i's returns on the days j has one too
        sum_xx = (x * x) @ present.T
        sum_xy = x @ x.T
        var_x = days * sum_xx - sum_x * sum_x
        with np.errstate(divide="ignore", invalid="ignore"):
            r = (days * sum_xy - sum_x * sum_x.T) / np.sqrt(var_x * var_x.T)
        r[(days < 2) | ~(var_x > 1e-15 * days * sum_xx) | ~(var_x.T > 1e-15 * days.T * sum_xx.T)] = np.nan
        return r

    # -- reading -------------------------------------------------------------------
    def sector(self, symbol: str) -> str:
        return self.sector_of.get(symbol, UNCLASSIFIED)

    def rates(self, symbol: str) -> tuple[Decimal, Decimal]:
        """(initial, maintenance) margin rate of the symbol's class; a class without
        rates (none loaded) counts as fully paid (1, 1)."""
        return self._rates_of.get(symbol, self._default_rates)

    def correlated(self, symbol: str, threshold: float) -> frozenset[str]:
        """The symbols whose correlation with `symbol` is at least `threshold` (itself included)."""
        key = (symbol, threshold)
        found = self._correlated.get(key)
        if found is None:
            row = self._row.get(symbol)
            names = list(self._row)
            with np.errstate(invalid="ignore"):
                near = [] if row is None else np.flatnonzero(self._correlations[row] >= threshold)
            found = self._correlated[key] = frozenset([symbol, *(names[i] for i in near)])
        return found

    def correlation(self, a: str, b: str) -> float | None:
        """Pearson correlation of the two symbols' daily returns over the days both have."""
        if a == b:
            return 1.0
        i, j = self._row.get(a), self._row.get(b)
        if i is None or j is None:
            return None
        value = self._correlations[i, j]
        return None if np.isnan(value) else float(value)

    def _daily_pnl(self, values: Iterable[tuple[str, Decimal | float]]) -> tuple[np.ndarray, np.ndarray]:
        """P&L on every day of the window for market values per symbol, and the days any of them has a return."""
        rows, weights = [], []
        for symbol, value in values:
            row = self._row.get(symbol)
            if row is not None and value:
                rows.append(row)
                weights.append(float(value))
        if not rows:
            return np.zeros(self._returns.shape[1]), np.zeros(self._returns.shape[1], dtype=bool)
        return np.asarray(weights) @ self._returns[rows], self._present[rows].any(axis=0)

    def value_at_risk_after(self, account: AccountState, extra: Iterable[tuple[str, Decimal]],
                            confidence: Decimal) -> tuple[float, float, int]:
        """(historical VaR, CVaR, scenarios) at `confidence` with `extra` (symbol, notional)
        added to the account's positions; (0, 0, 0) without history. The positions' daily P&L
        is kept per account until its valuation or the returns change, so a decision adds
        only the order's (and pending orders') returns."""
        cached = self._positions_pnl.get(account.account_id)
        if cached is None or cached[0] != account.valuation:
            cached = (account.valuation, *self._daily_pnl(account.market_value.items()))
            self._positions_pnl[account.account_id] = cached
        _, pnl, days = cached
        for symbol, notional in extra:
            row = self._row.get(symbol)
            if row is not None:
                pnl = pnl + float(notional) * self._returns[row]
                days = days | self._present[row]
        return self._tail(pnl, days, confidence)

    @staticmethod
    def _tail(pnl: np.ndarray, days: np.ndarray, confidence: Decimal) -> tuple[float, float, int]:
        pnl = pnl[days]
        if not len(pnl):
            return 0.0, 0.0, 0
        k = tail_count(len(pnl), confidence)
        worst = np.partition(pnl, k - 1)[:k]
        return -float(worst.max()), -float(worst.mean()), len(pnl)


# -- checks ------------------------------------------------------------------------------
def _pending_buys(account: AccountState) -> list[tuple[str, Decimal]]:
    return [(p.symbol, p.open_qty * p.ref_price) for p in account.pending if p.action == "BUY"]


def sector_exposure(account: AccountState, market: MarketRisk, sector: str) -> Decimal:
    sector_of = market.sector_of
    return sum((e for s, e in account.symbol_exposure.items() if sector_of.get(s, UNCLASSIFIED) == sector), ZERO)


def initial_margin(account: AccountState, market: MarketRisk) -> Decimal:
    return sum((e * market.rates(s)[0] for s, e in account.symbol_exposure.items()), ZERO)


def maintenance_margin(account: AccountState, market: MarketRisk) -> Decimal:
    return sum((e * market.rates(s)[1] for s, e in account.symbol_exposure.items()), ZERO)


def check_portfolio(account: AccountState, market: MarketRisk, symbol: str, notional: Decimal) -> ReasonCode | None:
    """The portfolio checks for a risk-adding BUY of `notional`, in the order they are
    reported; each off while its policy field is unset. Pending buys count as held."""
    limits = account.portfolio
    if not limits.active:
        return None
    pending = _pending_buys(account)
    equity = account.equity
    if limits.max_sector_exposure_pct is not None:
        sector = market.sector(symbol)
        exposure = (sector_exposure(account, market, sector)
                    + sum((n for s, n in pending if market.sector(s) == sector), ZERO) + notional)
        if exposure > limits.max_sector_exposure_pct * equity:
            return ReasonCode.SECTOR_EXPOSURE_EXCEEDED
    if limits.max_correlated_exposure_pct is not None:
        correlated = market.correlated(symbol, float(limits.correlation_threshold))
        exposure = (sum((e for s, e in account.symbol_exposure.items() if s in correlated), ZERO)
                    + sum((n for s, n in pending if s in correlated), ZERO) + notional)
        if exposure > limits.max_correlated_exposure_pct * equity:
            return ReasonCode.CORRELATED_EXPOSURE_EXCEEDED
    if limits.max_var_pct is not None:
        var, _, _ = market.value_at_risk_after(account, [*pending, (symbol, notional)], limits.var_confidence)
        if var > float(limits.max_var_pct * equity):
            return ReasonCode.VAR_LIMIT_EXCEEDED
    if limits.margin_check:
        required = (initial_margin(account, market) + sum((n * market.rates(s)[0] for s, n in pending), ZERO)
                    + notional * market.rates(symbol)[0])
        if required > equity:
            return ReasonCode.INSUFFICIENT_MARGIN
    return None


@dataclass(frozen=True, slots=True)
class Breach:
    """A post-trade limit breach: raised once when it begins, again only after it ended."""
    key: str            # what is breached: MARGIN_CALL, VAR_LIMIT_EXCEEDED or the sector's rule:sector
    rule: ReasonCode
    severity: str
    message: str


def breaches(account: AccountState, market: MarketRisk) -> list[Breach]:
    """What market moves have taken past the account's limits, now."""
    found: list[Breach] = []
    equity = account.equity
    limits = account.portfolio
    if limits.margin_check:
        required = maintenance_margin(account, market)
        if equity < required:
            found.append(Breach("MARGIN_CALL", ReasonCode.MARGIN_CALL, "CRITICAL",
                                f"equity {equity:.2f} below maintenance margin {required:.2f}"))
    if limits.max_var_pct is not None:
        var, _, n = market.value_at_risk_after(account, (), limits.var_confidence)
        if var > float(limits.max_var_pct * equity):
            found.append(Breach("VAR_LIMIT_EXCEEDED", ReasonCode.VAR_LIMIT_EXCEEDED, "WARNING",
                                f"1-day VaR {var:.2f} at {limits.var_confidence} over {n} days above"
                                f" max_var_pct {limits.max_var_pct} of equity {equity:.2f}"))
    if limits.max_sector_exposure_pct is not None:
        limit = limits.max_sector_exposure_pct * equity
        for sector in sorted({market.sector(s) for s in account.symbol_exposure}):
            exposure = sector_exposure(account, market, sector)
            if exposure > limit:
                found.append(Breach(f"SECTOR_EXPOSURE_EXCEEDED:{sector}", ReasonCode.SECTOR_EXPOSURE_EXCEEDED,
                                    "WARNING", f"sector {sector} exposure {exposure:.2f} above"
                                    f" max_sector_exposure_pct {limits.max_sector_exposure_pct} of equity"
                                    f" {equity:.2f}"))
    return found


__all__ = ["Breach", "Instrument", "INSTRUMENT_COLUMNS", "MarketRisk", "NO_LIMITS", "PortfolioLimits", "UNCLASSIFIED",
           "breaches", "check_portfolio", "initial_margin", "maintenance_margin", "tail_count"]
