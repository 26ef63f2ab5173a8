"""Replay of dead letters after the data (or a reference it failed on) is fixed."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

import pandas as pd
import psycopg

from ingest.dlq import DeadLetter, pending, record_replay
from ingest.execs import ExecIngester
from ingest.instruments import InstrumentIngester
from ingest.prices import PriceIngester
from ingest.validation import Ingester
from tradeflow import engine
from tradeflow.clock import utc_now
from tradeflow.config import Settings

INGESTERS: dict[str, type[Ingester]] = {cls.kind: cls for cls in (PriceIngester, ExecIngester, InstrumentIngester)}


def replay(conn: psycopg.Connection, settings: Settings, *, kind: str, ids: Iterable[str] = (),
           overrides: Mapping[str, str] | None = None) -> dict[str, object]:
    """Re-run each pending record of `kind` through its ingester, one at a time
    so every dead letter gets its own outcome: INSERTED, DUPLICATE or REJECTED
    (it then stays pending, with the new reason in dead_letter_replay.detail).

    Each letter is replayed in its own transaction that first claims it (see
    _claim) and records its outcome before committing, so replays running at
    once never ingest a letter twice: the one that waited finds it resolved
    and skips it."""
    if kind not in INGESTERS:
        raise ValueError(f"kind {kind!r}: no replay handler (known: {', '.join(INGESTERS)})")
    ingester = INGESTERS[kind](conn, settings, source="dlq-replay")
    outcomes: list[tuple[str, str, str]] = []
    for letter in pending(conn, kind=kind, ids=ids):
        with conn.transaction():
            if not _claim(conn, settings, kind, letter.dlq_id):
                continue
            outcome = _replay_one(ingester, letter, overrides or {})
            record_replay(conn, [outcome], replayed_at=utc_now(), batch_rows=settings.ingest_batch_rows)
        outcomes.append(outcome)
    counts = Counter(outcome for _, outcome, _ in outcomes)
    return {"replayed": len(outcomes), **{k.lower(): v for k, v in sorted(counts.items())},
            "still_rejected": [{"dlq_id": d, "reason": detail} for d, o, detail in outcomes if o == "REJECTED"]}


def _claim(conn: psycopg.Connection, settings: Settings, kind: str, dlq_id: str) -> bool:
    """Take the replay lock of `kind` for this transaction, then tell whether
    the letter is still pending. One lock per kind, not per letter: two letters
    can hold the same record (refused under different reasons), and both must
    not insert it. The lock is held for one letter's replay, so replays at once
    interleave letter by letter.

    PostgreSQL (embedded) has transaction-scoped advisory locks; RisingWave and
    Materialize have no locks (nor write transactions): there, run one replay
    at a time."""
    if engine.transactional(settings):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"tradeflow.dlq-replay.{kind}",))
    resolved = conn.execute(
        "SELECT 1 FROM dead_letter_replay WHERE dlq_id = %s AND outcome IN ('INSERTED', 'DUPLICATE') LIMIT 1",
        (dlq_id,)).fetchone()
    return resolved is None


def _replay_one(ingester: Ingester, letter: DeadLetter, overrides: Mapping[str, str]) -> tuple[str, str, str]:
    payload = {**letter.payload, **overrides}
    report = ingester.ingest_frame(pd.DataFrame([payload], dtype=object), dead_letters=False)
    if report.inserted:
        return letter.dlq_id, "INSERTED", ""
    if report.duplicates:
        return letter.dlq_id, "DUPLICATE", "identical record already stored"
    return letter.dlq_id, "REJECTED", report.rejections[0].describe()
