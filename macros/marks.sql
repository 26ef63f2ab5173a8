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
  Every bar of a position's symbol while the position is held: a bar stamped
  t closes at t + 1 minute, so fills before then are in its position.
  positions: a relation with account_id, symbol, valid_from, valid_to, position.
  Returns account_id, symbol, position, bar_ts, close.
#}
{% macro bars_while_held(positions) %}
  {{ return(adapter.dispatch('bars_while_held', 'tradeflow')(positions)) }}
{% endmacro %}

{% macro default__bars_while_held(positions) -%}
  select held.account_id, held.symbol, held.position, bars.bar_ts, bars.close
  from {{ ref('stg_prices') }} as bars
  inner join {{ positions }} as held
      on held.symbol = bars.symbol
      and held.valid_from < bars.bar_ts + interval '1 minute'
      and held.valid_to >= bars.bar_ts + interval '1 minute'
{%- endmacro %}

{% macro postgres__bars_while_held(positions) -%}
  {#- Computed on read: an index range of the symbol's bars per holding period,
      not a pass over all price history (first-received copy, as stg_prices). #}
  select held.account_id, held.symbol, held.position, bars.bar_ts, bars.close
  from {{ positions }} as held
  inner join lateral (
      select distinct on (prices.ts) prices.symbol, prices.ts as bar_ts, prices.close
      from {{ source('raw', 'price_1m_history') }} as prices
      where prices.symbol = held.symbol
        and prices.ts > held.valid_from - interval '1 minute'
        and prices.ts <= held.valid_to - interval '1 minute'
        and {{ closed_before_as_of('prices.ts') }}
      order by prices.ts, prices.received_at
  ) as bars on bars.symbol = held.symbol
{%- endmacro %}

{% macro risingwave__bars_while_held(positions) -%}{{ default__bars_while_held(positions) }}{%- endmacro %}
{% macro materialize__bars_while_held(positions) -%}{{ default__bars_while_held(positions) }}{%- endmacro %}
