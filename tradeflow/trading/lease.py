"""One decision gate at a time, per schema: a lease the gate holds while it decides.

On PostgreSQL (the embedded engine) the lease is a session-level advisory lock
(pg_try_advisory_lock) taken on the gate's own connection. The server holds it
while that connection lives and drops it when the connection ends, however
the process ends (kill -9 included): no expiry to tune, no stale lease to
clean up, and a gate that lost its connection lost its lease too (it takes it
again when it reconnects, or waits for the gate that took it meanwhile).

RisingWave and Materialize have no advisory locks, and no way to claim a row
atomically (no read-write transactions on RisingWave; no keys, upserts or
mixed read-write transactions on Materialize), so a leases table could not
tell two gates starting together apart. There the lease is not enforced:
hold() logs a warning and the rule stays operational (run one gate per
deployment, docs/trading-loop.md).
"""
from __future__ import annotations

import hashlib
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

import psycopg

from tradeflow import engine
from tradeflow.config import Settings

log = logging.getLogger("tradeflow.lease")


class LeaseHeld(RuntimeError):
    """Another process holds the lease."""


def lease_key(schema: str, name: str) -> int:
    """The advisory lock's bigint key for a lease name in a schema (a backtest's gate has its own)."""
    return int.from_bytes(hashlib.sha256(f"tradeflow:{schema}:{name}".encode()).digest()[:8], "big", signed=True)


def holder(conn: psycopg.Connection, key: int) -> str:
    """Who holds the advisory lock `key`: 'pid N (application)', or 'unknown'."""
    row = conn.execute(
        "SELECT l.pid, coalesce(nullif(a.application_name, ''), a.client_addr::text, 'local')"
        " FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        # a bigint key is split into classid (high 32 bits) and objid (low 32 bits)
        " AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
        (key,)).fetchone()
    return f"pid {row[0]} ({row[1]})" if row else "unknown"


@contextmanager
def hold(conn: psycopg.Connection, settings: Settings, name: str, *, wait: bool = False, poll: float = 1.0,
         stop: threading.Event | None = None) -> Iterator[bool]:
    """Hold the lease `name` on conn for the block; yields True once held.

    Held elsewhere: raises LeaseHeld naming the holder, or with wait=True
    polls every `poll` s until it is free; yields False if `stop` is set
    meanwhile (the caller then does nothing)."""
    if not engine.transactional(settings):
        log.warning("%s lease not enforced on %s (no advisory locks): run only one", name, settings.target)
        yield True
        return
    key = lease_key(settings.schema, name)
    stop = stop or threading.Event()
    announced = False
    while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
        message = (f"another {name} holds the {name} lease on schema {settings.schema!r}: {holder(conn, key)}")
        if not wait:
            raise LeaseHeld(f"{message}; run one {name} per deployment (or wait for the lease)")
        if not announced:
            log.warning("%s; waiting for it", message)
            announced = True
        if stop.wait(poll):
            yield False
            return
    try:
        yield True
    finally:
        if not conn.closed:
            try:
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except psycopg.OperationalError:
                pass  # the connection is gone, and the lock with it
