"""Portability checks: compile the dbt project for every target offline and lint
the compiled SQL against the portable SQL rules (engine notes) with sqlglot.

The rules walk sqlglot's AST. Two places where the AST cannot see are handled
explicitly and documented below (`_lint_command`): statements sqlglot only
keeps as an opaque `Command` (CREATE FUNCTION / CREATE AGGREGATE bodies, and
RisingWave's `CREATE TABLE ... APPEND ONLY`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

PROJECT_DIR = Path(__file__).resolve().parents[1]
DIALECTS = {"embedded": "postgres", "risingwave": "risingwave", "materialize": "materialize"}


class CompileError(RuntimeError):
    pass


@dataclass(frozen=True)
class Violation:
    rule: str
    message: str
    snippet: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}: {self.snippet}"


# --------------------------------------------------------------------------- dbt

def _run_dbt_compile(target: str, target_path: Path, extra: list[str]) -> subprocess.CompletedProcess:
    if target not in DIALECTS:
        raise ValueError(f"unknown target {target!r}: one of {', '.join(DIALECTS)}")
    target_path = Path(target_path)
    cmd = [sys.executable, "-m", "dbt.cli.main", "compile", "--no-introspect", "--no-populate-cache",
           "--target", target, "--project-dir", str(PROJECT_DIR), "--profiles-dir", str(PROJECT_DIR),
           "--target-path", str(target_path), *extra]
    env = {**os.environ, "TRADEFLOW_TARGET": target, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
           "DBT_LOG_PATH": str(target_path / "logs")}
    # The profile casts the port with as_number; no connection is made (checked).
    env.setdefault("TRADEFLOW_PG_PORT", "5432")
    proc = subprocess.run(cmd, cwd=PROJECT_DIR, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"dbt compile --target {target} {' '.join(extra)} failed "
                           f"(exit {proc.returncode}):\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}")
    return proc


def compile_models(target: str, target_path: Path) -> dict[str, str]:
    """Compile every model for `target` without a server; {model name: compiled SQL}."""
    _run_dbt_compile(target, target_path, [])
    results = json.loads((Path(target_path) / "run_results.json").read_text())["results"]
    models = {r["unique_id"].split(".", 2)[2]: r["compiled_code"]
              for r in results if r["unique_id"].startswith("model.")}
    failed = [r["unique_id"] for r in results if r["status"] != "success"]
    if failed or not models:
        raise CompileError(f"dbt compile --target {target}: no SQL for {failed or 'any model'}")
    return models


def compile_inline(target: str, target_path: Path, jinja: str) -> str:
    """Compile a Jinja snippet (e.g. "{{ create_raw_tables() }}") for `target`."""
    proc = _run_dbt_compile(target, target_path, ["--inline", jinja, "--output", "json", "--quiet"])
    out = proc.stdout
    try:
        return json.loads(out[out.index("{"):])["compiled"]
    except (ValueError, KeyError) as e:
        raise CompileError(f"unexpected dbt --inline output for {target}:\n{out[-4000:]}") from e


# --------------------------------------------------------------------------- lint

RANKING = {"row_number", "rank", "dense_rank"}
OFFSET = {"lag", "lead"}
BANNED_WINDOW = {"ntile", "percent_rank", "nth_value", "cume_dist"}
DECIMALS = {exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL, exp.DataType.Type.UDECIMAL,
            exp.DataType.Type.DECIMAL32, exp.DataType.Type.DECIMAL64, exp.DataType.Type.DECIMAL128,
            exp.DataType.Type.DECIMAL256}
FIXED_CHARS = {exp.DataType.Type.CHAR, exp.DataType.Type.NCHAR, exp.DataType.Type.BPCHAR}
VARCHARS = {exp.DataType.Type.VARCHAR, exp.DataType.Type.NVARCHAR}
CLOCK_NODES = (exp.CurrentTimestamp, exp.Localtimestamp, exp.CurrentDate, exp.CurrentTime, exp.Localtime)
CLOCK_FUNCS = {"now", "transaction_timestamp", "statement_timestamp", "clock_timestamp", "timeofday"}


def _snip(node: exp.Expression, dialect: str, limit: int = 160) -> str:
    text = " ".join(node.sql(dialect=dialect).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _func_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Dot):  # schema-qualified call: tradeflow.tf_smooth(...)
        return _func_name(node.expression)
    if isinstance(node, exp.Anonymous):
        return node.name.lower()
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    return node.key


def _source_name(node: exp.Expression, sql: str) -> str | None:
    """The function name as written (sqlglot keeps its source span in meta)."""
    start, end = node.meta.get("start"), node.meta.get("end")
    return sql[start:end + 1].lower() if start is not None and end is not None else None


def _resolve_window(win: exp.Window) -> dict:
    """partition_by / order / spec of a window call, merged with a named WINDOW definition."""
    spec = {k: win.args.get(k) for k in ("partition_by", "order", "spec")}
    alias = win.args.get("alias")
    select = win.find_ancestor(exp.Select)
    if alias is not None and select is not None:
        for named in select.args.get("windows") or []:
            if named.name.lower() == alias.name.lower():
                for k in spec:
                    spec[k] = spec[k] or named.args.get(k)
    return spec


def _lint_window(win: exp.Window, dialect: str) -> list[Violation]:
    out: list[Violation] = []
    snip = _snip(win, dialect)
    func, ignore_nulls, filtered = win.this, False, False
    while isinstance(func, (exp.Filter, exp.IgnoreNulls, exp.RespectNulls)):
        filtered |= isinstance(func, exp.Filter)
        ignore_nulls |= isinstance(func, exp.IgnoreNulls)
        func = func.this
    name = _func_name(func)
    spec = _resolve_window(win)

    if not spec["partition_by"]:
        out.append(Violation("window-partition", "OVER without PARTITION BY", snip))
    if filtered:
        out.append(Violation("window-filter", "FILTER on a window call", snip))
    if name in BANNED_WINDOW:
        out.append(Violation("banned-window-fn", f"{name}() is not portable", snip))
    elif name in RANKING:
        if not spec["order"]:
            out.append(Violation("window-frame", f"{name}() needs ORDER BY", snip))
    elif name in OFFSET:
        offset, default = func.args.get("offset"), func.args.get("default")
        if default is not None:
            out.append(Violation("lag-default", f"{name}() with a default argument", snip))
        if offset is not None and not (isinstance(offset.unnest(), exp.Literal) and offset.unnest().is_int):
            out.append(Violation("lag-default", f"{name}() offset is not a constant integer", snip))
        if ignore_nulls:
            out.append(Violation("lag-default", f"{name}() with IGNORE NULLS", snip))
    else:  # aggregates, first_value/last_value, user-defined aggregates
        frame = spec["spec"]
        kind = str(frame.args.get("kind") or "").upper() if frame is not None else ""
        if kind != "ROWS":
            what = f"a {kind} frame" if kind else "no explicit frame"
            out.append(Violation("window-frame", f"{name}() over {what}; write ROWS BETWEEN ...", snip))
    return out


def _relation_names(rel: exp.Expression) -> set[str]:
    """Names a FROM/JOIN item can be referred to by (for a parenthesised join: all of them)."""
    alias = rel.alias_or_name
    if alias:
        return {alias.lower()}
    names: set[str] = set()
    inner = rel.this if isinstance(rel, (exp.Subquery, exp.Paren)) else rel
    if isinstance(inner, exp.Expression):
        if inner.alias_or_name:
            names.add(inner.alias_or_name.lower())
        for j in inner.args.get("joins") or []:
            names |= _relation_names(j.this)
    return names


def _is_equi_key(cond: exp.Expression, left: set[str], right: set[str]) -> bool:
    if not isinstance(cond, exp.EQ):
        return False
    sides = []
    for side in (cond.this, cond.expression):
        cols = list(side.find_all(exp.Column))
        if not cols:
            return False  # col = constant is a filter, not a key
        sides.append({c.table.lower() if c.table else None for c in cols})
    a, b = sides
    if None in a or None in b:  # unqualified: cannot tell the sides apart without a schema
        return True
    return (a <= left and b <= right) or (a <= right and b <= left)


def _conjuncts(cond: exp.Expression) -> list[exp.Expression]:
    cond = cond.unnest()
    if isinstance(cond, exp.And):
        return _conjuncts(cond.this) + _conjuncts(cond.expression)
    return [cond]


def _lint_select_joins(select: exp.Select, dialect: str) -> list[Violation]:
    out: list[Violation] = []
    from_ = select.args.get("from_") or select.args.get("from")
    left = _relation_names(from_.this) if from_ is not None else set()
    for join in select.args.get("joins") or []:
        right = _relation_names(join.this)
        snip = _snip(join, dialect)
        kind, on, using = join.args.get("kind"), join.args.get("on"), join.args.get("using")
        if str(join.args.get("method") or "").upper() == "NATURAL":
            out.append(Violation("join-equality", "NATURAL JOIN: no explicit equality key", snip))
        elif using:
            pass  # USING (k) is an equi-join
        elif on is None:
            what = "CROSS JOIN" if str(kind or "").upper() == "CROSS" else "comma join / JOIN without ON"
            out.append(Violation("join-equality", f"{what}: no equality key", snip))
        else:
            if not any(_is_equi_key(c, left, right) for c in _conjuncts(on)):
                out.append(Violation("join-equality", "ON has no column = column equality between the two sides", snip))
        left |= right
    return out


def _is_top_k(lateral: exp.Lateral) -> bool:
    """LATERAL (SELECT ... ORDER BY ... LIMIT k): Materialize's documented top-K
    idiom (https://materialize.com/docs/transform-data/idiomatic-materialize-sql/top-k/)."""
    inner = lateral.this.unnest() if isinstance(lateral.this, exp.Subquery) else lateral.this
    return isinstance(inner, exp.Select) and bool(inner.args.get("order")) and bool(inner.args.get("limit"))


def _lint_tree(tree: exp.Expression, sql: str, target: str, dialect: str) -> list[Violation]:
    out: list[Violation] = []
    for node in tree.walk():
        if isinstance(node, exp.DataType):
            ctx = node.parent if isinstance(node.parent, (exp.Cast, exp.ColumnDef)) else node
            if node.this in DECIMALS and node.expressions:
                out.append(Violation("numeric-precision", "NUMERIC/DECIMAL with precision or scale", _snip(ctx, dialect)))
            elif node.this in FIXED_CHARS:
                out.append(Violation("varchar-length", "CHAR type; use TEXT", _snip(ctx, dialect)))
            elif node.this in VARCHARS and node.expressions:
                out.append(Violation("varchar-length", "VARCHAR(n); use TEXT or VARCHAR", _snip(ctx, dialect)))
        elif isinstance(node, exp.Window):
            if node.arg_key != "windows":  # WINDOW w AS (...) definitions are checked via their uses
                out.extend(_lint_window(node, dialect))
        elif isinstance(node, exp.With) and node.args.get("recursive"):
            out.append(Violation("recursive-cte", "WITH RECURSIVE (RisingWave has none)", _snip(node, dialect)))
        elif isinstance(node, exp.Select):
            out.extend(_lint_select_joins(node, dialect))
        elif isinstance(node, exp.Lateral) and target in ("risingwave", "materialize") and not (
                target == "materialize" and _is_top_k(node)):
            out.append(Violation("join-equality", f"LATERAL on {target}", _snip(node, dialect)))
        elif isinstance(node, exp.Stddev):
            out.append(Violation("stddev-variance", "stddev(); use stddev_samp or stddev_pop", _snip(node, dialect)))
        elif isinstance(node, exp.Variance) and _source_name(node, sql) in ("variance", "variance_samp"):
            # sqlglot parses variance() and var_samp() into the same node; the source span tells them apart
            out.append(Violation("stddev-variance", "variance(); use var_samp or var_pop", _snip(node, dialect)))
        if target == "materialize" and (
                isinstance(node, CLOCK_NODES)
                or (isinstance(node, exp.Anonymous) and node.name.lower() in CLOCK_FUNCS)):
            out.append(Violation("now-in-materialize", "wall-clock function in Materialize SQL; use mz_now()",
                                 _snip(node.parent if isinstance(node.parent, exp.Binary) else node, dialect)))
    return out


_DOLLAR_BODY = re.compile(r"\$(\w*)\$.*?\$\1\$", re.S)
_STRING = re.compile(r"'(?:[^']|'')*'")
_APPEND_ONLY = re.compile(r"^(\s*create\s+table\b.*\))\s*append\s+only\s*;?\s*$", re.I | re.S)
# Materialize's WITH (RETAIN HISTORY FOR '...') on a table: sqlglot cannot parse
# it; the option says nothing the rules check, so it is removed before parsing.
_RETAIN_HISTORY = re.compile(r"\)\s*with\s*\(\s*retain\s+history\s*=?\s*for\s+'[^']*'\s*\)", re.I)
_ROUTINE = re.compile(r"^\s*create\s+(or\s+replace\s+)?(function|aggregate)\b", re.I)
_TEXT_TYPE_RULES = [
    (re.compile(r"\b(numeric|decimal)\s*\(", re.I), "numeric-precision", "NUMERIC/DECIMAL with precision or scale"),
    (re.compile(r"\b(varchar|character\s+varying)\s*\(", re.I), "varchar-length", "VARCHAR(n); use TEXT or VARCHAR"),
    (re.compile(r"\b(char|character|bpchar|nchar)\b(?!\s+varying)", re.I), "varchar-length", "CHAR type; use TEXT"),
]


def _lint_command(cmd: exp.Command, target: str, dialect: str) -> list[Violation]:
    """Statements sqlglot keeps only as opaque text.

    * RisingWave `CREATE TABLE ... APPEND ONLY`: sqlglot's risingwave dialect
      cannot parse the APPEND ONLY option. The option is stripped and the rest
      re-parsed, so the column types are still checked on the AST.
    * CREATE FUNCTION / CREATE AGGREGATE (UDF and UDAF definitions): sqlglot
      parses neither bodies nor aggregate options. The type rules are applied
      to the signature text (bodies and string literals removed) by regex.
    * Anything else is reported as `parse`: no rule could check it.
    """
    text = cmd.sql(dialect=dialect)
    m = _APPEND_ONLY.match(text)
    if target == "risingwave" and m:
        try:
            stripped = sqlglot.parse_one(m.group(1), read=dialect)
        except (ParseError, TokenError) as e:
            return [Violation("parse", f"sqlglot cannot parse: {e}", text[:160])]
        if not isinstance(stripped, exp.Command):
            return _lint_tree(stripped, m.group(1), target, dialect)
    if _ROUTINE.match(text):
        signature = _STRING.sub("''", _DOLLAR_BODY.sub("$$", text))
        return [Violation(rule, msg, " ".join(signature.split())[:160])
                for pattern, rule, msg in _TEXT_TYPE_RULES if pattern.search(signature)]
    return [Violation("parse", "sqlglot parsed this only as an opaque Command: no rule checked", text[:160])]


def lint_sql(sql: str, target: str) -> list[Violation]:
    """Violations of the portable SQL rules in `sql` (one or more statements) for `target`."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    # sqlglot warns when it falls back to a Command (handled in _lint_command)
    # and when a snippet cannot be rendered exactly (IGNORE NULLS in postgres).
    logger.setLevel(logging.ERROR)
    try:
        return _lint_sql(sql, target)
    finally:
        logger.setLevel(level)


def _lint_sql(sql: str, target: str) -> list[Violation]:
    dialect = DIALECTS[target]
    if target == "materialize":
        sql = _RETAIN_HISTORY.sub(")", sql)
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as e:
        return [Violation("parse", f"sqlglot ({dialect}) cannot parse", str(e).splitlines()[0][:300])]
    out: list[Violation] = []
    for stmt in statements:
        if isinstance(stmt, exp.Command):
            out.extend(_lint_command(stmt, target, dialect))
        else:
            out.extend(_lint_tree(stmt, sql, target, dialect))
    return out


def lint_models(models: dict[str, str], target: str) -> dict[str, list[Violation]]:
    """{model: violations} for every model with at least one violation."""
    return {name: v for name, sql in sorted(models.items()) if (v := lint_sql(sql, target))}


# --------------------------------------------------------------------------- streaming cost

LAG_CHAIN_LIMIT = 8  # lag/lead calls over one window of one SELECT
STREAMING_TARGETS = ("risingwave", "materialize")
RANKING_FILTER_OPS = (exp.LT, exp.LTE, exp.EQ)


@dataclass(frozen=True)
class CostRule:
    name: str
    why: str
    source: str


# What makes a maintained view cost more than bounded work per new row, and where that is documented.
COST_RULES = {rule.name: rule for rule in (
    CostRule("lag-chain",
             f"more than {LAG_CHAIN_LIMIT} lag/lead calls over one window: Materialize recomputes the whole "
             "partition on every change and stores each call's result per row; use a self join on a dense "
             "sequence number (p.seq = b.seq - j)",
             "https://materialize.com/docs/transform-data/idiomatic-materialize-sql/lag/"),
    CostRule("whole-partition-frame",
             "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING with ORDER BY: RisingWave rewrites a "
             "whole-partition window to GROUP BY + join only without ORDER BY (otherwise every change "
             "recomputes the partition); drop the ORDER BY or write the GROUP BY and join",
             "risingwavelabs/risingwave src/frontend/src/optimizer/rule/over_window_to_agg_and_join_rule.rs"),
    CostRule("row-number-filter",
             "a row_number()/rank() filter: Materialize recomputes the partition (all of its history) on "
             "every change; top-K is a LATERAL (... ORDER BY ... LIMIT k) join on the DISTINCT keys",
             "https://materialize.com/docs/transform-data/idiomatic-materialize-sql/top-k/"),
    CostRule("staging-inlined",
             "a DISTINCT ON model deployed as a plain view and read by several maintained views: a view is "
             "not maintained itself, each reader maintains its own copy of the de-duplication; "
             "materialize it on the streaming targets",
             "https://materialize.com/docs/concepts/views/ ; "
             "https://docs.risingwave.com/reference/what-is-materialized-view"),
    CostRule("udaf-window",
             "a JavaScript/Python aggregate used as a window function: without retract() RisingWave cannot "
             "update its state incrementally and recomputes each affected row's frame",
             "https://docs.risingwave.com/sql/commands/sql-create-aggregate (retract)"),
)}


@dataclass(frozen=True)
class ModelNode:
    materialized: str
    depends_on: tuple[str, ...]


def model_graph(target_path: Path) -> dict[str, ModelNode]:
    """Materialization and model dependencies of each model, from the manifest
    of a compile into target_path (compile_models)."""
    manifest = json.loads((Path(target_path) / "manifest.json").read_text())
    return {
        node["name"]: ModelNode(node["config"]["materialized"],
                                tuple(d.split(".")[-1] for d in node["depends_on"]["nodes"] if d.startswith("model.")))
        for uid, node in manifest["nodes"].items() if uid.startswith("model.")
    }


_UDAF = re.compile(r"create\s+aggregate\s+(?:if\s+not\s+exists\s+)?([\w.]+)\s*\(.*?language\s+(javascript|python)",
                   re.I | re.S)


def script_aggregates(udfs_sql: str) -> set[str]:
    """Names of the JavaScript/Python aggregates a create_udfs script defines."""
    return {name.split(".")[-1].lower() for name, _ in _UDAF.findall(udfs_sql)}


def _window_key(win: exp.Window, dialect: str) -> str:
    spec = _resolve_window(win)
    return " | ".join(spec[k].sql(dialect=dialect) if isinstance(spec[k], exp.Expression)
                      else " ".join(e.sql(dialect=dialect) for e in spec[k] or [])
                      for k in ("partition_by", "order"))


def _cost_tree(tree: exp.Expression, target: str, dialect: str, aggregates: set[str]) -> list[Violation]:
    out: list[Violation] = []
    ranking_aliases: set[str] = set()
    for node in tree.walk():
        if isinstance(node, exp.Select):
            chains: dict[str, int] = {}
            for win in node.find_all(exp.Window):
                if win.find_ancestor(exp.Select) is node and _func_name(win.this) in OFFSET:
                    key = _window_key(win, dialect)
                    chains[key] = chains.get(key, 0) + 1
            for key, count in chains.items():
                if count > LAG_CHAIN_LIMIT:
                    out.append(Violation("lag-chain", f"{count} lag/lead calls over one window", key[:160]))
        elif isinstance(node, exp.Window) and node.arg_key != "windows":
            spec = _resolve_window(node)
            frame, name = spec["spec"], _func_name(node.this)
            if (frame is not None and spec["order"]
                    and str(frame.args.get("start") or "").upper() == "UNBOUNDED"
                    and str(frame.args.get("end") or "").upper() == "UNBOUNDED"):
                out.append(Violation("whole-partition-frame", "whole-partition frame with ORDER BY", _snip(node, dialect)))
            if name in aggregates:
                out.append(Violation("udaf-window", f"{name}() is a script aggregate used as a window", _snip(node, dialect)))
            if name in RANKING and isinstance(node.parent, exp.Alias):
                ranking_aliases.add(node.parent.alias.lower())
    if target == "materialize" and ranking_aliases:
        for select in tree.find_all(exp.Select):
            where = select.args.get("where")
            for cmp in (where.find_all(*RANKING_FILTER_OPS) if where is not None else []):
                if any(c.name.lower() in ranking_aliases for c in cmp.find_all(exp.Column)):
                    out.append(Violation("row-number-filter", "filter on a row_number()/rank() column", _snip(cmp, dialect)))
    return out


def cost_sql(sql: str, target: str, aggregates: set[str] = frozenset()) -> list[Violation]:
    """Streaming-cost violations in one model's compiled SQL (rules that need
    only the SQL: lag-chain, whole-partition-frame, row-number-filter, udaf-window)."""
    dialect = DIALECTS[target]
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except (ParseError, TokenError) as e:
        return [Violation("parse", f"sqlglot ({dialect}) cannot parse", str(e).splitlines()[0][:300])]
    return [v for stmt in statements for v in _cost_tree(stmt, target, dialect, set(aggregates))]


def streaming_costs(models: dict[str, str], graph: dict[str, ModelNode], target: str,
                    udfs_sql: str = "") -> dict[str, list[Violation]]:
    """{model: violations of COST_RULES} over a streaming target's compiled models."""
    if target not in STREAMING_TARGETS:
        raise ValueError(f"streaming costs are checked on {', '.join(STREAMING_TARGETS)}, not {target}")
    aggregates = script_aggregates(udfs_sql)
    found = {name: cost_sql(sql, target, aggregates) for name, sql in models.items()}
    maintained = {name for name, node in graph.items() if node.materialized != "view"}
    for name, sql in models.items():
        readers = sorted(r for r in maintained if name in graph[r].depends_on)
        if graph[name].materialized == "view" and len(readers) > 1 and re.search(r"\bdistinct\s+on\b", sql, re.I):
            found[name].append(Violation("staging-inlined", f"DISTINCT ON view read by {len(readers)} maintained views",
                                         ", ".join(readers)[:160]))
    return {name: v for name, v in sorted(found.items()) if v}
