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

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS: dict[ReasonCode, str] = {
    ReasonCode.MISSING_FIELD: "A required field is absent or empty.",
    ReasonCode.NOT_A_NUMBER: "A numeric field does not parse as a number.",
    ReasonCode.NON_FINITE: "A numeric field is NaN or infinite.",
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
}
