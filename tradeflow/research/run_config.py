"""A backtest's configuration: command-line flags and config files (YAML or TOML) share one set of keys.

Resolution, lowest first: DEFAULTS, the config file, the flags given. The resolved configuration is a
plain JSON-able dict (every key, values as text or numbers) that is stored with the run
(backtest_runs.config) and printed in its report, so a run can be repeated from it alone:
`tradeflow backtest --config <the stored config as YAML>`.

Keys (a file may spell them with '-' or '_'):

    from, to                 period (ISO date or datetime; UTC unless it has an offset), required
    symbols, strategies      lists (or comma-separated text); None: every symbol / enabled strategy
    accounts                 "ID[:CAPITAL],..." or a list of such items or of mappings
                             {id, capital, max_leverage, policy}
    max_leverage             every account's unless its mapping says otherwise
    policy                   account policy fields for every account (tradeflow.trading.policy)
    outputs                  full (default) or matches-only; a sweep's runs default to matches-only
                             (trades, matches, metrics and the config that repeats each in full)
    run_id, shadow, tz, report, synthetic, seed, max_signal_age (seconds)
    fill_at ... session_end  the paper broker's fill model (adapters.paper.PaperConfig fields)
    set                      {"<strategy>.<param>": value} strategy parameters (fixed_qty too;
                             "<strategy>.enabled"/".timeframe" set those), {"<dbt var>": value} a
                             top-level dbt var such as pnl_method
    sweep                    {"<key of set or a fill model field>": [values]}: the grid
    rank_by                  the metric that ranks a sweep's runs (higher is better, but
                             max_drawdown where less negative is better)
    walk_forward             "TRAIN:TEST" in trading days
"""
from __future__ import annotations

import itertools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from adapters.paper import DEFAULT_FILL_MODEL, FILL_MODEL_FIELDS, PaperConfig, fill_model
from tradeflow.research.backtest import AccountSpec, BacktestError, BacktestSpec
from tradeflow.research.performance import DEFAULT_TZ, METRIC_FIELDS
from tradeflow.trading import policy

STRATEGY_KEYS = ("enabled", "timeframe", "version")  # "<strategy>.<key>" sets these; any other name is a param

DEFAULTS: dict[str, Any] = {
    "from": None, "to": None, "symbols": None, "strategies": None, "accounts": "BT-1:100000", "max_leverage": "2",
    "policy": {}, "outputs": None, "run_id": None, "shadow": False, "tz": DEFAULT_TZ, "report": None,
    "synthetic": 0, "seed": 7, "max_signal_age": 120,
    **{name: getattr(DEFAULT_FILL_MODEL, name) for name in FILL_MODEL_FIELDS},
    "set": {}, "sweep": {}, "rank_by": "sharpe", "walk_forward": None,
}
KEYS = tuple(DEFAULTS)


class ConfigError(BacktestError):
    pass


@dataclass(frozen=True)
class RunPlan:
    """What a resolved configuration asks for."""
    config: dict[str, Any]          # the resolved configuration (JSON-able): stored with the run
    spec: BacktestSpec
    model_vars: dict[str, Any]      # dbt vars of the backtest schema (strategies with the params set)
    grid: tuple[dict[str, Any], ...]  # one mapping of swept key -> value per run; () without a sweep
    walk_forward: tuple[int, int] | None  # (train, test) trading days

    @property
    def report(self) -> Path | None:
        return Path(self.config["report"]) if self.config["report"] else None


def load_file(path: Path) -> dict[str, Any]:
    """A config file's keys ('-' read as '_'); YAML unless it ends in .toml."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"config: cannot read {path}: {err.strerror}") from None
    try:
        values = tomllib.loads(text) if path.suffix.lower() == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"config: {path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of keys, got {type(values).__name__}")
    return _keys(values, str(path))


def parse_assignments(items: list[str] | None, option: str) -> dict[str, Any]:
    """["a.b=1", "c=x,y"] -> {"a.b": 1, "c": "x,y"}; values read as YAML scalars (10 -> int, true -> bool)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option}: {item!r} is not KEY=VALUE")
        out[key.strip()] = _scalar(value.strip())
    return out


def parse_sweep(items: list[str] | None) -> dict[str, list[Any]]:
    """["sma_crossover.fast=5,10,20"] -> {"sma_crossover.fast": [5, 10, 20]}."""
    return {key: [_scalar(v.strip()) for v in str(values).split(",") if v.strip()]
            for key, values in parse_assignments(items, "--sweep").items()}


def resolve(file_values: Mapping[str, Any] | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULTS < file < flags given (None: not given). Mappings (set, sweep, policy) merge key by key."""
    config = {key: _copy(value) for key, value in DEFAULTS.items()}
    for layer, where in ((file_values or {}, "config"), (_keys(flags, "flags"), "flags")):
        for key, value in layer.items():
            if value is None:
                continue
            if key in ("set", "sweep", "policy"):
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{key}: a mapping, got {value!r} ({where})")
                config[key] = {**config[key], **_flat(value)}
            else:
                config[key] = value
    return _normalised(config)


def plan(config: Mapping[str, Any], project_dir: Path) -> RunPlan:
    """The spec, dbt vars and grid of a resolved configuration; errors name the key."""
    project_vars = yaml.safe_load((project_dir / "dbt_project.yml").read_text())["vars"]
    model_vars = _model_vars(config["set"], project_vars)
    grid = _grid(config["sweep"], project_vars)
    if config["rank_by"] not in METRIC_FIELDS:
        raise ConfigError(f"rank_by: {config['rank_by']!r} is not a metric ({', '.join(METRIC_FIELDS)})")
    walk = _walk_forward(config["walk_forward"])
    if walk and not grid:
        raise ConfigError("walk_forward: needs a sweep (the in-sample winner is chosen among its runs)")
    try:
        paper = fill_model({name: config[name] for name in FILL_MODEL_FIELDS}, PaperConfig())
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    spec = BacktestSpec(
        start=_instant(config["from"], "from"), end=_instant(config["to"], "to"),
        accounts=_accounts(config["accounts"], config["max_leverage"], config["policy"]),
        symbols=tuple(config["symbols"]) if config["symbols"] else None,
        strategies=tuple(config["strategies"]) if config["strategies"] else None,
        paper=paper, outputs=config["outputs"], shadow=bool(config["shadow"]),
        max_signal_age=timedelta(seconds=float(config["max_signal_age"])))
    return RunPlan(dict(config), spec, model_vars, grid, walk)


def apply_point(spec: BacktestSpec, model_vars: dict[str, Any], point: Mapping[str, Any]
                ) -> tuple[BacktestSpec, dict[str, Any]]:
    """The spec and dbt vars of one point of a sweep (swept fill model fields and strategy params set)."""
    fills = {k: v for k, v in point.items() if k in FILL_MODEL_FIELDS}
    if fills:
        spec = replace(spec, paper=fill_model(fills, spec.paper))
    return spec, _model_vars({k: v for k, v in point.items() if k not in FILL_MODEL_FIELDS},
                             {"strategies": model_vars["strategies"]}, base=model_vars)


def as_yaml(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)


# -- helpers -----------------------------------------------------------------------------

def _keys(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in DEFAULTS:
            raise ConfigError(f"{key}: not a backtest key ({where}; keys: {', '.join(KEYS)})")
        out[name] = value
    return out


def _flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (TOML reads a.b = 1 as nested tables)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) or value is None else text


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _listed(value: Any) -> list[str] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else value
    return [str(item).strip() for item in items if str(item).strip()] or None


def _plain(value: Any) -> Any:
    """JSON-able: Decimals and times as text, as a file would write them."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _normalised(config: dict[str, Any]) -> dict[str, Any]:
    config["symbols"], config["strategies"] = _listed(config["symbols"]), _listed(config["strategies"])
    for key in ("from", "to"):
        if config[key] is not None:
            config[key] = _instant(config[key], key).isoformat()
    config["sweep"] = {key: values if isinstance(values, list) else [v.strip() for v in str(values).split(",")]
                       for key, values in config["sweep"].items()}
    if config["outputs"] is None:
        config["outputs"] = "matches-only" if config["sweep"] else "full"
    if config["report"] is not None:
        config["report"] = str(config["report"])
    return json.loads(json.dumps(_plain(config)))


def _instant(value: Any, key: str) -> datetime:
    if value is None:
        raise ConfigError(f"{key}: required (an ISO date or datetime)")
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an ISO date or datetime") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _accounts(value: Any, max_leverage: Any, shared_policy: Mapping[str, Any]) -> tuple[AccountSpec, ...]:
    items = value.split(",") if isinstance(value, str) else list(value or ())
    specs = []
    for item in items:
        if isinstance(item, Mapping):
            account_id, capital = item.get("id"), item.get("capital", 100_000)
            leverage, own_policy = item.get("max_leverage", max_leverage), item.get("policy") or {}
        else:
            account_id, _, capital = str(item).strip().partition(":")
            leverage, own_policy = max_leverage, {}
        if not account_id:
            continue
        try:
            capital, leverage = Decimal(str(capital or 100_000)), Decimal(str(leverage))
        except ArithmeticError:
            raise ConfigError(f"accounts: {item!r}: capital and max_leverage must be numbers") from None
        account_policy = {k: Decimal(str(v)) if isinstance(v, float) else v
                          for k, v in {**shared_policy, **own_policy}.items()}
        try:
            policy.validate(account_policy)
        except policy.PolicyError as err:
            raise ConfigError(f"policy: {err}") from None
        specs.append(AccountSpec(str(account_id), capital, leverage, account_policy))
    return tuple(specs)


def _model_vars(assignments: Mapping[str, Any], project_vars: Mapping[str, Any],
                base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """dbt vars with `set` applied: "<strategy>.<name>" into that strategy's entry, "<var>" a top-level var."""
    out = {k: v for k, v in (base or {}).items() if k != "strategies"}
    strategies = {sid: {**cfg, "params": dict(cfg.get("params") or {})}
                  for sid, cfg in ((base or project_vars)["strategies"]).items()}
    for key, value in assignments.items():
        strategy_id, dot, name = key.partition(".")
        if not dot:
            if key not in project_vars or key in ("strategies", "run_id"):
                raise ConfigError(f"set: {key!r} is neither <strategy>.<param> nor a dbt var of dbt_project.yml")
            out[key] = value
            continue
        if strategy_id not in strategies or not name:
            raise ConfigError(f"set: {key!r}: no strategy {strategy_id!r} (registered: {', '.join(strategies)})")
        if name in STRATEGY_KEYS:
            strategies[strategy_id][name] = value
        else:
            strategies[strategy_id]["params"][name] = value
    out["strategies"] = strategies
    return out


def _grid(sweep: Mapping[str, list[Any]], project_vars: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    for key, values in sweep.items():
        if not values:
            raise ConfigError(f"sweep: {key} has no values")
        if key not in FILL_MODEL_FIELDS:
            _model_vars({key: values[0]}, project_vars)  # names a strategy param or a dbt var
            if "." not in key:
                raise ConfigError(f"sweep: {key!r}: sweeps take strategy params and fill model fields")
    keys = list(sweep)
    if not keys:
        return ()
    return tuple(dict(zip(keys, combo)) for combo in itertools.product(*(sweep[k] for k in keys)))


def _walk_forward(value: Any) -> tuple[int, int] | None:
    if value in (None, ""):
        return None
    train, sep, test = str(value).partition(":")
    try:
        days = int(train), int(test)
    except ValueError:
        days = (0, 0)
    if not sep or min(days) < 1:
        raise ConfigError(f"walk_forward: TRAIN:TEST in trading days (e.g. 10:5), got {value!r}")
    return days
