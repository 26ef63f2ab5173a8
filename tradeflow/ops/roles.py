"""Least-privilege login roles for the embedded engine (deploy/roles/*.sql for
the streaming engines; docs/security.md for who may do what and why).

Each process gets the privileges its own statements need and nothing more:
no role may UPDATE or DELETE anything (every raw table is append-only), and
only the reader is confined to views. A view runs with its owner's rights in
PostgreSQL, so SELECT on a view is enough to read it without any grant on the
raw tables under it.

dbt replaces every view on each run (new view, rename, drop the old one), and
grants go with the old view: run create_roles again after every deploy and
after `dbt test` (which recreates the <schema>_audit views). It converges, in
one transaction, so a re-run also takes back grants that are no longer listed.

Passwords come from TRADEFLOW_<ROLE>_PASSWORD or from the file named by
TRADEFLOW_CREDENTIALS_FILE, never from code. They reach the server only as
SCRAM verifiers computed on the client, so not even a server statement log
holds one, and this module never logs them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import psycopg
from psycopg import sql

from tradeflow import engine
from tradeflow.config import PROJECT_DIR, Settings

log = logging.getLogger(__name__)

CREDENTIALS_FILE_VAR = "TRADEFLOW_CREDENTIALS_FILE"


class RolesError(RuntimeError):
    pass


class CredentialsError(ValueError):
    """Unusable credentials; the message never contains a password."""


@dataclass(frozen=True)
class Role:
    name: str
    select: tuple[str, ...] = ()
    insert: tuple[str, ...] = ()
    marts: bool = False        # SELECT on every mart (models/marts)
    audit_views: bool = False  # SELECT on the dbt test audit views (<schema>_audit)

    @property
    def password_var(self) -> str:
        return f"TRADEFLOW_{self.name.removeprefix('tradeflow_').upper()}_PASSWORD"


ROLES = (
    # ingest/prices.py, execs.py, instruments.py, dlq.py, replay.py: dedup
    # lookups by natural key, known accounts and margin classes, pending dead
    # letters, a replay's check that another replay has not resolved the letter;
    # CONFLICTING_FILL and LATE_* risk events, late_arrivals flags.
    Role("tradeflow_ingester",
         select=("price_1m_history", "exec_report_history", "risk_events", "stg_accounts", "stg_dead_letter",
                 "dead_letter_replay", "margin_rates", "instruments", "stg_instruments"),
         insert=("price_1m_history", "exec_report_history", "dead_letter", "dead_letter_replay", "risk_events",
                 "instruments", "late_arrivals")),
    # tradeflow/trading/gate.py, book_sync.py: the signals, and the views its account
    # book is rebuilt from and reconciled against; the raw fills and bars its change
    # feeds follow; its own decisions (exactly once), and the drawdown block (an
    # account version, its audit row, a risk event). Operators' order requests are
    # priced at the last close; paper accounts are opened on first use; each
    # strategy's weight scales its size.
    Role("tradeflow_gate",
         select=("strategy_signal_history", "trade_decisions", "strategy_config", "account_risk_inputs",
                 "unrealized_pnl_latest", "int_pending_orders", "stg_accounts", "stg_account_policy", "stg_execs",
                 "orders",
                 "portfolio_state", "realized_pnl_latest", "open_positions_rollup", "strategy_weights_latest",
                 "manual_order_requests", "price_1m_history", "exec_report_history", "stg_instruments",
                 "margin_rates", "daily_returns"),
         insert=("trade_decisions", "order_events", "risk_events", "accounts", "audit_log")),
    # adapters/execution.py, daemon.py, changefeed.py: accepted orders, order
    # state and fills; the feeds read the raw bars and order_commands; fills go
    # through the exec ingester (its lookups, dead letters and risk events);
    # malformed venue reports are dead-lettered once (stg_dead_letter lookup).
    Role("tradeflow_adapter",
         select=("accepted_trade_signal_history", "orders", "stg_execs", "order_events", "order_commands",
                 "price_1m_history", "adapter_feed_position", "exec_report_history", "risk_events",
                 "stg_accounts", "stg_instruments", "stg_dead_letter"),
         insert=("order_events", "exec_report_history", "adapter_feed_position", "dead_letter", "risk_events",
                 "late_arrivals")),
    # tradeflow/accounts.py, policy.py, orders.py, weights.py: versions on top
    # of the current ones, the kill-switch risk event, order requests, weight
    # updates, and the audit row of each action.
    Role("tradeflow_operator",
         select=("account_policy", "stg_account_policy", "stg_accounts"), marts=True,
         insert=("account_policy", "accounts", "order_commands", "manual_order_requests", "strategy_weight_history",
                 "risk_events", "audit_log")),
    Role("tradeflow_reader", marts=True, audit_views=True),
)
ROLE_NAMES = tuple(role.name for role in ROLES)


def marts(project_dir: Path = PROJECT_DIR) -> tuple[str, ...]:
    """The mart views: one per models/marts/**/*.sql (no mart sets an alias)."""
    return tuple(sorted(path.stem for path in (project_dir / "models" / "marts").rglob("*.sql")))


# -- credentials -----------------------------------------------------------------
def load_passwords(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """{role: password} from TRADEFLOW_CREDENTIALS_FILE, then TRADEFLOW_<ROLE>_PASSWORD
    (the environment wins). Roles with neither are left out."""
    env = os.environ if environ is None else environ
    passwords = read_credentials_file(Path(env[CREDENTIALS_FILE_VAR])) if env.get(CREDENTIALS_FILE_VAR) else {}
    for role in ROLES:
        if env.get(role.password_var):
            passwords[role.name] = env[role.password_var]
    return passwords


def read_credentials_file(path: Path) -> dict[str, str]:
    """A JSON object {"tradeflow_reader": "..."} or `role=password` lines (# comments)."""
    entries = read_secrets_file(path, "role=password", "password")
    _check_names(entries, str(path.expanduser().resolve()))
    return entries


def read_secrets_file(path: Path, line_form: str = "name=value", value_name: str = "value") -> dict[str, str]:
    """{name: secret} from a JSON object or `name=value` lines (# comments), from a
    file outside the repository; no message ever holds a value."""
    path = path.expanduser().resolve()
    if path.is_relative_to(PROJECT_DIR):
        raise CredentialsError(f"{path}: credentials must live outside the repository, where they cannot be committed")
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users: chmod 600 it", path)
    text = path.read_text()
    if text.lstrip().startswith("{"):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as e:  # its message has a position, not the text
            raise CredentialsError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not all(isinstance(v, str) for v in entries.values()):
            raise CredentialsError(f"{path}: every {value_name} must be a string")
    else:
        entries = {}
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, secret = line.partition("=")
            if not sep:
                raise CredentialsError(f"{path}, line {lineno}: expected {line_form}")
            entries[name.strip()] = secret.strip()
    if empty := sorted(name for name, secret in entries.items() if not secret):
        raise CredentialsError(f"{path}: empty {value_name} for {', '.join(empty)}")
    return entries


def _check_names(passwords: Mapping[str, str], where: str) -> None:
    if unknown := sorted(set(passwords) - set(ROLE_NAMES)):
        raise CredentialsError(f"{where}: unknown role(s) {', '.join(unknown)} (roles: {', '.join(ROLE_NAMES)})")


# -- roles and grants --------------------------------------------------------------
def create_roles(conn: psycopg.Connection, schema: str, passwords: Mapping[str, str] | None = None) -> dict[str, str]:
    """Create or update every role and set its grants in `schema` (and
    `<schema>_audit` when dbt tests have created it) to exactly what ROLES lists.

    `passwords` defaults to load_passwords(); a role without one logs in only
    where authentication is `trust`, and an existing role keeps its password.
    Returns {role: what was done}, with no secrets in it."""
    passwords = load_passwords() if passwords is None else dict(passwords)
    _check_names(passwords, "passwords")
    audit_schema = f"{schema}_audit"
    mart_names = marts()
    present = {name for (name,) in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm')", (schema,))}
    needed = {rel for role in ROLES for rel in role.select + role.insert} | set(mart_names)
    if missing := sorted(needed - present):
        raise RolesError(f"not in schema {schema}: {', '.join(missing)} (deploy the models first)")
    has_audit = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (audit_schema,)).fetchone() is not None
    done = {}
    with conn.transaction():  # other sessions see the old grants or the new ones, never none
        for role in ROLES:
            done[role.name] = _ensure_login(conn, role.name, passwords.get(role.name))
            # psql, BI tools and Grafana logging in as the role find the views without a schema prefix
            conn.execute(sql.SQL("ALTER ROLE {} SET search_path TO {}, public").format(
                sql.Identifier(role.name), sql.Identifier(schema)))
            _grant(conn, role, schema, mart_names)
            if has_audit:
                _grant_audit_views(conn, role, audit_schema)
    for name, outcome in done.items():
        log.debug("role %s: %s", name, outcome)  # the caller reports them
    return done


def _ensure_login(conn: psycopg.Connection, role: str, password: str | None) -> str:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None
    statement = sql.SQL("{} ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS").format(
        sql.SQL("ALTER" if exists else "CREATE"), sql.Identifier(role))
    if password:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(_scram_verifier(conn, role, password)))
    conn.execute(statement)
    verb = "updated" if exists else "created"
    if password:
        return f"{verb}, password set"
    return f"{verb}, password unchanged" if exists else f"{verb}, no password (logs in only under trust authentication)"


def _scram_verifier(conn: psycopg.Connection, role: str, password: str) -> str:
    """What the server stores for the password (libpq's PQencryptPasswordConn,
    as psql's \\password does): the statement carries no plaintext."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()


def _grant(conn: psycopg.Connection, role: Role, schema: str, mart_names: tuple[str, ...]) -> None:
    grantee, namespace = sql.Identifier(role.name), sql.Identifier(schema)
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(namespace, grantee))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(namespace, grantee))
    for privilege, relations in (("SELECT", role.select + (mart_names if role.marts else ())),
                                 ("INSERT", role.insert)):
        if relations:
            conn.execute(sql.SQL("GRANT {} ON {} TO {}").format(
                sql.SQL(privilege), sql.SQL(", ").join(sql.Identifier(schema, r) for r in sorted(set(relations))),
                grantee))


def _grant_audit_views(conn: psycopg.Connection, role: Role, audit_schema: str) -> None:
    grantee, namespace = sql.Identifier(role.name), sql.Identifier(audit_schema)
    conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(namespace, grantee))
    if role.audit_views:
        # the schema holds only dbt's store_failures views
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(namespace, grantee))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(namespace, grantee))
    else:
        conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(namespace, grantee))


# -- connecting as a role ----------------------------------------------------------
def connect_as(settings: Settings, role: str, *, passwords: Mapping[str, str] | None = None,
               autocommit: bool = True) -> psycopg.Connection:
    """A connection to the target as `role` (password from load_passwords() unless given),
    with the search_path engine.connect sets."""
    if role not in ROLE_NAMES:
        raise RolesError(f"{role!r} is not one of {', '.join(ROLE_NAMES)}")
    password = (load_passwords() if passwords is None else passwords).get(role)
    # never the superuser's password (a remote target's conninfo carries one)
    info = {k: v for k, v in engine.conninfo(settings).items() if k != "password"}
    info.update(user=role, **({"password": password} if password else {}))
    conn = psycopg.connect(**info, autocommit=autocommit)
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(settings.schema)))
    if not autocommit:
        conn.commit()  # the SET opened a transaction; start the caller's work clean
    return conn


__all__ = ["CREDENTIALS_FILE_VAR", "ROLES", "ROLE_NAMES", "CredentialsError", "Role", "RolesError", "connect_as",
           "create_roles", "load_passwords", "marts", "read_credentials_file"]
