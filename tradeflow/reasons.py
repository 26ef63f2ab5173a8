"""Every reason a record, signal or order can be refused, in one enum.

Codes are stable strings: they are stored in dead_letter.reason_code and in
rejection relations, exported as metric labels and documented in
docs/reason-codes.md (generated from this enum by `tradeflow reasons`).
"""
from __future__ import annotations

from enum import StrEnum


class ReasonCode(StrEnum):
    # -- input validation (ingesters) --------------------------------------
    MISSING_FIELD = "MISSING_FIELD"
    NOT_A_NUMBER = "NOT_A_NUMBER"
    NON_FINITE = "NON_FINITE"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    NON_POSITIVE_PRICE = "NON_POSITIVE_PRICE"
    NEGATIVE_VOLUME = "NEGATIVE_VOLUME"
    HIGH_BELOW_LOW = "HIGH_BELOW_LOW"
    OPEN_OUTSIDE_RANGE = "OPEN_OUTSIDE_RANGE"
    CLOSE_OUTSIDE_RANGE = "CLOSE_OUTSIDE_RANGE"
    UNPARSEABLE_TIMESTAMP = "UNPARSEABLE_TIMESTAMP"
    NOT_ON_MINUTE = "NOT_ON_MINUTE"
    FUTURE_TIMESTAMP = "FUTURE_TIMESTAMP"
    CONFLICTING_DUPLICATE = "CONFLICTING_DUPLICATE"
    NON_POSITIVE_QUANTITY = "NON_POSITIVE_QUANTITY"
    NEGATIVE_FEE = "NEGATIVE_FEE"
    UNKNOWN_SIDE = "UNKNOWN_SIDE"
    UNKNOWN_ACCOUNT = "UNKNOWN_ACCOUNT"
    MALFORMED_RECORD = "MALFORMED_RECORD"
    NOT_TEXT = "NOT_TEXT"
    INVALID_ENCODING = "INVALID_ENCODING"
    NUL_CHARACTER = "NUL_CHARACTER"
    TEXT_TOO_LONG = "TEXT_TOO_LONG"
    TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
    PRICE_TOO_SMALL = "PRICE_TOO_SMALL"
    DATABASE_REFUSED = "DATABASE_REFUSED"
    NOT_A_BOOLEAN = "NOT_A_BOOLEAN"
    NON_POSITIVE_STEP = "NON_POSITIVE_STEP"
    UNKNOWN_MARGIN_CLASS = "UNKNOWN_MARGIN_CLASS"
    VENUE_REPORT_MALFORMED = "VENUE_REPORT_MALFORMED"
    # -- routing and pre-trade risk (decision gate) --------------------------
    OPEN_LIMIT_EXCEEDED = "OPEN_LIMIT_EXCEEDED"
    NO_OPEN_POSITION = "NO_OPEN_POSITION"
    ACCOUNT_BLOCKED = "ACCOUNT_BLOCKED"
    KILL_SWITCH_ENGAGED = "KILL_SWITCH_ENGAGED"
    NO_REFERENCE_PRICE = "NO_REFERENCE_PRICE"
    ZERO_SIZE = "ZERO_SIZE"
    STALE_SIGNAL = "STALE_SIGNAL"
    ORDER_NOTIONAL_EXCEEDED = "ORDER_NOTIONAL_EXCEEDED"
    POSITION_LIMIT_EXCEEDED = "POSITION_LIMIT_EXCEEDED"
    LEVERAGE_EXCEEDED = "LEVERAGE_EXCEEDED"
    CONCENTRATION_EXCEEDED = "CONCENTRATION_EXCEEDED"
    DRAWDOWN_BREACHED = "DRAWDOWN_BREACHED"
    INSUFFICIENT_BUYING_POWER = "INSUFFICIENT_BUYING_POWER"
    BOOK_MISMATCH = "BOOK_MISMATCH"
    SECTOR_EXPOSURE_EXCEEDED = "SECTOR_EXPOSURE_EXCEEDED"
    CORRELATED_EXPOSURE_EXCEEDED = "CORRELATED_EXPOSURE_EXCEEDED"
    VAR_LIMIT_EXCEEDED = "VAR_LIMIT_EXCEEDED"
    INSUFFICIENT_MARGIN = "INSUFFICIENT_MARGIN"
    # -- post-trade and event time (risk events) ------------------------------
    MARGIN_CALL = "MARGIN_CALL"
    LATE_PRICE = "LATE_PRICE"
    LATE_FILL = "LATE_FILL"
    # -- broker refusals (order_events REJECTED, reason "<CODE>: <details>") --
    SESSION_CLOSED = "SESSION_CLOSED"
    PRICE_OFF_TICK = "PRICE_OFF_TICK"
    NO_TIME_ZONE = "NO_TIME_ZONE"

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[ReasonCode, str] = {
    ReasonCode.MISSING_FIELD: "A required field is absent or empty.",
    ReasonCode.NOT_A_NUMBER: "A numeric field does not parse as a number.",
    ReasonCode.NON_FINITE: "A numeric field is NaN or infinite.",
    ReasonCode.OUT_OF_RANGE: ("A number is 1e15 or larger, has more than 28 significant digits or more than 28"
                              " decimal places (RisingWave's NUMERIC), or underflowed to zero when parsed."),
    ReasonCode.NON_POSITIVE_PRICE: "A price is zero or negative.",
    ReasonCode.NEGATIVE_VOLUME: "Volume is negative.",
    ReasonCode.HIGH_BELOW_LOW: "The bar's high is below its low.",
    ReasonCode.OPEN_OUTSIDE_RANGE: "The open lies outside [low, high].",
    ReasonCode.CLOSE_OUTSIDE_RANGE: "The close lies outside [low, high].",
    ReasonCode.UNPARSEABLE_TIMESTAMP: "The timestamp does not parse as ISO 8601 (or a datetime value).",
    ReasonCode.NOT_ON_MINUTE: "A 1-minute bar's timestamp is not on a whole minute.",
    ReasonCode.FUTURE_TIMESTAMP: "The timestamp lies further in the future than TRADEFLOW_MAX_FUTURE_SECONDS.",
    ReasonCode.CONFLICTING_DUPLICATE: "Same natural key as a stored record, but different values.",
    ReasonCode.NON_POSITIVE_QUANTITY: "A fill quantity is zero or negative.",
    ReasonCode.NEGATIVE_FEE: "A fee is negative.",
    ReasonCode.UNKNOWN_SIDE: "Side is not BUY or SELL.",
    ReasonCode.UNKNOWN_ACCOUNT: "The account_id is not in the accounts table.",
    ReasonCode.MALFORMED_RECORD: "The feed could not split the record into fields (a line that is not a JSON object,"
                                 " a CSV row with more cells than the header); the payload keeps its raw text.",
    ReasonCode.NOT_TEXT: ("An id, symbol or venue is not a string or an integer"
                          " (a JSON object or array, a float, a boolean)."),
    ReasonCode.INVALID_ENCODING: "A text value is not valid UTF-8 (the payload keeps it escaped).",
    ReasonCode.NUL_CHARACTER: "A text value contains a NUL character, which PostgreSQL text cannot store.",
    ReasonCode.TEXT_TOO_LONG: "An id, symbol or venue is longer than 128 characters.",
    ReasonCode.TIMESTAMP_OUT_OF_RANGE: "The timestamp is before 1970-01-01 or from 2200-01-01 on.",
    ReasonCode.PRICE_TOO_SMALL: "A price is below 1e-12, smaller than any traded instrument's tick.",
    ReasonCode.DATABASE_REFUSED: "The database refused the row although it passed validation (its message is kept).",
    ReasonCode.NOT_A_BOOLEAN: "A yes/no field (shortable) is not true/false, yes/no, 1/0.",
    ReasonCode.NON_POSITIVE_STEP: "An instrument's lot_size or tick_size is zero or negative.",
    ReasonCode.UNKNOWN_MARGIN_CLASS: "An instrument's margin_class is not one of the margin_classes dbt var's classes.",
    ReasonCode.VENUE_REPORT_MALFORMED: ("A venue's order report (an Alpaca trade update, a ccxt order or trade) cannot"
                                        " be read as an execution report: a field missing, not a number, a fill"
                                        " quantity or price not positive. The payload keeps the report as received;"
                                        " the order's other reports are recorded."),
    ReasonCode.OPEN_LIMIT_EXCEEDED: "Every eligible account already has max_open_symbols open or pending symbols.",
    ReasonCode.NO_OPEN_POSITION: "SELL without an open position (a net long one in strict mode) to close.",
    ReasonCode.ACCOUNT_BLOCKED: "No ACTIVE account can take new risk (status BLOCKED).",
    ReasonCode.KILL_SWITCH_ENGAGED: "The account's kill switch is on: nothing is accepted.",
    ReasonCode.NO_REFERENCE_PRICE: "No close or ATR for the signal's bar to size the order.",
    ReasonCode.ZERO_SIZE: "The sized quantity rounds down to zero lots.",
    ReasonCode.STALE_SIGNAL: "The signal's bar closed longer ago than the gate's max_signal_age.",
    ReasonCode.ORDER_NOTIONAL_EXCEEDED: "qty x price is above the account's max_order_notional.",
    ReasonCode.POSITION_LIMIT_EXCEEDED: "Position plus pending plus this order is above max_position_qty.",
    ReasonCode.LEVERAGE_EXCEEDED: "Gross exposure incl. pending and this order is above equity x max_leverage.",
    ReasonCode.CONCENTRATION_EXCEEDED: "This symbol's exposure would be above max_concentration_pct of equity.",
    ReasonCode.DRAWDOWN_BREACHED: "Equity is below peak by more than max_drawdown_pct: the account is blocked.",
    ReasonCode.INSUFFICIENT_BUYING_POWER: "Not enough cash (and margin) for this order plus pending ones.",
    ReasonCode.BOOK_MISMATCH: "The gate's account book differed from the views (cash, realized P&L or positions):"
                              " a CRITICAL risk event; the book is rebuilt and the account takes no new risk"
                              " until they agree.",
    ReasonCode.SECTOR_EXPOSURE_EXCEEDED: ("The sector's gross exposure incl. pending buys and this order would be above"
                                          " max_sector_exposure_pct of equity (post-trade: a WARNING when market"
                                          " moves take it there)."),
    ReasonCode.CORRELATED_EXPOSURE_EXCEEDED: ("This order plus the exposure (and pending buys) in symbols whose"
                                              " daily-return correlation with it is at least correlation_threshold"
                                              " would be above max_correlated_exposure_pct of equity."),
    ReasonCode.VAR_LIMIT_EXCEEDED: ("1-day historical VaR at var_confidence, with this order and the pending buys,"
                                    " would be above max_var_pct of equity (post-trade: a WARNING when market moves"
                                    " take it there)."),
    ReasonCode.INSUFFICIENT_MARGIN: ("Initial margin of the positions, pending buys and this order would be above"
                                     " equity (margin_check)."),
    ReasonCode.MARGIN_CALL: ("Equity fell below the maintenance margin of the positions (margin_check): a CRITICAL"
                             " risk event."),
    ReasonCode.LATE_PRICE: ("A bar arrived more than price_lateness behind the newest bar already stored for its"
                            " symbol: stored, flagged in late_arrivals, counted and raised as a risk event."),
    ReasonCode.LATE_FILL: ("A fill arrived more than exec_lateness behind the newest fill already stored for its"
                           " (account, strategy, symbol): stored, flagged in late_arrivals, counted and raised as a"
                           " risk event."),
    ReasonCode.SESSION_CLOSED: "Broker: a DAY order that cannot trade before the session end (paper broker:"
                               " session_end, UTC).",
    ReasonCode.PRICE_OFF_TICK: "Broker: a limit or stop price that is not a positive multiple of the tick size.",
    ReasonCode.NO_TIME_ZONE: "Broker: the order's created_at has no time zone.",
}
