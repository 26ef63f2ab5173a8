{# Shared plumbing of the strategy models: one place for what every signal carries. #}

{% macro strategy_cfg(strategy_id) %}
  {% set all = var('strategies') %}
  {% if strategy_id not in all %}
    {{ exceptions.raise_compiler_error("strategy '" ~ strategy_id ~ "' has no entry in the `strategies` var of dbt_project.yml") }}
  {% endif %}
  {{ return(all[strategy_id]) }}
{% endmacro %}

{#
  Final bars of a timeframe with the indicators its strategies read. A
  strategy names them (columns of indicator_history) in a macro
  indicators_<id>(strategy_id) next to its signals_<id>; without one it gets
  final_bar_indicators(). Naming
  them (not *) lets the embedded engine skip computing the others when it
  reads signals: each moving mean is a NUMERIC difference per bar, and a
  timeframe's bars are computed once for all its strategies (a CTE, which
  PostgreSQL does not prune column by column).
#}
{% macro final_bar_indicators() %}
  {{ return(['sma_5', 'sma_10', 'sma_20', 'sma_21', 'sma_50', 'sma_200', 'rsi_14', 'atr_14']) }}
{% endmacro %}

{% macro strategy_indicators(strategy_id) %}
  {%- set base = strategy_cfg(strategy_id).get('of', strategy_id) -%}
  {%- set declared = context.get('indicators_' ~ base) -%}
  {#- atr_14 travels with every signal (emit_signals) -#}
  {{ return((declared(strategy_id) if declared is not none else final_bar_indicators()) + ['atr_14']) }}
{% endmacro %}

{% macro final_bars(timeframe, strategy_ids) -%}
  {%- set indicators = [] -%}
  {%- for strategy_id in strategy_ids -%}
    {%- for column in strategy_indicators(strategy_id) if column not in indicators -%}
      {%- do indicators.append(column) -%}
    {%- endfor -%}
  {%- endfor -%}
  select symbol, timeframe, bar_ts, open, high, low, close, volume
      {%- for column in indicators %}, {{ column }}{% endfor %}
  from {{ ref('indicator_history') }}
  where timeframe = '{{ timeframe }}' and final
  {#- the order of the strategies' windows (partition by symbol order by bar_ts: the bars are
      of one timeframe): PostgreSQL sorts the CTE once, finding its bars presorted (they come in
      (utc_day, bar_ts) order), instead of once per strategy #}
  order by symbol, bar_ts
{%- endmacro %}

{#
  A strategy's signals over `bars` (a relation: a CTE name or an aliased
  subquery). Each strategy is a macro signals_<id>(bars, strategy_id) in
  macros/strategies/<id>.sql, so its own model and strategy_signal_history,
  which computes each timeframe's indicators once for all its strategies,
  run the same SQL. An entry of the `strategies` var with `of: <id>` is a
  variant of strategy <id> under its own id and params (parameter sweeps
  register one per parameter set, so one signal read serves the whole grid).
#}
{% macro strategy_signals(strategy_id, bars) -%}
  {%- set base = strategy_cfg(strategy_id).get('of', strategy_id) -%}
  {%- set signals = context.get('signals_' ~ base) -%}
  {%- if signals is none -%}
    {{ exceptions.raise_compiler_error("strategy '" ~ base ~ "' has no macro signals_" ~ base ~ "(bars, strategy_id) in macros/strategies/") }}
  {%- endif -%}
  {{ return(signals(bars, strategy_id)) }}
{%- endmacro %}

{# The body of models/strategies/strategy_<id>.sql. #}
{% macro strategy_model(strategy_id) -%}
  {{ strategy_signals(strategy_id, '(' ~ final_bars(strategy_cfg(strategy_id)['timeframe'], [strategy_id]) ~ ') as final_bars') }}
{%- endmacro %}

{#
  Turns a relation of candidate rows (symbol, timeframe, bar_ts, close,
  atr_14, action, confidence, reason; action NULL = no signal) into signal
  rows. close and atr_14 travel with the signal: the gate sizes orders from
  them without recomputing indicators.
#}
{% macro emit_signals(strategy_id, candidates) -%}
  {%- set cfg = strategy_cfg(strategy_id) -%}
  {%- set params_json = tojson(cfg['params'], sort_keys=True) -%}
  select
      '{{ strategy_id }}' || ':' || symbol || ':' || timeframe || ':'
          || cast(cast(extract(epoch from bar_ts) as bigint) as text) as signal_id,
      '{{ strategy_id }}' as strategy_id,
      symbol,
      '{{ cfg["timeframe"] }}' as timeframe,  {#- a literal: a read of one timeframe skips the others' strategies #}
      bar_ts as signal_ts,
      action,
      1.0::float8 as size_hint,
      least(greatest(confidence, 0.0), 1.0)::float8 as confidence,
      reason,
      close as ref_price,
      atr_14,
      {{ cfg['version'] }} as strategy_version,
      '{{ local_md5(params_json)[:16] }}' as params_hash,
      '{{ var("run_id") }}' as run_id
  from {{ candidates }}
  where action is not null
  {%- if not cfg['enabled'] %} and false{% endif %}
{%- endmacro %}

{# Fast/slow moving-average crossover on columns of indicator_history. #}
{% macro crossover_candidates(strategy_id, fast_col, slow_col, bars) -%}
with bars as (
    select * from {{ bars }}
),

spreads as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        {{ fast_col }} - {{ slow_col }} as spread,
        lag({{ fast_col }} - {{ slow_col }}, 1) over (partition by symbol order by bar_ts) as prev_spread
    from bars
),

candidates as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        case
            when prev_spread <= 0 and spread > 0 then 'BUY'
            when prev_spread >= 0 and spread < 0 then 'SELL'
        end as action,
        coalesce(abs(spread) / nullif(atr_14, 0), 0.5) as confidence,
        case
            when spread > 0 then '{{ fast_col }} crossed above {{ slow_col }}'
            else '{{ fast_col }} crossed below {{ slow_col }}'
        end as reason
    from spreads
)

{{ emit_signals(strategy_id, 'candidates') }}
{%- endmacro %}
