"""Accounts: the table is append-only, every change is a new version row
(stg_accounts shows the newest per account_id), stamped with when and by whom,
and leaves an audit row."""
from __future__ import annotations

import getpass
import os
from dataclasses import astuple, dataclass, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

import psycopg

from tradeflow.clock import utc_now
from tradeflow.ops import audit
from tradeflow.writer import insert_rows

STATUSES = ("ACTIVE", "BLOCKED")


class AccountError(ValueError):
    """An invalid account change; the message names the field."""


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    base_currency: str
    initial_capital: Decimal
    status: str
    max_leverage: Decimal
    updated_at: datetime
    updated_by: str


COLUMNS = tuple(f.name for f in fields(Account))


def operator() -> str:
    return os.environ.get("TRADEFLOW_OPERATOR") or getpass.getuser()


def get(conn: psycopg.Connection, account_id: str) -> Account | None:
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM stg_accounts WHERE account_id = %s",
                       (account_id,)).fetchone()
    return Account(*row) if row else None


def add(conn: psycopg.Connection, account_id: str, *, capital: Decimal | str, currency: str = "USD",
        max_leverage: Decimal | str = Decimal(2), status: str = "ACTIVE") -> Account:
    account_id = account_id.strip()
    if not account_id:
        raise AccountError("account_id: must not be empty")
    if get(conn, account_id):
        raise AccountError(f"account_id: {account_id} already exists (change its status with set-status)")
    currency = currency.strip().upper()
    if len(currency) != 3 or not currency.isalpha():
        raise AccountError(f"currency: {currency!r} is not a three-letter code such as USD")
    account = Account(account_id, currency, _positive("capital", capital), _status(status),
                      _positive("max_leverage", max_leverage), utc_now(), operator())
    _write(conn, account)
    audit.record(conn, account.updated_by, "ACCOUNT_ADD", account_id,
                 {"base_currency": account.base_currency, "initial_capital": account.initial_capital,
                  "status": account.status, "max_leverage": account.max_leverage}, at=account.updated_at)
    return account


def set_status(conn: psycopg.Connection, account_id: str, status: str, *, updated_by: str | None = None) -> Account:
    """The new current version; none is written if the status is unchanged.
    updated_by defaults to the operator; processes (the gate) name themselves."""
    current = get(conn, account_id)
    if current is None:
        raise AccountError(f"account_id: {account_id} does not exist (create it with add)")
    status = _status(status)
    if status == current.status:
        return current
    # stg_accounts keeps the newest updated_at: a version must sort after the
    # one it replaces even if the clock has not moved on (or stepped back).
    updated_at = max(utc_now(), current.updated_at + timedelta(microseconds=1))
    account = replace(current, status=status, updated_at=updated_at, updated_by=updated_by or operator())
    _write(conn, account)
    audit.record(conn, account.updated_by, "ACCOUNT_STATUS", account_id,
                 {"before": current.status, "after": status}, at=updated_at)
    return account


def _write(conn: psycopg.Connection, account: Account) -> None:
    insert_rows(conn, "accounts", COLUMNS, [astuple(account)], batch_rows=1)


def _positive(name: str, value: Decimal | str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise AccountError(f"{name}: {value!r} is not a number") from None
    if not number.is_finite() or number <= 0:
        raise AccountError(f"{name}: must be a finite number greater than 0, got {value}")
    return number


def _status(value: str) -> str:
    status = value.strip().upper()
    if status not in STATUSES:
        raise AccountError(f"status: {value!r} is not one of {', '.join(STATUSES)}")
    return status
