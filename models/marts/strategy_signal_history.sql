-- Every signal of every registered strategy (the `strategies` var). Each
-- timeframe's final bars and indicators are computed once, for all the
-- strategies on it.
{% set timeframes = [] %}
{% for strategy_id, cfg in var('strategies').items() if cfg['timeframe'] not in timeframes %}
  {% do timeframes.append(cfg['timeframe']) %}
{% endfor %}
with
{% for timeframe in timeframes %}
final_bars_{{ timeframe }} as (
    {{ final_bars(timeframe) }}
){{ ',' if not loop.last }}
{% endfor %}

{% for strategy_id, cfg in var('strategies').items() %}
select * from (
    {{ strategy_signals(strategy_id, 'final_bars_' ~ cfg['timeframe']) }}
) as {{ strategy_id }}
{% if not loop.last %}union all{% endif %}
{% endfor %}
