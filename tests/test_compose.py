"""docker-compose.yml: Grafana's admin login is not exposed with a known password."""
from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


def test_grafana_listens_on_localhost_with_a_password_from_the_environment():
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    password = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    # ${VAR:?message}: compose refuses to start while it is unset; no fallback value.
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?") and ":-" not in password
