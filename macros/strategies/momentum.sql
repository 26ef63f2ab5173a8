{#
  momentum: Rate of change over `lookback` bars: BUY when it rises through +threshold,
  SELL when it falls through -threshold.
  bars: a relation of the final bars of the strategy's timeframe with their indicators.
#}
{# The indicator columns of final_bars() it reads (atr_14 always comes). #}
{% macro indicators_momentum(strategy_id) %}{{ return([]) }}{% endmacro %}

{% macro signals_momentum(bars, strategy_id='momentum') %}
{% set p = strategy_cfg(strategy_id)['params'] %}
with bars as (
    select * from {{ bars }}
),

rates as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        close / lag(close, {{ p['lookback'] }}) over (partition by symbol order by bar_ts) - 1 as roc
    from bars
),

crossings as (
    select
        rates.*,
        lag(roc, 1) over (partition by symbol order by bar_ts) as prev_roc
    from rates
),

candidates as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        case
            when prev_roc <= {{ p['threshold'] }} and roc > {{ p['threshold'] }} then 'BUY'
            when prev_roc >= -{{ p['threshold'] }} and roc < -{{ p['threshold'] }} then 'SELL'
        end as action,
        abs(roc) / ({{ p['threshold'] }} * 4) as confidence,
        case when roc > 0 then 'roc_{{ p["lookback"] }} rose above {{ p["threshold"] }}'
            else 'roc_{{ p["lookback"] }} fell below -{{ p["threshold"] }}' end as reason
    from crossings
)

{{ emit_signals(strategy_id, 'candidates') }}
{% endmacro %}
