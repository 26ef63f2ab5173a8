"""Fuzz of both ingesters (hypothesis): whatever a batch holds, every record
read is stored, counted as a duplicate or dead-lettered, and the tables agree
with the report. A modest example count keeps the suite fast; scale is in
bench/bench_ingest_fuzz.py."""
from __future__ import annotations

import random
from datetime import datetime, timezone
from typing import Callable

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ingest.execs import ExecIngester
from ingest.feeds import ExecFileFeed
from ingest.prices import PriceIngester
from ingest.validation import IngestReport
from ingest_fuzz import (ACCOUNTS, BAR_KINDS, FILL_KINDS, NASTY, NASTY_NUMBER, NASTY_TEXT, NASTY_TS, plausible_bar,
                         plausible_fill, write_jsonl)
from tradeflow.trading import accounts

NOW = datetime(2024, 3, 1, 21, 0, tzinfo=timezone.utc)
TABLES = {"price": "price_1m_history", "exec": "exec_report_history"}

any_value = st.one_of(
    st.sampled_from(NASTY_TEXT + NASTY_NUMBER + NASTY_TS),
    st.text(max_size=12), st.text(st.characters(codec="utf-16", categories=["Cs", "Cc", "Lo"]), max_size=6),
    st.floats(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80), st.none(), st.booleans(),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)


def spoiled(kind: str):
    kinds = BAR_KINDS if kind == "price" else FILL_KINDS
    plausible = plausible_bar if kind == "price" else plausible_fill
    changes = st.dictionaries(st.sampled_from(sorted(kinds)),
                              st.one_of(*(st.sampled_from(NASTY[k]) for k in NASTY), any_value), max_size=3)
    dropped = st.sets(st.sampled_from(sorted(kinds)), max_size=1)
    return st.builds(lambda rng, change, drop: {k: v for k, v in {**plausible(rng), **change}.items() if k not in drop},
                     st.randoms(use_true_random=False), changes, dropped)


def counts(conn, kind: str) -> tuple[int, int]:
    stored = conn.execute(f"SELECT count(*) FROM {TABLES[kind]}").fetchone()[0]
    letters = conn.execute("SELECT count(*) FROM dead_letter WHERE kind = %s", (kind,)).fetchone()[0]
    return stored, letters


@pytest.fixture
def known_accounts(conn):
    for account_id in ACCOUNTS:
        accounts.add(conn, account_id, capital="100000")


def check(conn, kind: str, ingest: Callable[[], IngestReport]) -> IngestReport:
    """Run an ingest; the report must balance and match what the tables gained."""
    stored, letters = counts(conn, kind)
    report = ingest()
    after_stored, after_letters = counts(conn, kind)
    assert report.read == report.inserted + report.duplicates + report.rejected
    assert (after_stored - stored, after_letters - letters) == (report.inserted, report.rejected)
    return report


@pytest.mark.parametrize("kind", ["price", "exec"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_record_is_stored_duplicate_or_dead_lettered(conn, embedded_settings, known_accounts, kind, data):
    batch = data.draw(st.lists(spoiled(kind), min_size=1, max_size=25))
    cls = PriceIngester if kind == "price" else ExecIngester
    ingester = cls(conn, embedded_settings, source="fuzz", clock=lambda: NOW)
    check(conn, kind, lambda: ingester.ingest([pd.DataFrame(batch, dtype=object)]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(spoiled("exec"), min_size=1, max_size=25), seed=st.integers(0, 2 ** 32))
def test_json_lines_files_lose_nothing(conn, embedded_settings, known_accounts, tmp_path_factory, batch, seed):
    path = tmp_path_factory.mktemp("fuzz") / "fills.jsonl"
    written = write_jsonl(path, batch, random.Random(seed))
    ingester = ExecIngester(conn, embedded_settings, source="fuzz", clock=lambda: NOW)
    report = check(conn, "exec", lambda: ingester.ingest(ExecFileFeed(path, chunk_rows=7).batches()))
    assert report.read == written
