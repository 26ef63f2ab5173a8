"""Account risk policy: append-only versions the operator writes; the gate
reads the newest (stg_account_policy) at its next decision. Every version
carries who and when and leaves an audit row (before/after); a kill-switch
change also raises a risk event."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from decimal import Decimal

import psycopg

from tradeflow.clock import utc_now
from tradeflow.ops import audit
from tradeflow.trading import accounts
from tradeflow.writer import insert_rows


class PolicyError(ValueError):
    """An invalid policy change; the message names the field."""


@dataclass(frozen=True, slots=True)
class Policy:
    account_id: str
    max_open_symbols: int | None = None
    allow_scale_in: bool | None = None
    sell_requires_long: bool | None = None
    max_order_notional: Decimal | None = None
    max_position_qty: Decimal | None = None
    max_concentration_pct: Decimal | None = None
    max_drawdown_pct: Decimal | None = None
    risk_per_trade_pct: Decimal | None = None
    kill_switch: bool | None = None
    reservation_ttl_seconds: int | None = None
    updated_at: datetime | None = None
    updated_by: str | None = None
    # portfolio checks (docs/risk.md), off while unset
    max_sector_exposure_pct: Decimal | None = None
    max_correlated_exposure_pct: Decimal | None = None
    correlation_threshold: Decimal | None = None
    max_var_pct: Decimal | None = None
    var_confidence: Decimal | None = None
    margin_check: bool | None = None


COLUMNS = tuple(f.name for f in fields(Policy))
SETTABLE = tuple(name for name in COLUMNS if name not in ("account_id", "updated_at", "updated_by"))
_FRACTIONS = {"max_concentration_pct", "max_drawdown_pct", "risk_per_trade_pct", "correlation_threshold",
              "max_var_pct"}
# max_sector_exposure_pct and max_correlated_exposure_pct may exceed 1 (a levered account)
VAR_CONFIDENCES = (Decimal("0.95"), Decimal("0.99"))


def current(conn: psycopg.Connection, account_id: str) -> Policy:
    row = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM account_policy WHERE account_id = %s"
                       " ORDER BY updated_at DESC LIMIT 1", (account_id,)).fetchone()
    return Policy(*row) if row else Policy(account_id)


def update(conn: psycopg.Connection, account_id: str, *, updated_by: str | None = None,
           at: datetime | None = None, **changes) -> Policy:
    """Write a new version: the current one with `changes` applied, stamped `at`
    (the wall clock by default; a replay passes its own clock)."""
    if accounts.get(conn, account_id) is None:
        raise PolicyError(f"account_id: {account_id} does not exist")
    validate(changes)
    before = current(conn, account_id)
    # the newest version must sort last even if the clock has not moved on
    now = at or utc_now()
    updated_at = now if before.updated_at is None else max(now, before.updated_at + timedelta(microseconds=1))
    after = replace(before, **changes, updated_at=updated_at, updated_by=updated_by or accounts.operator())
    insert_rows(conn, "account_policy", COLUMNS, [tuple(getattr(after, c) for c in COLUMNS)], batch_rows=1)
    kill_switch_flipped = "kill_switch" in changes and bool(before.kill_switch) != bool(after.kill_switch)
    if kill_switch_flipped:
        insert_rows(conn, "risk_events", ("event_id", "account_id", "symbol", "rule", "severity", "message", "ts",
                                          "source"),
                    [(f"kill_switch:{account_id}:{after.updated_at.isoformat()}", account_id, None, "KILL_SWITCH",
                      "CRITICAL" if after.kill_switch else "INFO",
                      f"kill switch {'engaged' if after.kill_switch else 'released'} by {after.updated_by}",
                      after.updated_at, "operator")], batch_rows=1)
    audit.record(conn, after.updated_by, "KILL_SWITCH" if kill_switch_flipped else "POLICY_CHANGE", account_id,
                 {"before": {name: getattr(before, name) for name in sorted(changes)},
                  "after": {name: getattr(after, name) for name in sorted(changes)}}, at=after.updated_at)
    return after


def validate(changes: dict[str, object]) -> None:
    """Refuse an unknown field or an invalid value, naming the field."""
    unknown = set(changes) - set(SETTABLE)
    if unknown:
        raise PolicyError(f"{sorted(unknown)[0]}: not a policy field (fields: {', '.join(SETTABLE)})")
    for name, value in changes.items():
        _validate(name, value)


def _validate(name: str, value: object) -> None:
    if value is None:
        return
    if name in {"allow_scale_in", "sell_requires_long", "kill_switch", "margin_check"}:
        if not isinstance(value, bool):
            raise PolicyError(f"{name}: must be true or false, got {value!r}")
        return
    number = Decimal(str(value))
    if name == "var_confidence" and number not in VAR_CONFIDENCES:
        raise PolicyError(f"{name}: 0.95 or 0.99, got {value}")
    if not number.is_finite() or number <= 0:
        raise PolicyError(f"{name}: must be greater than 0, got {value}")
    if name in _FRACTIONS and number > 1:
        raise PolicyError(f"{name}: a fraction of equity between 0 and 1, got {value}")
    if name in {"max_open_symbols", "reservation_ttl_seconds"} and number != number.to_integral_value():
        raise PolicyError(f"{name}: must be a whole number, got {value}")
