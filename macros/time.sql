{#
  Temporal filter bounding the state the streaming engines keep. Off on the
  embedded engine (views are computed on read) and for replays of history,
  which lie outside any wall-clock window.
#}
{% macro within_retention(ts) %}
  {{ return(adapter.dispatch('within_retention', 'tradeflow')(ts)) }}
{% endmacro %}

{% macro temporal_filter_enabled() %}
  {{ return(var('temporal_filter', target.type in ['risingwave', 'materialize'])) }}
{% endmacro %}

{% macro default__within_retention(ts) -%}
  true
{%- endmacro %}

{% macro risingwave__within_retention(ts) -%}
  {%- if temporal_filter_enabled() -%}
  {{ ts }} > now() - interval '{{ var("state_retention") }}'
  {%- else -%}
  true
  {%- endif -%}
{%- endmacro %}

{% macro materialize__within_retention(ts) -%}
  {%- if temporal_filter_enabled() -%}
  mz_now() <= {{ ts }} + interval '{{ var("state_retention") }}'
  {%- else -%}
  true
  {%- endif -%}
{%- endmacro %}

{#
  The price rows the models read. Streaming engines maintain every view, so
  they read the raw table (with the retention filter). The embedded engine
  computes views on read, so a reader bounds what the read touches by setting
  transaction-local settings (tradeflow.engine.read_scope does):
    tradeflow.as_of       only bars that closed before this instant (open time
                          < as_of): a backtest's gate sees the past as it was;
    tradeflow.live_bars   only the newest N bars of each symbol that has a bar
    tradeflow.live_since  at or after live_since: the gate's live edge, read
                          through the (symbol, ts) index (PostgreSQL 18's
                          skip scan finds the symbols with a fresh bar).
  Unset, the view reads all history.
#}
{% macro price_rows() %}
  {{ return(adapter.dispatch('price_rows', 'tradeflow')()) }}
{% endmacro %}

{% macro default__price_rows() -%}
  select * from {{ source('raw', 'price_1m_history') }}
  where {{ within_retention('ts') }}
{%- endmacro %}

{% macro embedded_setting(name, type) -%}
  nullif(current_setting('tradeflow.{{ name }}', true), '')::{{ type }}
{%- endmacro %}

{# Bars whose minute closed before the reader's as_of (all bars when unset). For
   index conditions and small reads; a filter over every bar uses as_of_once(). #}
{% macro closed_before_as_of(ts) -%}
  {{ ts }} < coalesce({{ embedded_setting('as_of', 'timestamptz') }}, 'infinity')
{%- endmacro %}

{#
  The reader's symbols (a backtest reads its symbols in groups, one per core),
  as a scalar subquery: PostgreSQL computes it once per read (an InitPlan),
  where the setting's text[] would be parsed again for every row a filter
  looks at (50 symbols: about 4 us a row, 10 s over 2.3M bars; a backtest's
  signal read of 100 x 60 in two groups went from 19 to 10 s of engine time
  a group), and it can be an index condition.
#}
{% macro symbol_scope() -%}
  {#- the cast keeps "= any(...)" an array comparison, not a subquery's #}
  (select {{ embedded_setting('symbols', 'text[]') }})::text[]
{%- endmacro %}

{# as_of (infinity when unset) computed once per read: a row filter would parse the setting per row #}
{% macro as_of_once() -%}
  (select coalesce({{ embedded_setting('as_of', 'timestamptz') }}, 'infinity'))
{%- endmacro %}

{% macro postgres__price_rows() -%}
  {#- every bar, or every bar of the reader's symbols, read through the
      (symbol, ts) index: a group's bars, not a scan of all the others' #}
  select prices.*
  from {{ source('raw', 'price_1m_history') }} as prices
  where {{ embedded_setting('live_bars', 'int') }} is null and {{ symbol_scope() }} is null
    and prices.ts < {{ as_of_once() }}
  union all
  select prices.*
  from {{ source('raw', 'price_1m_history') }} as prices
  where {{ embedded_setting('live_bars', 'int') }} is null and prices.symbol = any({{ symbol_scope() }})
    and prices.ts < {{ as_of_once() }}
  union all
  select recent.*
  from (
      select distinct symbol
      from {{ source('raw', 'price_1m_history') }}
      where ts >= {{ embedded_setting('live_since', 'timestamptz') }}
        and {{ embedded_setting('live_bars', 'int') }} is not null
        and ({{ symbol_scope() }} is null or symbol = any({{ symbol_scope() }}))
  ) as live
  inner join lateral (
      -- only index conditions here: the planner then reads the newest bars backwards
      -- by (symbol, ts), live_bars of them, not every bar of the symbol and a sort
      select prices.*
      from {{ source('raw', 'price_1m_history') }} as prices
      where prices.symbol = live.symbol and {{ closed_before_as_of('prices.ts') }}
      order by prices.ts desc
      limit {{ embedded_setting('live_bars', 'int') }}
  ) as recent on recent.symbol = live.symbol
{%- endmacro %}

{#- dbt-risingwave and dbt-materialize inherit PostgreSQL's dispatch: stay on the default. #}
{% macro risingwave__price_rows() -%}{{ default__price_rows() }}{%- endmacro %}
{% macro materialize__price_rows() -%}{{ default__price_rows() }}{%- endmacro %}

{# The bar timeframes and their length in minutes: 1m bars as ingested, the others aggregated from them. #}
{% macro bar_timeframes() %}
  {{ return({'1m': 1, '5m': 5, '15m': 15, '1h': 60}) }}
{% endmacro %}
