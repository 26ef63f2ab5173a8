{#
  ma_50_200: Golden cross (SMA 50 over SMA 200) and death cross.
  bars: a relation of the final bars of the strategy's timeframe with their indicators.
#}
{# The indicator columns of final_bars() it reads (atr_14 always comes). #}
{% macro indicators_ma_50_200(strategy_id) %}
{% set p = strategy_cfg(strategy_id)['params'] %}
{{ return(['sma_' ~ p['fast'], 'sma_' ~ p['slow']]) }}
{% endmacro %}

{% macro signals_ma_50_200(bars, strategy_id='ma_50_200') %}
{% set p = strategy_cfg(strategy_id)['params'] %}
{{ crossover_candidates(strategy_id, 'sma_' ~ p['fast'], 'sma_' ~ p['slow'], bars) }}
{% endmacro %}
