"""A backtest's configuration: flags, YAML and TOML files with the same keys, defaults, errors naming the key."""
from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from adapters.paper import DEFAULT_FILL_MODEL, fill_model
from tradeflow.config import PROJECT_DIR
from tradeflow.research import run_config
from tradeflow.research.run_config import ConfigError

YAML = """
from: 2024-01-02
to: "2024-01-10T00:00:00+00:00"
symbols: [AAA, BBB]
accounts:
  - {id: ACC1, capital: 50000, policy: {max_open_symbols: 4}}
  - ACC2:20000
fill-at: signal_close
fee_bps: 1
session_end: none
set:
  sma_crossover.fast: 10
  sma_crossover:
    fixed_qty: 100
  pnl_method: average_cost
policy: {allow_scale_in: false}
"""
TOML = """
from = "2024-01-02"
to = "2024-01-10T00:00:00+00:00"
symbols = ["AAA", "BBB"]
accounts = [{id = "ACC1", capital = 50000, policy = {max_open_symbols = 4}}, "ACC2:20000"]
fill-at = "signal_close"
fee_bps = 1
session_end = "none"
policy = {allow_scale_in = false}

[set]
sma_crossover.fast = 10
sma_crossover.fixed_qty = 100
pnl_method = "average_cost"
"""


def plan_of(file_values=None, **flags):
    return run_config.plan(run_config.resolve(file_values, flags), PROJECT_DIR)


def test_yaml_and_toml_files_with_the_same_keys_give_the_same_run(tmp_path):
    (tmp_path / "run.yaml").write_text(YAML)
    (tmp_path / "run.toml").write_text(TOML)
    from_yaml = plan_of(run_config.load_file(tmp_path / "run.yaml"))
    from_toml = plan_of(run_config.load_file(tmp_path / "run.toml"))
    assert from_yaml.config == from_toml.config
    assert from_yaml.spec == from_toml.spec and from_yaml.model_vars == from_toml.model_vars
    spec = from_yaml.spec
    assert spec.start == datetime(2024, 1, 2, tzinfo=UTC) and spec.symbols == ("AAA", "BBB")
    assert [(a.account_id, a.capital, a.policy) for a in spec.accounts] == [
        ("ACC1", Decimal(50000), {"allow_scale_in": False, "max_open_symbols": 4}),
        ("ACC2", Decimal(20000), {"allow_scale_in": False})]
    assert spec.paper == fill_model({"fill_at": "signal_close", "fee_bps": "1", "session_end": "none"})
    assert spec.paper.session_end is None and spec.paper.slippage_bps == DEFAULT_FILL_MODEL.slippage_bps
    params = from_yaml.model_vars["strategies"]["sma_crossover"]["params"]
    assert params == {"fast": 10, "slow": 21, "fixed_qty": 100}
    assert from_yaml.model_vars["pnl_method"] == "average_cost"


def test_flags_win_over_the_file_and_the_file_over_the_defaults(tmp_path):
    (tmp_path / "run.yaml").write_text(YAML)
    plan = plan_of(run_config.load_file(tmp_path / "run.yaml"), fee_bps="3", set={"sma_crossover.slow": 50})
    assert plan.spec.paper.fee_bps == Decimal(3)  # flag over file
    assert plan.spec.paper.fill_at == "signal_close"  # file over default
    assert plan.spec.paper.min_fee == DEFAULT_FILL_MODEL.min_fee  # default
    assert plan.model_vars["strategies"]["sma_crossover"]["params"] == {"fast": 10, "slow": 50, "fixed_qty": 100}
    assert plan.spec.max_signal_age == timedelta(minutes=2) and plan.config["tz"] == "Europe/Oslo"


def test_defaults_are_the_paper_adapters_fill_model():
    plan = plan_of(**{"from": "2024-01-02", "to": "2024-01-03"})
    assert plan.spec.paper == DEFAULT_FILL_MODEL
    assert plan.config["session_end"] == "calendar" and plan.config["slippage_bps"] == "2"
    assert plan.grid == () and plan.walk_forward is None and plan.spec.outputs == "full"
    swept = plan_of(**{"from": "2024-01-02", "to": "2024-01-03"}, sweep={"sma_crossover.fast": [5, 10]})
    assert swept.spec.outputs == "matches-only"  # a sweep's runs keep trades, matches, metrics and their config


def test_assignments_and_sweeps_parse_their_values():
    assert run_config.parse_assignments(["sma_crossover.fast=10", "allow_scale_in=false", "x=1.5"], "--set") == {
        "sma_crossover.fast": 10, "allow_scale_in": False, "x": 1.5}
    assert run_config.parse_sweep(["sma_crossover.fast=5,10", "slippage_bps=0,2"]) == {
        "sma_crossover.fast": [5, 10], "slippage_bps": [0, 2]}
    plan = plan_of(**{"from": "2024-01-02", "to": "2024-01-03"},
                   sweep={"sma_crossover.fast": [5, 10], "slippage_bps": [0, 2]}, walk_forward="10:5")
    assert plan.grid == ({"sma_crossover.fast": 5, "slippage_bps": 0}, {"sma_crossover.fast": 5, "slippage_bps": 2},
                         {"sma_crossover.fast": 10, "slippage_bps": 0}, {"sma_crossover.fast": 10, "slippage_bps": 2})
    assert plan.walk_forward == (10, 5)


@pytest.mark.parametrize(("flags", "key"), [
    ({}, "from"),
    ({"to": "2024-01-03"}, "from"),
    ({"from": "yesterday"}, "from"),
    ({"fee_bps": "lots"}, "fee_bps"),
    ({"fill_at": "midday"}, "fill_at"),
    ({"session_end": "25:00"}, "session_end"),
    ({"max_participation": "2"}, "max_participation"),
    ({"set": {"sma_crosover.fast": 5}}, "sma_crosover"),
    ({"set": {"no_such_var": 5}}, "no_such_var"),
    ({"policy": {"max_open_symbols": -1}}, "max_open_symbols"),
    ({"policy": {"colour": "red"}}, "colour"),
    ({"accounts": "A:lots"}, "accounts"),
    ({"rank_by": "vibes"}, "rank_by"),
    ({"walk_forward": "10"}, "walk_forward"),
    ({"walk_forward": "10:5"}, "walk_forward"),  # needs a sweep
    ({"sweep": {"sma_crossover.fast": []}}, "sweep"),
    ({"sweep": {"pnl_method": ["fifo"]}}, "sweep"),
    ({"outputs": "everything"}, "outputs"),
    ({"colour": "red"}, "colour"),
])
def test_bad_configuration_names_the_key(flags, key):
    flags = {"from": "2024-01-02", "to": "2024-01-03", **flags} if key != "from" else flags
    with pytest.raises(run_config.BacktestError, match=key):
        plan_of(**flags)


@pytest.mark.parametrize(("text", "suffix", "message"), [
    ("from: [", ".yaml", "not valid YAML"),
    ("from = ", ".toml", "not valid TOML"),
    ("- a\n- b\n", ".yaml", "mapping"),
    ("colour: red\n", ".yaml", "colour"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, text, suffix, message):
    path = tmp_path / f"run{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        run_config.load_file(path)


def test_the_resolved_config_is_plain_json_and_repeats_the_run(tmp_path):
    plan = plan_of(**{"from": "2024-01-02", "to": "2024-01-03"}, session_end=time(20, 0), fee_bps=Decimal("1.5"))
    (tmp_path / "again.yaml").write_text(run_config.as_yaml(plan.config))
    again = plan_of(run_config.load_file(tmp_path / "again.yaml"))
    assert again.config == plan.config and again.spec == plan.spec
