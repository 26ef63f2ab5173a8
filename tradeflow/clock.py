"""The wall clock, in UTC: one definition for every process that stamps time."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
