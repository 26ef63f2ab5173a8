"""The account book against the database: rebuilt from the views at start-up,
then kept current from the raw tables through the change-feed module, and
reconciled against the views on a cadence.

What each source costs per pass is bounded by what is new or what the book
holds, never by history: fills and bars come from change feeds (new rows
only); policy and account versions are re-read per account (a handful of
rows); the status of the orders the book holds as working is read by id.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg

from adapters.changefeed import ChangeFeed, open_feed
from tradeflow import engine
from tradeflow.config import Settings
from tradeflow.trading.book import POLICY_DEFAULTS, AccountBook, BookFill, Ledgers
from tradeflow.trading.risk import INSTRUMENT_COLUMNS

log = logging.getLogger("tradeflow.book")
BAR = timedelta(minutes=1)
# exec_report_history's columns in BookFill's field order
FILL_COLUMNS = ("account_id", "strategy_id", "symbol", "order_id", "fill_id", "side", "fill_qty", "fill_price", "fee",
                "exec_ts")
# arrival order of the raw tables, as the feeds follow them on the embedded engine
FILL_FEED_KEY = ("received_at", "batch_id", "order_id", "fill_id")
BAR_FEED_KEY = ("received_at", "symbol", "ts")
# a difference in cash or realized P&L beyond this is a mismatch, not rounding
TOLERANCE = Decimal("0.000001")
# the marts round money to 6 decimals per row (macros/scale.sql): a sum over n rows
# (and over the rounded fee shares of the open lots) is off by up to n half units
MONEY_HALF_UNIT = Decimal("0.0000005")


def _fill(values) -> BookFill:
    """A fill row (FILL_COLUMNS' order) as the book applies it; a fee left out is 0."""
    *head, fee, exec_ts = values
    return BookFill(*head, fee or Decimal(0), exec_ts)


def load_accounts(conn: psycopg.Connection, book: AccountBook) -> None:
    """Every account's current version and policy (stg_account_policy fills the defaults)."""
    policy_columns = list(POLICY_DEFAULTS)
    for row in conn.execute(
            "SELECT p.account_id, p.status, p.max_leverage, a.initial_capital, "
            + ", ".join(f"p.{c}" for c in policy_columns)
            + " FROM stg_account_policy p JOIN stg_accounts a USING (account_id) ORDER BY p.account_id"):
        account_id, status, max_leverage, capital, *policy = row
        book.open_account(account_id, capital, status=status, max_leverage=max_leverage)
        book.set_policy(account_id, dict(zip(policy_columns, policy)))


def load_market(conn: psycopg.Connection, book: AccountBook) -> None:
    """Instruments and margin rates (one row per symbol and per class)."""
    book.risk.set_instruments(conn.execute(f"SELECT {', '.join(INSTRUMENT_COLUMNS)} FROM stg_instruments"))
    book.risk.set_margin_rates(conn.execute(
        "SELECT margin_class, initial_rate, maintenance_rate, is_default FROM margin_rates"))


def instrument_steps(conn: psycopg.Connection) -> dict[str, tuple[Decimal, Decimal]]:
    """Each instrument's (lot_size, tick_size), for the paper broker."""
    return {symbol: (lot, tick) for symbol, lot, tick in conn.execute(
        "SELECT symbol, lot_size, tick_size FROM stg_instruments")}


def load_returns(conn: psycopg.Connection, settings: Settings, book: AccountBook, as_of: datetime) -> None:
    """The daily-return window of every symbol as of `as_of` (risk_window_days rows per symbol)."""
    with engine.read_scope(conn, settings, as_of=as_of):
        rows = conn.execute("SELECT symbol, trading_day, daily_return FROM daily_returns").fetchall()
    book.risk.set_returns(rows, as_of)


def returns_needed(book: AccountBook) -> bool:
    return any(account.portfolio.needs_returns for account in book.accounts.values())


def bootstrap(conn: psycopg.Connection, settings: Settings, book: AccountBook, as_of: datetime) -> None:
    """Rebuild the book from the views as of `as_of`: accounts and policy, every fill
    in the views' order, the marks of the held symbols, peak equity, the working
    orders with their remainders and each account's last accepted time. Reads
    all fills and each symbol's last bar once: the start-up cost, never per decision."""
    load_accounts(conn, book)
    load_market(conn, book)
    if returns_needed(book):  # read only for an account with a VaR or correlation limit
        load_returns(conn, settings, book, as_of)
    for row in conn.execute(f"SELECT {', '.join(FILL_COLUMNS)} FROM stg_execs ORDER BY exec_ts, order_id, fill_id"):
        book.on_fill(_fill(row))
    # working orders after the fills: int_pending_orders has already taken their fills off
    for row in conn.execute(
            "SELECT client_order_id, account_id, strategy_id, symbol, action, open_qty, ref_price, decided_at,"
            " acknowledged FROM int_pending_orders"):
        order_id, account_id, strategy_id, symbol, side, open_qty, ref_price, decided_at, acknowledged = row
        if account_id in book.accounts:
            book.on_accepted(order_id, account_id, strategy_id, symbol, side, open_qty, ref_price, decided_at)
            if acknowledged:
                book.on_order_status(order_id, "ACK")
    # every symbol's last close by as_of (first-received copy, as stg_prices), so a fill in
    # a symbol not held now is valued at its mark, as pnl_timeseries does
    book.on_bars(conn.execute(
        "SELECT DISTINCT ON (symbol) symbol, ts, close FROM price_1m_history WHERE ts + interval '1 minute' <= %s"
        " ORDER BY symbol, ts DESC, received_at", (as_of,)).fetchall())
    with engine.read_scope(conn, settings, as_of=as_of):
        peaks = conn.execute("SELECT account_id, peak_equity FROM account_risk_inputs").fetchall()
    for account_id, peak in peaks:
        if account_id in book.accounts and peak is not None:
            book.accounts[account_id].peak_equity = max(book.accounts[account_id].peak_equity, peak)
    for account_id, last in conn.execute("SELECT account_id, max(decided_at) FROM trade_decisions"
                                         " WHERE outcome = 'ACCEPTED' GROUP BY account_id"):
        if account_id in book.accounts:
            book.accounts[account_id].last_accepted_at = last


class BookFollower:
    """Keeps a book current: new fills and bars from change feeds opened before the
    bootstrap read (a row seen twice is applied once), accounts and policy re-read
    per pass, working orders' states read by id. Bars are applied once they have
    closed by the caller's clock, so a replay's gate sees the past as it was."""

    def __init__(self, conn: psycopg.Connection, settings: Settings, book: AccountBook, *, consumer: str) -> None:
        self.conn = conn
        self.settings = settings
        self.book = book
        # from_now: the feeds begin after the rows already there, which bootstrap() reads
        self._fills: ChangeFeed = open_feed(settings, "exec_report_history", f"{consumer}-fills",
                                            order_by=FILL_FEED_KEY, from_now=True, poll_interval=0.05)
        self._bars: ChangeFeed = open_feed(settings, "price_1m_history", f"{consumer}-bars", order_by=BAR_FEED_KEY,
                                           from_now=True, poll_interval=0.05)
        self._future_bars: list[tuple[datetime, int, str, Decimal]] = []
        self._tiebreak = itertools.count()
        self._next_risk_refresh = time.monotonic() + settings.risk_refresh.total_seconds()

    def close(self) -> None:
        self._fills.close()
        self._bars.close()

    def sync(self, now: datetime) -> None:
        load_accounts(self.conn, self.book)
        self._refresh_risk(now)
        while changes := self._fills.fetch(5000, 0.0):
            for change in changes:
                if change.op in {"insert", "update_insert"}:
                    row = change.row
                    self.book.on_fill(_fill([row[column] for column in FILL_COLUMNS]))
        while changes := self._bars.fetch(5000, 0.0):
            for change in changes:
                if change.op in {"insert", "update_insert"}:
                    row = change.row
                    heapq.heappush(self._future_bars, (row["ts"], next(self._tiebreak), row["symbol"], row["close"]))
        self._apply_closed_bars(now)
        working = self.book.working_order_ids()
        if working:
            for order_id, status in self.conn.execute(
                    "SELECT client_order_id, status FROM orders WHERE client_order_id = ANY(%s)", (working,)):
                self.book.on_order_status(order_id, status)

    def _refresh_risk(self, now: datetime) -> None:
        """Instruments, margin rates and daily returns every settings.risk_refresh of wall
        time; the returns at once when a policy starts needing them."""
        due = time.monotonic() >= self._next_risk_refresh
        if due:
            self._next_risk_refresh = time.monotonic() + self.settings.risk_refresh.total_seconds()
            load_market(self.conn, self.book)
        if returns_needed(self.book) and (due or self.book.risk.returns_as_of is None):
            load_returns(self.conn, self.settings, self.book, now)

    def _apply_closed_bars(self, now: datetime) -> None:
        """Bars that closed by `now`, one minute at a time (a minute's bars move equity together)."""
        while self._future_bars and self._future_bars[0][0] + BAR <= now:
            ts = self._future_bars[0][0]
            minute = []
            while self._future_bars and self._future_bars[0][0] == ts:
                bar_ts, _, symbol, close = heapq.heappop(self._future_bars)
                minute.append((symbol, bar_ts, close))
            self.book.on_bars(minute)


@dataclass(frozen=True, slots=True)
class Mismatch:
    account_id: str
    field: str
    book: object
    views: object

    def describe(self) -> str:
        return f"{self.field}: book {self.book} vs views {self.views}"


def reconcile(conn: psycopg.Connection, settings: Settings, book: AccountBook | Ledgers,
              as_of: datetime) -> list[Mismatch]:
    """Book against views, per account: cash, realized P&L (under the views' method)
    and net quantity per (strategy, symbol)."""
    with engine.read_scope(conn, settings, as_of=as_of):
        cash = dict(conn.execute("SELECT account_id, cash FROM portfolio_state").fetchall())
        realized = {account_id: (method, Decimal(str(value)), rows) for account_id, method, value, rows in conn.execute(
            "SELECT account_id, max(method), sum(realized_pnl), count(*) FROM realized_pnl_latest GROUP BY account_id")}
        positions: dict[str, dict[tuple[str, str], Decimal]] = {}
        open_lots: dict[str, int] = {}
        for account_id, strategy_id, symbol, qty, lots in conn.execute(
                "SELECT account_id, strategy_id, symbol, net_qty, open_lots FROM open_positions_rollup"
                " WHERE net_qty <> 0"):
            positions.setdefault(account_id, {})[(strategy_id, symbol)] = qty
            open_lots[account_id] = open_lots.get(account_id, 0) + lots
    found = []
    for account_id in sorted(book.accounts):
        method, views_realized, rows = realized.get(account_id, (book.pnl_method, Decimal(0), 0))
        ledger = book.ledger(account_id, method)
        if abs(ledger["cash"] - cash.get(account_id, ledger["cash"])) > TOLERANCE:
            found.append(Mismatch(account_id, "cash", ledger["cash"], cash.get(account_id)))
        # average cost is computed in float8 inside the views (about 1e-12 relative)
        tolerance = (TOLERANCE if method == "fifo" else max(TOLERANCE, abs(views_realized) * Decimal("1e-9"))) \
            + (rows + open_lots.get(account_id, 0)) * MONEY_HALF_UNIT
        if abs(ledger["realized_pnl"] - views_realized) > tolerance:
            found.append(Mismatch(account_id, "realized_pnl", ledger["realized_pnl"], views_realized))
        if ledger["positions"] != positions.get(account_id, {}):
            found.append(Mismatch(account_id, "positions", ledger["positions"], positions.get(account_id, {})))
    return found
