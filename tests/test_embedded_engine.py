"""The embedded engine's lifecycle, on a data dir of its own."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import psycopg
import pytest

from tradeflow.config import Settings
from tradeflow.embedded import EmbeddedEngine


@pytest.fixture
def server():
    data_dir = Path(tempfile.mkdtemp(prefix="tradeflow-engine-test-"))
    engine = EmbeddedEngine(Settings(data_dir=data_dir, embedded_durable=False))
    yield engine
    engine.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def query(info, sql: str):
    with psycopg.connect(info.url(), autocommit=True) as conn:
        return conn.execute(sql).fetchone()[0]


def test_start_is_idempotent_and_listens_on_tcp_and_socket(server):
    info = server.start()
    assert server.start() == info
    assert query(info, "SELECT 1") == 1  # TCP on 127.0.0.1
    with psycopg.connect(**info.conninfo()) as conn:  # unix socket
        assert conn.execute("SELECT current_database()").fetchone()[0] == "tradeflow"
    assert server.status() == info


def test_data_survives_a_restart_on_the_same_port(server):
    info = server.start()
    with psycopg.connect(info.url(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    assert server.stop() is True
    assert server.status() is None
    assert server.stop() is False
    again = server.start()
    assert again.port == info.port
    assert query(again, "SELECT x FROM kept") == 42


def test_recovers_from_a_crash_with_a_stale_pid_file(server):
    info = server.start()
    os.kill(info.pid, signal.SIGKILL)
    pidfile = server.pgdata / "postmaster.pid"
    # the pid file is left behind, naming a pid that is now someone else's
    text = pidfile.read_text().splitlines()
    pidfile.write_text("\n".join([str(os.getpid())] + text[1:]) + "\n")
    assert server.status() is None
    recovered = server.start()
    assert recovered.pid != info.pid
    assert query(recovered, "SELECT 1") == 1
