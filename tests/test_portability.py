"""Portable SQL rules (tradeflow.portability) and the compiled project against them."""
from __future__ import annotations

import re

from concurrent.futures import ThreadPoolExecutor

import pytest

from tradeflow.portability import (COST_RULES, DIALECTS, PROJECT_DIR, ModelNode, compile_inline, compile_models,
                                   cost_sql, lint_models, lint_sql, model_graph, streaming_costs)

TARGETS = tuple(DIALECTS)
STREAMING = ("risingwave", "materialize")
W = "partition by a order by b rows between 3 preceding and current row"

# (rule, bad SQL, corrected SQL, targets)
CASES = [
    ("numeric-precision", "select x::numeric(10, 2) as v from t", "select x::numeric as v from t", TARGETS),
    ("numeric-precision", "select cast(x as decimal(5)) from t", "select cast(x as decimal) from t", TARGETS),
    ("numeric-precision", "create table t (a numeric(18, 6), b text)", "create table t (a numeric, b text)", TARGETS),
    ("varchar-length", "select cast(y as varchar(10)) from t", "select cast(y as varchar) from t", TARGETS),
    ("varchar-length", "select y::character varying(4) from t", "select y::text from t", TARGETS),
    ("varchar-length", "select y::char(3) from t", "select y::text from t", TARGETS),
    ("varchar-length", "select y::char from t", "select y::varchar from t", TARGETS),
    ("varchar-length", "create table t (c character(2))", "create table t (c text)", TARGETS),
    ("window-partition", "select sum(x) over (order by b rows between 3 preceding and current row) from t",
     f"select sum(x) over ({W}) from t", TARGETS),
    ("window-partition", "select row_number() over (order by b) from t",
     "select row_number() over (partition by a order by b) from t", TARGETS),
    ("window-frame", "select sum(x) over (partition by a order by b) from t", f"select sum(x) over ({W}) from t", TARGETS),
    ("window-frame", "select avg(x) over (partition by a order by b range between 3 preceding and current row) from t",
     f"select avg(x) over ({W}) from t", TARGETS),
    ("window-frame", "select max(x) over w from t window w as (partition by a order by b)",
     f"select max(x) over w from t window w as ({W})", TARGETS),
    ("window-frame", "select stddev_samp(x) over (partition by a) from t",
     "select stddev_samp(x) over (partition by a rows between unbounded preceding and unbounded following) from t",
     TARGETS),
    ("window-frame", "select first_value(x) over (partition by a order by b) from t",
     f"select first_value(x) over ({W}) from t", TARGETS),
    ("window-frame", "select s.tf_smooth(x::float8, 0.1, 14) over (partition by a order by b) from t",
     f"select s.tf_smooth(x::float8, 0.1, 14) over ({W}) from t", TARGETS),
    ("window-frame", "select tf_smooth(x, 0.1, 14) over (partition by a order by b range unbounded preceding) from t",
     "select tf_smooth(x, 0.1, 14) over (partition by a order by b rows unbounded preceding) from t", TARGETS),
    ("window-frame", "select rank() over (partition by a) from t",
     "select rank() over (partition by a order by b) from t", TARGETS),
    ("lag-default", "select lag(x, 1, 0) over (partition by a order by b) from t",
     "select coalesce(lag(x, 1) over (partition by a order by b), 0) from t", TARGETS),
    ("lag-default", "select lead(x, n) over (partition by a order by b) from t",
     "select lead(x, 3) over (partition by a order by b) from t", TARGETS),
    ("lag-default", "select lag(x) ignore nulls over (partition by a order by b) from t",
     "select lag(x) over (partition by a order by b) from t", TARGETS),
    ("window-filter", f"select count(*) filter (where x > 0) over ({W}) from t",
     f"select sum(case when x > 0 then 1 else 0 end) over ({W}) from t", TARGETS),
    ("banned-window-fn", "select ntile(4) over (partition by a order by b) from t",
     "select row_number() over (partition by a order by b) from t", TARGETS),
    ("banned-window-fn", "select percent_rank() over (partition by a order by b) from t",
     "select rank() over (partition by a order by b) from t", TARGETS),
    ("banned-window-fn", f"select nth_value(x, 2) over ({W}) from t", f"select first_value(x) over ({W}) from t",
     TARGETS),
    ("banned-window-fn", "select cume_dist() over (partition by a order by b) from t",
     "select dense_rank() over (partition by a order by b) from t", TARGETS),
    ("recursive-cte", "with recursive r as (select 1 as n union all select n + 1 from r where n < 3) select * from r",
     "with r as (select 1 as n union all select 2) select * from r", TARGETS),
    ("join-equality", "select * from a join b on a.t < b.t", "select * from a join b on a.k = b.k and a.t < b.t",
     TARGETS),
    ("join-equality", "select * from a, b", "select * from a join b on b.k = a.k", TARGETS),
    ("join-equality", "select * from a cross join b", "select * from a inner join b on a.k = b.k", TARGETS),
    ("join-equality", "select * from a left join b on a.k = 1", "select * from a left join b using (k)", TARGETS),
    ("join-equality", "select * from a join b on a.k = b.k or a.j = b.j",
     "select * from a join b on (a.k = b.k) and (a.j = b.j or a.i = b.i)", TARGETS),
    ("join-equality", "select * from a join b on a.k = a.j", "select * from a join b on lower(a.k) = b.k", TARGETS),
    ("join-equality", "select * from a join b on a.k = b.k join c on a.t < c.t",
     "select * from a join b on a.k = b.k join c on c.k = b.k", TARGETS),
    ("join-equality", "select * from a natural join b", "select * from a join b using (k)", TARGETS),
    ("join-equality", "select * from a join lateral (select b.v from b where b.k = a.k) c on true",
     "select * from a join (select b.k, b.v from b) c on c.k = a.k", TARGETS),
    ("join-equality", "select * from a join lateral (select b.k, b.v from b where b.k = a.k) c on c.k = a.k",
     "select * from a join (select b.k, b.v from b) c on c.k = a.k", STREAMING),
    ("now-in-materialize", "select * from t where ts > now() - interval '1 hour'",
     "select * from t where mz_now() <= ts + interval '1 hour'", ("materialize",)),
    ("now-in-materialize", "select current_timestamp as at from t", "select ts as at from t", ("materialize",)),
    ("now-in-materialize", "select localtimestamp from t", "select ts from t", ("materialize",)),
    ("stddev-variance", "select stddev(x) from t", "select stddev_samp(x) from t", TARGETS),
    ("stddev-variance", "select variance(x) from t", "select var_samp(x) from t", TARGETS),
    ("stddev-variance", f"select stddev(x) over ({W}) from t", f"select stddev_pop(x) over ({W}) from t", TARGETS),
    ("parse", "select from where (", "select 1", TARGETS),
]


def _params():
    for i, (rule, bad, good, targets) in enumerate(CASES):
        for target in targets:
            yield pytest.param(rule, bad, good, target, id=f"{rule}-{i}-{target}")


def _fmt(violations) -> str:
    return "\n".join(f"  {v}" for v in violations)


@pytest.mark.parametrize("rule,bad,good,target", list(_params()))
def test_rule(rule, bad, good, target):
    found = lint_sql(bad, target)
    assert found, f"{rule} not detected in: {bad}"
    assert {v.rule for v in found} == {rule}, f"expected only {rule}:\n{_fmt(found)}"
    assert lint_sql(good, target) == [], f"corrected SQL flagged:\n{_fmt(lint_sql(good, target))}"


@pytest.mark.parametrize("sql,target", [
    # rules that depend on the target
    ("select * from a join lateral (select b.k, b.v from b where b.k = a.k) c on c.k = a.k", "embedded"),
    ("select * from t where ts > now() - interval '1 hour'", "risingwave"),
    ("select * from t where ts > now() - interval '1 hour'", "embedded"),
])
def test_target_specific_rule_not_applied(sql, target):
    assert lint_sql(sql, target) == []


def test_violation_is_frozen():
    v = lint_sql("select stddev(x) from t", "embedded")[0]
    with pytest.raises(AttributeError):
        v.rule = "other"  # type: ignore[misc]


def test_risingwave_append_only_ddl_is_checked():
    # sqlglot's risingwave dialect cannot parse APPEND ONLY: the option is
    # stripped and the table re-parsed, so its column types are still checked.
    assert lint_sql("create table if not exists s.t (a numeric, b text) append only", "risingwave") == []
    found = lint_sql("create table s.t (a numeric(10, 2), b varchar(3)) append only", "risingwave")
    assert {v.rule for v in found} == {"numeric-precision", "varchar-length"}


def test_routine_signatures_are_checked_not_bodies():
    # CREATE FUNCTION / AGGREGATE are opaque Commands to sqlglot: the type
    # rules apply to the signature text only.
    ok = "create function f(x numeric) returns text language sql as $fn$ select 'char(3)'::varchar(3) $fn$"
    assert lint_sql(ok, "embedded") == []
    bad = "create function f(x numeric(10, 2)) returns char(1) language sql as $fn$ select 'a' $fn$"
    assert {v.rule for v in lint_sql(bad, "embedded")} == {"numeric-precision", "varchar-length"}


@pytest.mark.parametrize("sql,target", [
    # Accepted by the engines, not parseable by sqlglot 30: reported as `parse`
    ("with mutually recursive r (n int) as (select 1 union select n + 1 from r where n < 3) select * from r",
     "materialize"),
    ("select window_start, count(*) from tumble(t, ts, interval '1 minute') group by window_start "
     "emit on window close", "risingwave"),
    ("create subscription s from mv with (retention = '1D')", "risingwave"),
])
def test_unparsed_sql_is_reported(sql, target):
    assert [v.rule for v in lint_sql(sql, target)] == ["parse"]


# --------------------------------------------------------------------------- compiled project

MODEL_NAMES = sorted(p.stem for p in (PROJECT_DIR / "models").rglob("*.sql"))
INLINE = {"raw_tables": "{{ create_raw_tables() }}", "udfs": "{{ create_udfs() }}"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every target compiled offline, in parallel, each into its own target path."""
    paths = {t: tmp_path_factory.mktemp(f"target-{t}") for t in TARGETS}
    with ThreadPoolExecutor(max_workers=len(TARGETS) * (1 + len(INLINE))) as pool:
        models = {t: pool.submit(compile_models, t, paths[t]) for t in TARGETS}
        inline = {(t, k): pool.submit(compile_inline, t, tmp_path_factory.mktemp(f"inline-{t}-{k}"), jinja)
                  for t in TARGETS for k, jinja in INLINE.items()}
        return {"models": {t: f.result() for t, f in models.items()},
                "graph": {t: model_graph(paths[t]) for t in TARGETS},
                "inline": {key: f.result() for key, f in inline.items()}}


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_every_model_compiles(compiled, target):
    models = compiled["models"][target]
    assert sorted(models) == MODEL_NAMES
    assert all(sql.strip() for sql in models.values())


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_models_follow_portable_rules(compiled, target):
    found = lint_models(compiled["models"][target], target)
    report = "\n".join(f"{model}:\n{_fmt(vs)}" for model, vs in found.items())
    assert not found, f"portable SQL rule violations on {target}:\n{report}"


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_raw_tables_and_udfs_follow_portable_rules(compiled, target):
    ddl = compiled["inline"][(target, "raw_tables")]
    udfs = compiled["inline"][(target, "udfs")]
    declared = re.findall(r"^\s+'(\w+)': \[", (PROJECT_DIR / "macros" / "raw_tables.sql").read_text(), re.M)
    assert ddl.lower().count("create table") == len(declared) > 0
    found = {"create_raw_tables": lint_sql(ddl, target), "create_udfs": lint_sql(udfs, target)}
    report = "\n".join(f"{name}:\n{_fmt(vs)}" for name, vs in found.items() if vs)
    assert not report, f"portable SQL rule violations on {target}:\n{report}"
    # the DDL is really checked (not skipped as unparsed text)
    mutated = lint_sql(ddl.replace("NUMERIC", "NUMERIC(18, 6)").replace("TEXT", "VARCHAR(64)"), target)
    assert {v.rule for v in mutated} == {"numeric-precision", "varchar-length"}


# --------------------------------------------------------------------------- streaming cost

LAGS = ", ".join(f"lag(x, {j}) over (partition by a order by b)" for j in range(1, 10))
# (rule, costly SQL, bounded rewrite, targets)
COST_CASES = [
    ("lag-chain", f"select {LAGS} from t",
     "select b.x, p.x from t b join t p on p.a = b.a and p.seq = b.seq - 9", STREAMING),
    ("whole-partition-frame",
     "select max(x) over (partition by a order by b rows between unbounded preceding and unbounded following) from t",
     "select max(x) over (partition by a rows between unbounded preceding and unbounded following) from t", STREAMING),
    ("row-number-filter",
     "select * from (select x, row_number() over (partition by a order by b desc) as rn from t) s where rn <= 3",
     "select top.* from (select distinct a from t) k inner join lateral "
     "(select t.a, t.x from t where t.a = k.a order by t.b desc limit 3) top on top.a = k.a", ("materialize",)),
    ("udaf-window", "select tf_smooth(x, 0.1, 14) over (partition by a order by b rows between 9 preceding and current row) from t",
     "select avg(x) over (partition by a order by b rows between 9 preceding and current row) from t", STREAMING),
]
SCRIPT_UDAF = "create aggregate tf_smooth(float8, float8, int) returns float8 language javascript as $fn$ $fn$"


@pytest.mark.parametrize("rule,costly,bounded,target",
                         [pytest.param(*c[:3], t, id=f"{c[0]}-{t}") for c in COST_CASES for t in c[3]])
def test_cost_rule(rule, costly, bounded, target):
    aggregates = {"tf_smooth"}
    assert [v.rule for v in cost_sql(costly, target, aggregates)] == [rule]
    assert cost_sql(bounded, target, aggregates) == []


def test_every_cost_rule_names_its_source():
    assert set(COST_RULES) == {c[0] for c in COST_CASES} | {"staging-inlined"}
    assert all(rule.source and rule.why for rule in COST_RULES.values())


def test_row_number_filter_is_a_materialize_rule():
    # RisingWave plans row_number() <= k as a GroupTopN
    assert cost_sql(COST_CASES[2][1], "risingwave") == []


def test_distinct_on_view_read_by_several_maintained_views_is_flagged():
    models = {"stg": "select distinct on (k) k, v from raw order by k, ts desc",
              "a": "select * from stg", "b": "select * from stg"}
    graph = {"stg": ModelNode("view", ()), "a": ModelNode("materialized_view", ("stg",)),
             "b": ModelNode("materialized_view", ("stg",))}
    found = streaming_costs(models, graph, "risingwave")
    assert [v.rule for v in found["stg"]] == ["staging-inlined"]
    graph["stg"] = ModelNode("materialized_view", ())
    assert streaming_costs(models, graph, "risingwave") == {}


def test_script_aggregates_are_read_from_the_udf_script():
    found = streaming_costs({"m": COST_CASES[3][1]}, {"m": ModelNode("materialized_view", ())}, "risingwave",
                            udfs_sql=SCRIPT_UDAF)
    assert [v.rule for v in found["m"]] == ["udaf-window"]


@pytest.mark.slow
@pytest.mark.parametrize("target", STREAMING)
def test_models_stream_with_bounded_work(compiled, target):
    found = streaming_costs(compiled["models"][target], compiled["graph"][target], target,
                            udfs_sql=compiled["inline"][(target, "udfs")])
    report = "\n".join(f"{model}:\n{_fmt(vs)}" for model, vs in found.items())
    assert not found, f"streaming cost rule violations on {target}:\n{report}"
