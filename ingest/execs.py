"""Execution-report ingest: validate fills, drop exact re-sends, refuse
conflicting ones (dead letter plus a risk event), batch-insert the rest into
exec_report_history.

Quantities, prices and fees are Decimals parsed from the value as received
(a float only through its shortest repr), never through binary floating
point: positions and cash are sums of them. exec_ts is ISO 8601 (no offset
means UTC) or a datetime, stored to the microsecond.

Each record is checked in this order and refused on the first failure:
malformed record, missing field (fee and venue are optional: 0 and ''), an
id, symbol or venue not storable as text, unparseable/out-of-range/future
exec_ts, non-numeric, non-finite or out-of-range number, non-positive
quantity or price, price below MIN_PRICE, negative fee, side not BUY/SELL
(any case), account_id not in stg_accounts (limits: ingest/validation.py).
"""
from __future__ import annotations

from dataclasses import asdict, astuple, dataclass, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from itertools import islice
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ingest.dlq import Rejection, dlq_id
from ingest.lateness import Arrival, find_late, newest_fills, record_late
from ingest.validation import (
    MAX_DIGITS,
    MAX_MAGNITUDE,
    MAX_SCALE,
    MIN_PRICE,
    FirstFailure,
    Ingester,
    IngestReport,
    as_text,
    explain_row,
    flag_malformed,
    flag_text,
    is_missing,
    parse_timestamps,
    payload,
    timestamp_out_of_range,
    with_fields,
)
from tradeflow.reasons import ReasonCode
from tradeflow.writer import insert_rows

KIND = "exec"
SIDES = ("BUY", "SELL")
RISK_COLUMNS = ("event_id", "account_id", "symbol", "rule", "severity", "message", "ts", "source")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One execution report (a fill of an order), as the execution adapter sends it.
    Keyword-only: eleven positional fields are too easy to swap."""
    account_id: str
    strategy_id: str
    order_id: str
    fill_id: str
    symbol: str
    side: str  # BUY or SELL
    fill_qty: Decimal
    fill_price: Decimal
    fee: Decimal = Decimal(0)
    venue: str = ""
    exec_ts: datetime  # timezone-aware


EXEC_FIELDS = tuple(f.name for f in fields(Fill))
DEFAULTS = {f.name: f.default for f in fields(Fill) if f.name in ("fee", "venue")}
REQUIRED = tuple(name for name in EXEC_FIELDS if name not in DEFAULTS)
TEXT_FIELDS = ("account_id", "strategy_id", "order_id", "fill_id", "symbol", "venue")
NUMERIC_FIELDS = ("fill_qty", "fill_price", "fee")


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (bool, np.bool_, dict, list)):
        return None
    try:
        return Decimal(str(value).strip())
    except (InvalidOperation, ValueError):  # ValueError: an int too long to print
        return None


def _finite(number: Decimal | None) -> bool:
    # Ordering a NaN Decimal raises: sign rules only look at finite numbers.
    return number is not None and number.is_finite()


def _in_range(number: Decimal) -> bool:
    """Fits every engine's NUMERIC: RisingWave holds 28 significant digits, 28 of them after the point."""
    _, digits, exponent = number.as_tuple()  # not normalize(): it rounds to the context's 28 digits
    while len(digits) > 1 and digits[-1] == 0:
        digits, exponent = digits[:-1], exponent + 1
    if digits == (0,):
        return True
    return abs(number) < MAX_MAGNITUDE and len(digits) <= MAX_DIGITS and -exponent <= MAX_SCALE


def _values(fill: Fill, names: Iterable[str]) -> str:
    return ", ".join(f"{name} {getattr(fill, name)}" for name in names)


class ExecIngester(Ingester):
    """Writes validated fills to exec_report_history."""

    kind = KIND

    def ingest_fills(self, fills: Iterable[Fill]) -> IngestReport:
        """The Python API: the same checks and dead letters as files, in chunks of ingest_batch_rows."""
        pending = iter(fills)
        chunks = iter(lambda: list(islice(pending, self.settings.ingest_batch_rows)), [])
        return self.ingest(pd.DataFrame([asdict(fill) for fill in chunk], columns=list(EXEC_FIELDS), dtype=object)
                           for chunk in chunks)

    def ingest_frame(self, raw: pd.DataFrame, *, dead_letters: bool = True) -> IngestReport:
        now = self.clock()
        report = IngestReport(read=len(raw))
        raw = with_fields(raw, EXEC_FIELDS)
        valid, rejections = self._validate(raw, now)
        fresh, report.duplicates, conflicts = self._split_known(valid, raw)
        if fresh:
            arrivals = [Arrival((f.account_id, f.strategy_id, f.symbol), f"{f.order_id}/{f.fill_id}", f.account_id,
                                f.symbol, f.exec_ts) for _, f in fresh]
            late = find_late(arrivals, newest_fills(self.conn, [a.key for a in arrivals]), self.settings.exec_lateness)
            report.inserted, refused = self._store(
                "exec_report_history", EXEC_FIELDS, [astuple(fill) for _, fill in fresh],
                key=("order_id", "fill_id"), narrow="order_id", now=now)
            not_stored = {arrivals[i] for i, _ in refused}
            record_late(self.conn, KIND, [x for x in late if x.arrival not in not_stored],
                        lateness=self.settings.exec_lateness, source=self.source, batch_id=self.batch_id,
                        received_at=now, batch_rows=self.settings.ingest_batch_rows)
            rejections += [Rejection(payload=payload(raw.iloc[fresh[i][0]]), field="record",
                                     code=ReasonCode.DATABASE_REFUSED, reason=message) for i, message in refused]
        # A replay reports a conflict again but it is the same incident: no second alarm.
        if conflicts and dead_letters:
            self._raise_conflicts(conflicts, now)
        return self._reject(report, rejections + [r for _, r in conflicts], now=now, dead_letters=dead_letters)

    def _validate(self, raw: pd.DataFrame, now: datetime) -> tuple[dict[int, Fill], list[Rejection]]:
        """Valid fills by row position, and rejections (first failing rule wins)."""
        checks = FirstFailure(raw.index)

        def mask(values: Iterable[bool]) -> pd.Series:
            return pd.Series(list(values), index=raw.index, dtype=bool)

        def column(name: str, convert: Callable[[object], object]) -> list[object]:
            """Typed values; an absent optional field takes its default."""
            absent = is_missing(raw[name]) if name in DEFAULTS else [False] * len(raw)
            return [DEFAULTS[name] if gone else convert(v) for v, gone in zip(raw[name], absent)]

        flag_malformed(checks, raw)
        for name in REQUIRED:
            checks.flag(is_missing(raw[name]), name, ReasonCode.MISSING_FIELD)
        for name in TEXT_FIELDS:
            flag_text(checks, raw[name], name)

        # PostgreSQL keeps microseconds: compare re-sends at the precision that is stored.
        stamps = parse_timestamps(raw["exec_ts"]).dt.floor("us")
        checks.flag(stamps.isna(), "exec_ts", ReasonCode.UNPARSEABLE_TIMESTAMP)
        checks.flag(timestamp_out_of_range(stamps), "exec_ts", ReasonCode.TIMESTAMP_OUT_OF_RANGE)
        checks.flag(stamps > pd.Timestamp(now + self.settings.max_future_skew), "exec_ts",
                    ReasonCode.FUTURE_TIMESTAMP)

        # Only stamps in range convert: year 0001 with a positive offset falls before year 1.
        in_range = stamps.notna() & ~timestamp_out_of_range(stamps)
        values: dict[str, list[object]] = {
            "exec_ts": [t.to_pydatetime() if ok else None for t, ok in zip(stamps, in_range)]}
        for name in NUMERIC_FIELDS:
            numbers = values[name] = column(name, _decimal)
            checks.flag(mask(n is None for n in numbers), name, ReasonCode.NOT_A_NUMBER)
            checks.flag(mask(n is not None and not n.is_finite() for n in numbers), name, ReasonCode.NON_FINITE)
            checks.flag(mask(_finite(n) and not _in_range(n) for n in numbers), name, ReasonCode.OUT_OF_RANGE)
        for name, reason in (("fill_qty", ReasonCode.NON_POSITIVE_QUANTITY),
                             ("fill_price", ReasonCode.NON_POSITIVE_PRICE)):
            checks.flag(mask(_finite(n) and n <= 0 for n in values[name]), name, reason)
        checks.flag(mask(_finite(n) and n < MIN_PRICE for n in values["fill_price"]), "fill_price",
                    ReasonCode.PRICE_TOO_SMALL)
        checks.flag(mask(_finite(n) and n < 0 for n in values["fee"]), "fee", ReasonCode.NEGATIVE_FEE)

        values["side"] = column("side", lambda v: str(v).strip().upper())
        checks.flag(mask(side not in SIDES for side in values["side"]), "side", ReasonCode.UNKNOWN_SIDE)

        for name in TEXT_FIELDS:
            values[name] = column(name, lambda v: as_text(v).strip())
        accounts = pd.Series(values["account_id"], index=raw.index, dtype=object)
        candidates = sorted(set(accounts[~checks.failed]))
        known = {row[0] for row in self.conn.execute(
            "SELECT account_id FROM stg_accounts WHERE account_id = ANY(%s)", (candidates,))} if candidates else set()
        checks.flag(~accounts.isin(known), "account_id", ReasonCode.UNKNOWN_ACCOUNT)

        valid = {int(i): Fill(**{name: values[name][i] for name in EXEC_FIELDS})
                 for i in np.flatnonzero((~checks.failed).to_numpy())}
        return valid, checks.rejections(raw, lambda code, name, row: explain_row(code, name, row, self.settings))

    def _split_known(self, valid: dict[int, Fill], raw: pd.DataFrame
                     ) -> tuple[list[tuple[int, Fill]], int, list[tuple[Fill, Rejection]]]:
        """Drop exact re-sends (within the chunk and against stored fills);
        refuse a fill whose (order_id, fill_id) is known with other values."""
        stored = self._stored_fills({fill.order_id for fill in valid.values()})
        first = dict(stored)
        fresh: list[tuple[int, Fill]] = []  # (row position, fill)
        duplicates = 0
        conflicts: list[tuple[Fill, Rejection]] = []
        for i, fill in valid.items():
            key = (fill.order_id, fill.fill_id)
            known = first.setdefault(key, fill)
            if known is fill:
                fresh.append((i, fill))
            elif known == fill:  # Decimal equality: 10 and 10.00 are the same quantity
                duplicates += 1
            else:
                differ = [name for name in EXEC_FIELDS if getattr(known, name) != getattr(fill, name)]
                where = "is stored" if key in stored else "came earlier in this batch"
                conflicts.append((fill, Rejection(
                    payload=payload(raw.loc[i]), field="fill_id", code=ReasonCode.CONFLICTING_DUPLICATE,
                    reason=f"order {fill.order_id} fill {fill.fill_id} {where} with {_values(known, differ)};"
                           f" this copy has {_values(fill, differ)}")))
        return fresh, duplicates, conflicts

    def _stored_fills(self, order_ids: set[str]) -> dict[tuple[str, str], Fill]:
        """First-received stored copy per (order_id, fill_id), as stg_execs keeps it."""
        if not order_ids:
            return {}
        rows = self.conn.execute(
            f"SELECT {', '.join(EXEC_FIELDS)} FROM exec_report_history WHERE order_id = ANY(%s)"
            " ORDER BY received_at, batch_id", (sorted(order_ids),)).fetchall()
        stored: dict[tuple[str, str], Fill] = {}
        for row in rows:
            fill = Fill(**dict(zip(EXEC_FIELDS, row)))
            stored.setdefault((fill.order_id, fill.fill_id), fill)
        return stored

    def _raise_conflicts(self, conflicts: list[tuple[Fill, Rejection]], now: datetime) -> None:
        """A CONFLICTING_FILL risk event per conflict. Its event_id is the dead
        letter's id, so the two join and a re-ingested file raises no new event."""
        events = {dlq_id(KIND, rejection): (fill, rejection) for fill, rejection in conflicts}
        raised = {row[0] for row in self.conn.execute(
            "SELECT event_id FROM risk_events WHERE event_id = ANY(%s)", (list(events),))}
        rows = ((event_id, fill.account_id, fill.symbol, "CONFLICTING_FILL", "HIGH", rejection.reason, now,
                 self.source) for event_id, (fill, rejection) in events.items() if event_id not in raised)
        insert_rows(self.conn, "risk_events", RISK_COLUMNS, rows, self.settings.ingest_batch_rows)
