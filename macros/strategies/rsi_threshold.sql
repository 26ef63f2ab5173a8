{#
  rsi_threshold: BUY when RSI 14 climbs back above the lower threshold (leaving oversold),
  SELL when it falls back below the upper one (leaving overbought).
  bars: a relation of the final bars of the strategy's timeframe with their indicators.
#}
{# The indicator columns of final_bars() it reads (atr_14 always comes). #}
{% macro indicators_rsi_threshold(strategy_id) %}{{ return(['rsi_14']) }}{% endmacro %}

{% macro signals_rsi_threshold(bars, strategy_id='rsi_threshold') %}
{% set p = strategy_cfg(strategy_id)['params'] %}
with bars as (
    select * from {{ bars }}
),

rsi as (
    select
        symbol, timeframe, bar_ts, close, atr_14, rsi_14,
        lag(rsi_14, 1) over (partition by symbol order by bar_ts) as prev_rsi
    from bars
),

candidates as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        case
            when prev_rsi < {{ p['lower'] }} and rsi_14 >= {{ p['lower'] }} then 'BUY'
            when prev_rsi > {{ p['upper'] }} and rsi_14 <= {{ p['upper'] }} then 'SELL'
        end as action,
        abs(rsi_14 - 50) / 50 as confidence,
        case
            when rsi_14 >= {{ p['lower'] }} and prev_rsi < {{ p['lower'] }} then 'rsi_14 left oversold ({{ p["lower"] }})'
            else 'rsi_14 left overbought ({{ p["upper"] }})'
        end as reason
    from rsi
)

{{ emit_signals(strategy_id, 'candidates') }}
{% endmacro %}
