"""Replay of dead letters after the data (or a reference it failed on) is fixed."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Mapping

import pandas as pd
import psycopg

from ingest.dlq import pending, record_replay
from ingest.execs import ExecIngester
from ingest.prices import PriceIngester
from ingest.validation import Ingester
from tradeflow.clock import utc_now
from tradeflow.config import Settings

INGESTERS: dict[str, type[Ingester]] = {cls.kind: cls for cls in (PriceIngester, ExecIngester)}


def replay(conn: psycopg.Connection, settings: Settings, *, kind: str, ids: Iterable[str] = (),
           overrides: Mapping[str, str] | None = None) -> dict[str, object]:
    """Re-run each pending record of `kind` through its ingester, one at a time
    so every dead letter gets its own outcome: INSERTED, DUPLICATE or REJECTED
    (it then stays pending, with the new reason in dead_letter_replay.detail)."""
    if kind not in INGESTERS:
        raise ValueError(f"kind {kind!r}: no replay handler (known: {', '.join(INGESTERS)})")
    letters = pending(conn, kind=kind, ids=ids)
    ingester = INGESTERS[kind](conn, settings, source="dlq-replay")
    outcomes: list[tuple[str, str, str]] = []
    for letter in letters:
        payload = {**letter.payload, **(overrides or {})}
        report = ingester.ingest_frame(pd.DataFrame([payload], dtype=object), dead_letters=False)
        if report.inserted:
            outcomes.append((letter.dlq_id, "INSERTED", ""))
        elif report.duplicates:
            outcomes.append((letter.dlq_id, "DUPLICATE", "identical record already stored"))
        else:
            outcomes.append((letter.dlq_id, "REJECTED", report.rejections[0].describe()))
    record_replay(conn, outcomes, replayed_at=utc_now(), batch_rows=settings.ingest_batch_rows)
    counts = Counter(outcome for _, outcome, _ in outcomes)
    return {"replayed": len(outcomes), **{k.lower(): v for k, v in sorted(counts.items())},
            "still_rejected": [{"dlq_id": d, "reason": detail} for d, o, detail in outcomes if o == "REJECTED"]}
