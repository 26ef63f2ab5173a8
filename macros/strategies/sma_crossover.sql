{#
  sma_crossover: BUY when the fast SMA crosses above the slow one, SELL when it crosses below.
  bars: a relation of the final bars of the strategy's timeframe with their indicators.
#}
{# The indicator columns of final_bars() it reads (atr_14 always comes). #}
{% macro indicators_sma_crossover(strategy_id) %}
{% set p = strategy_cfg(strategy_id)['params'] %}
{{ return(['sma_' ~ p['fast'], 'sma_' ~ p['slow']]) }}
{% endmacro %}

{% macro signals_sma_crossover(bars, strategy_id='sma_crossover') %}
{% set p = strategy_cfg(strategy_id)['params'] %}
{{ crossover_candidates(strategy_id, 'sma_' ~ p['fast'], 'sma_' ~ p['slow'], bars) }}
{% endmacro %}
