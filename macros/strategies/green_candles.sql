{#
  green_candles: BUY on the N-th consecutive green candle (close > open), SELL on the N-th
  consecutive red one. Fires once per run, not on every bar after.
  bars: a relation of the final bars of the strategy's timeframe with their indicators.
#}
{# The indicator columns of final_bars() it reads (atr_14 always comes). #}
{% macro indicators_green_candles(strategy_id) %}{{ return([]) }}{% endmacro %}

{% macro signals_green_candles(bars, strategy_id='green_candles') %}
{% set n = strategy_cfg(strategy_id)['params']['count'] %}
with bars as (
    select * from {{ bars }}
),

colours as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        case when close > open then 1 else 0 end as green,
        case when close < open then 1 else 0 end as red
    from bars
),

runs as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        sum(green) over (partition by symbol order by bar_ts
            rows between {{ n - 1 }} preceding and current row) as greens,
        sum(red) over (partition by symbol order by bar_ts
            rows between {{ n - 1 }} preceding and current row) as reds,
        lag(green, {{ n }}) over (partition by symbol order by bar_ts) as green_before,
        lag(red, {{ n }}) over (partition by symbol order by bar_ts) as red_before
    from colours
),

candidates as (
    select
        symbol, timeframe, bar_ts, close, atr_14,
        case
            when greens = {{ n }} and green_before = 0 then 'BUY'
            when reds = {{ n }} and red_before = 0 then 'SELL'
        end as action,
        0.5 as confidence,
        case when greens = {{ n }} then '{{ n }} green candles' else '{{ n }} red candles' end as reason
    from runs
)

{{ emit_signals(strategy_id, 'candidates') }}
{% endmacro %}
