-- Every signal of every registered strategy (the `strategies` var). Each
-- timeframe's final bars and indicators are computed once, for all the
-- strategies on it, with the indicators those strategies read.
{% set strategies_by_timeframe = {} %}
{% for strategy_id, cfg in var('strategies').items() %}
  {% do strategies_by_timeframe.setdefault(cfg['timeframe'], []).append(strategy_id) %}
{% endfor %}
with
{% for timeframe, strategy_ids in strategies_by_timeframe.items() %}
final_bars_{{ timeframe }} as (
    {{ final_bars(timeframe, strategy_ids) }}
){{ ',' if not loop.last }}
{% endfor %}

{% for strategy_id, cfg in var('strategies').items() %}
select * from (
    {{ strategy_signals(strategy_id, 'final_bars_' ~ cfg['timeframe']) }}
) as {{ strategy_id }}
{% if not loop.last %}union all{% endif %}
{% endfor %}
