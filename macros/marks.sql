{#
  Latest close per symbol for the symbols in `symbols` (a relation or CTE
  with a `symbol` column): symbol, mark, mark_ts.
#}
{% macro latest_marks(symbols) %}
  {{ return(adapter.dispatch('latest_marks', 'tradeflow')(symbols)) }}
{% endmacro %}

{% macro postgres__latest_marks(symbols) -%}
  {#- Computed on read: one index probe per held symbol instead of a scan of
      all price history (first-received copy of the newest bar, as stg_prices). #}
  select wanted.symbol, latest.close as mark, latest.ts as mark_ts
  from (select distinct symbol from {{ symbols }}) as wanted
  inner join lateral (
      select prices.symbol, prices.close, prices.ts
      from {{ source('raw', 'price_1m_history') }} as prices
      where prices.symbol = wanted.symbol and {{ closed_before_as_of('prices.ts') }}
      order by prices.ts desc, prices.received_at
      limit 1
  ) as latest on latest.symbol = wanted.symbol
{%- endmacro %}

{% macro default__latest_marks(symbols) -%}
  select distinct on (prices.symbol) prices.symbol, prices.close as mark, prices.bar_ts as mark_ts
  from {{ ref('stg_prices') }} as prices
  inner join (select distinct symbol from {{ symbols }}) as wanted on wanted.symbol = prices.symbol
  order by prices.symbol, prices.bar_ts desc
{%- endmacro %}

{% macro risingwave__latest_marks(symbols) -%}{{ default__latest_marks(symbols) }}{%- endmacro %}
{% macro materialize__latest_marks(symbols) -%}{{ default__latest_marks(symbols) }}{%- endmacro %}

{# Mark source switch: latest market close (default) or the latest fill price. #}
{% macro marks(symbols) -%}
  {%- if var('mark_source') == 'market' -%}
  {{ latest_marks(symbols) }}
  {%- elif var('mark_source') == 'last_fill' -%}
  select distinct on (fills.symbol) fills.symbol, fills.fill_price as mark, fills.exec_ts as mark_ts
  from {{ ref('stg_execs') }} as fills
  inner join (select distinct symbol from {{ symbols }}) as wanted on wanted.symbol = fills.symbol
  order by fills.symbol, fills.exec_ts desc, fills.order_id desc, fills.fill_id desc
  {%- else -%}
  {{ exceptions.raise_compiler_error("var mark_source must be 'market' or 'last_fill', got " ~ var('mark_source')) }}
  {%- endif -%}
{%- endmacro %}

{% macro pnl_method() %}
  {% set method = var('pnl_method') %}
  {% if method not in ['fifo', 'average_cost'] %}
    {{ exceptions.raise_compiler_error("var pnl_method must be 'fifo' or 'average_cost', got " ~ method) }}
  {% endif %}
  {{ return(method) }}
{% endmacro %}

{#
  Bars of each (account, symbol) for pnl_timeseries. first_fills: a relation
  with account_id, symbol, first_fill_ts. A bar stamped t closes at t + 1 minute.
  - bars_after_first_fill: every bar closing after the first fill (the rows of
    the equity series); account_id, symbol, bar_ts, close.
  - opening_marks: the last bar closing at or before the first fill (the mark
    of a position opened between two bars); account_id, symbol, bar_ts, close.
#}
{% macro bars_after_first_fill(first_fills) %}
  {{ return(adapter.dispatch('bars_after_first_fill', 'tradeflow')(first_fills)) }}
{% endmacro %}

{% macro opening_marks(first_fills) %}
  {{ return(adapter.dispatch('opening_marks', 'tradeflow')(first_fills)) }}
{% endmacro %}

{% macro default__bars_after_first_fill(first_fills) -%}
  select traded.account_id, traded.symbol, bars.bar_ts, bars.close
  from {{ ref('stg_prices') }} as bars
  inner join {{ first_fills }} as traded
      on traded.symbol = bars.symbol
      and traded.first_fill_ts < bars.bar_ts + interval '1 minute'
{%- endmacro %}

{% macro default__opening_marks(first_fills) -%}
  {#- A band join of each (account, symbol)'s first fill with the retained bars
      of its symbol before it, top-1: work once per (account, symbol), bounded
      by the price retention window (stg_prices' temporal filter). #}
  select distinct on (traded.account_id, traded.symbol)
      traded.account_id, traded.symbol, bars.bar_ts, bars.close
  from {{ ref('stg_prices') }} as bars
  inner join {{ first_fills }} as traded
      on traded.symbol = bars.symbol
      and bars.bar_ts + interval '1 minute' <= traded.first_fill_ts
  order by traded.account_id, traded.symbol, bars.bar_ts desc
{%- endmacro %}

{% macro postgres__bars_after_first_fill(first_fills) -%}
  {#- Computed on read: one index range of the symbol's bars per (account,
      symbol), not a pass over all price history (first-received copy, as stg_prices). #}
  select traded.account_id, traded.symbol, bars.bar_ts, bars.close
  from {{ first_fills }} as traded
  inner join lateral (
      select distinct on (prices.ts) prices.symbol, prices.ts as bar_ts, prices.close
      from {{ source('raw', 'price_1m_history') }} as prices
      where prices.symbol = traded.symbol
        and prices.ts > traded.first_fill_ts - interval '1 minute'
        and {{ closed_before_as_of('prices.ts') }}
      order by prices.ts, prices.received_at
  ) as bars on bars.symbol = traded.symbol
{%- endmacro %}

{% macro postgres__opening_marks(first_fills) -%}
  {#- One index probe per (account, symbol). #}
  select traded.account_id, traded.symbol, opening.bar_ts, opening.close
  from {{ first_fills }} as traded
  inner join lateral (
      select prices.symbol, prices.ts as bar_ts, prices.close
      from {{ source('raw', 'price_1m_history') }} as prices
      where prices.symbol = traded.symbol
        and prices.ts <= traded.first_fill_ts - interval '1 minute'
        and {{ closed_before_as_of('prices.ts') }}
      order by prices.ts desc, prices.received_at
      limit 1
  ) as opening on opening.symbol = traded.symbol
{%- endmacro %}

{% macro risingwave__bars_after_first_fill(first_fills) -%}{{ default__bars_after_first_fill(first_fills) }}{%- endmacro %}
{% macro materialize__bars_after_first_fill(first_fills) -%}{{ default__bars_after_first_fill(first_fills) }}{%- endmacro %}
{% macro risingwave__opening_marks(first_fills) -%}{{ default__opening_marks(first_fills) }}{%- endmacro %}
{% macro materialize__opening_marks(first_fills) -%}{{ default__opening_marks(first_fills) }}{%- endmacro %}
