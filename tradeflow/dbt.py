"""Running dbt against the configured target (deploy, compile)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tradeflow.config import Settings
from tradeflow.engine import dbt_env


class DbtError(RuntimeError):
    pass


def run_dbt(settings: Settings, args: list[str], *, vars: dict[str, Any] | None = None,
            target_path: Path | None = None, quiet: bool = True, extra_env: dict[str, str] | None = None) -> str:
    """Run one dbt command in a subprocess (dbt keeps global state; a fresh
    process per invocation keeps our own process clean). Returns its output."""
    cmd = [sys.executable, "-m", "dbt.cli.main", *args,
           "--project-dir", str(settings.project_dir), "--profiles-dir", str(settings.project_dir)]
    if vars:
        cmd += ["--vars", json.dumps(vars)]
    if target_path is not None:
        cmd += ["--target-path", str(target_path)]
    env = {**os.environ, **dbt_env(settings), **(extra_env or {})}
    env.setdefault("DBT_LOG_PATH", str(settings.data_dir / "dbt-logs"))
    proc = subprocess.run(cmd, cwd=settings.project_dir, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise DbtError(f"dbt {' '.join(args)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    if not quiet:
        print(proc.stdout)
    return proc.stdout


def deploy(settings: Settings, *, vars: dict[str, Any] | None = None) -> str:
    """Create raw tables and UDFs (on-run-start hooks) and build every model."""
    return run_dbt(settings, ["run"], vars=vars)


def ensure_raw_tables(settings: Settings) -> None:
    run_dbt(settings, ["run-operation", "create_raw_tables"])
