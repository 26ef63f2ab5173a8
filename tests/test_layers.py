"""Imports run one way: cli -> research -> trading -> adapters and ingest -> ops -> core.

Every import in the packages, including those inside functions, is checked:
a lower layer that reaches up fails here with the module and the line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tradeflow", "ingest", "adapters")
# higher rank may import lower or equal rank, never the reverse
RANKS = {"core": 0, "ops": 1, "io": 2, "trading": 3, "research": 4, "cli": 5}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] in {"ingest", "adapters"}:
        return "io"
    if len(parts) > 1 and parts[1] in {"ops", "trading", "research", "cli"}:
        return parts[1]
    return "core"


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def imported(module: str, path: Path) -> list[tuple[str, int]]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from tradeflow import engine` imports the submodule tradeflow.engine
            names += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return [(name, line) for name, line in names if name.split(".")[0] in PACKAGES]


def test_every_module_has_a_layer_and_the_layers_exist() -> None:
    found = {layer(module) for module, _ in modules()}
    assert found == set(RANKS), found


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_run_down_the_layers(module: str, path: Path) -> None:
    own = RANKS[layer(module)]
    upward = [f"line {line}: {name} ({layer(name)})" for name, line in imported(module, path)
              if RANKS[layer(name)] > own]
    assert not upward, f"{module} ({layer(module)}) imports a higher layer: {upward}"
