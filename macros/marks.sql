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
