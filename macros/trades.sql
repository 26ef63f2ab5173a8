{#
  `trips` (a relation with account_id, strategy_id, symbol, cycle_no,
  entry_ts, exit_ts) with the lowest low and highest high of the symbol's bars
  while each trip was open: bars whose minute overlaps (entry_ts, exit_ts),
  i.e. from the bar the entry filled in to the bar the exit filled in.
#}
{% macro with_excursions(trips) %}
  {{ return(adapter.dispatch('with_excursions', 'tradeflow')(trips)) }}
{% endmacro %}

{% macro postgres__with_excursions(trips) -%}
  {#- Computed on read: one index range scan of the trip's own bars (symbol, ts)
      per trip, not a join of every trip with every bar of its symbol. Exact
      re-sends are the only duplicates the raw table keeps (the ingester refuses
      conflicting ones), so min/max over it equal stg_prices'. #}
  select trips.*, excursion.low, excursion.high
  from {{ trips }} as trips
  left join lateral (
      select prices.symbol, min(prices.low) as low, max(prices.high) as high
      from {{ source('raw', 'price_1m_history') }} as prices
      where prices.symbol = trips.symbol
          and prices.ts > trips.entry_ts - interval '1 minute'
          and prices.ts < trips.exit_ts
          and {{ closed_before_as_of('prices.ts') }}
      group by prices.symbol
  ) as excursion on excursion.symbol = trips.symbol
{%- endmacro %}

{% macro default__with_excursions(trips) -%}
  {#- A band join on symbol: cost grows with the bars each trip was open through. #}
  select trips.*, excursion.low, excursion.high
  from {{ trips }} as trips
  left join (
      select
          open_trips.account_id, open_trips.strategy_id, open_trips.symbol, open_trips.cycle_no,
          min(bars.low) as low,
          max(bars.high) as high
      from {{ trips }} as open_trips
      inner join {{ ref('stg_prices') }} as bars
          on bars.symbol = open_trips.symbol
          and bars.bar_ts > open_trips.entry_ts - interval '1 minute'
          and bars.bar_ts < open_trips.exit_ts
      group by open_trips.account_id, open_trips.strategy_id, open_trips.symbol, open_trips.cycle_no
  ) as excursion
      on excursion.account_id = trips.account_id
      and excursion.strategy_id = trips.strategy_id
      and excursion.symbol = trips.symbol
      and excursion.cycle_no = trips.cycle_no
{%- endmacro %}

{% macro risingwave__with_excursions(trips) -%}{{ default__with_excursions(trips) }}{%- endmacro %}
{% macro materialize__with_excursions(trips) -%}{{ default__with_excursions(trips) }}{%- endmacro %}
