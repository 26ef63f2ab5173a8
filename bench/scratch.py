"""A throw-away embedded engine for one benchmark run (fsync off, models deployed)."""
from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tradeflow import engine  # noqa: E402
from tradeflow.config import Settings  # noqa: E402
from tradeflow.dbt import deploy  # noqa: E402


@contextmanager
def scratch_engine() -> Iterator[tuple[Settings, psycopg.Connection]]:
    data_dir = Path(tempfile.mkdtemp(prefix="tradeflow-bench-"))
    settings = Settings(data_dir=data_dir, embedded_durable=False)
    server = engine.embedded(settings)
    try:
        server.start()
        deploy(settings)
        with engine.connect(settings) as conn:
            yield settings, conn
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
