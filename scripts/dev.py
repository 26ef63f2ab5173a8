#!/usr/bin/env python3
"""Bootstrap and run tradeflow on a machine that has only python3.

    python3 scripts/dev.py demo   # create .venv, install, run the demo
    python3 scripts/dev.py test   # create .venv, install, run the test suite

Installs into ./.venv with uv (itself installed from PyPI into the venv), because
dbt-materialize declares a git-URL extra that pip refuses to resolve.
Re-installs only when pyproject.toml changes. `test` also installs Debian's
prometheus, chromium and postgresql-client packages when their binaries are
missing and we are root (the metrics test scrapes the exporter with Prometheus;
the report test renders the HTML report in headless Chromium; the SQL client
test reads the views with psql through `tradeflow engine url`).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".tradeflow-install-stamp"
# Kept out of pyproject: pip cannot install it, uv can (see engine-notes).
UV_ONLY = ["dbt-materialize>=1.9,<1.10"]


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def ensure_env() -> None:
    if not (BIN / "python").exists():
        run([sys.executable, "-m", "venv", str(VENV)])
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + repr(UV_ONLY).encode()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want:
        return
    if not (BIN / "uv").exists():
        run([str(BIN / "python"), "-m", "pip", "install", "--quiet", "uv"])
    uv = [str(BIN / "uv"), "pip", "install", "--python", str(BIN / "python")]
    run(uv + ["-e", f"{ROOT}[test]", *UV_ONLY])
    STAMP.write_text(want)


def ensure_debian_package(package: str, needed_by: str, binary: str | None = None) -> bool:
    """Installs Debian's package when its binary (default: named as the package)
    is missing and we are root. Never fails the run: without the binary the test
    that needs it fails and says why. True when a fresh install happened."""
    if shutil.which(binary or package):
        return False
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        print(f"{package} not found and no apt-get as root to install it: {needed_by} will fail", file=sys.stderr)
        return False
    print(f"{package} not found: installing Debian's package for {needed_by}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env)
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"apt-get failed ({err}): {needed_by} will fail", file=sys.stderr)
        return False
    return True


def ensure_test_tools() -> None:
    if ensure_debian_package("prometheus", "the metrics scrape test") and shutil.which("service"):
        # Where services start on install, Debian's would now hold port 9090; the test runs its own.
        print("stopping the prometheus service the package may have started", flush=True)
        subprocess.run(["service", "prometheus", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ensure_debian_package("chromium", "the HTML report's browser test")
    ensure_debian_package("postgresql-client", "the psql test of `tradeflow engine url`", binary="psql")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    ensure_env()
    env = dict(os.environ, DBT_SEND_ANONYMOUS_USAGE_STATS="false", DO_NOT_TRACK="1")
    if argv[0] == "demo":
        cmd = [str(BIN / "tradeflow"), "demo", *argv[1:]]
    else:
        ensure_test_tools()
        cmd = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if argv[0] == "test" and code == 5:
        print("pytest collected no tests: treating as a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
