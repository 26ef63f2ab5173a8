"""psql, BI tools and Grafana read the views as they are: Debian's psql client
(installed by scripts/dev.py test) against the URL `tradeflow engine url` prints,
and against plain URLs that rely on the database and role defaults."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from tradeflow import engine
from tradeflow.cli import app

runner = CliRunner()
PSQL = shutil.which("psql")
pytestmark = pytest.mark.skipif(PSQL is None, reason="psql missing: run the tests with `python3 scripts/dev.py test`,"
                                " which installs Debian's postgresql-client")


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def psql(url: str, query: str) -> str:
    proc = subprocess.run([PSQL, url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def account(embedded_settings):
    cli("accounts", "add", "PSQL-1", "--capital", "25000")
    return "PSQL-1"


def test_psql_reads_portfolio_state_through_engine_url(account):
    url = cli("engine", "url").strip()
    assert "search_path" in url
    # money at its documented scale
    assert psql(url, "SELECT account_id, cash FROM portfolio_state") == "PSQL-1|25000.000000"


def test_without_options_the_database_default_finds_the_views(account, embedded_settings):
    with engine.connect(embedded_settings) as conn:
        engine.publish_search_path(conn, embedded_settings)
    plain = engine.embedded(embedded_settings).status().url()
    assert psql(plain, "SELECT count(*) FROM portfolio_state") == "1"
    assert "portfolio_state" in psql(plain, r"SELECT table_name FROM information_schema.views"
                                            r" WHERE table_schema = current_schema()")


def test_roles_log_in_with_the_schema_on_their_search_path(account, embedded_settings):
    cli("engine", "roles")
    reader = engine.embedded(embedded_settings).status().url().replace("postgres@", "tradeflow_reader@")
    # the role default wins over the database's: clear that to see the role's alone
    with engine.connect(embedded_settings) as conn:
        conn.execute(f'ALTER DATABASE "{embedded_settings.database}" RESET search_path')
    try:
        assert psql(reader, "SELECT account_id FROM portfolio_state") == "PSQL-1"
    finally:
        with engine.connect(embedded_settings) as conn:
            engine.publish_search_path(conn, embedded_settings)


def test_engine_env_exports_the_search_path(embedded_settings):
    exports = cli("engine", "env")
    assert f"PGOPTIONS='-c search_path={embedded_settings.schema},public'" in exports
