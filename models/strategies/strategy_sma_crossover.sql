-- BUY when the fast SMA crosses above the slow one, SELL when it crosses below.
{% set p = strategy_cfg('sma_crossover')['params'] %}
{{ crossover_candidates('sma_crossover', 'sma_' ~ p['fast'], 'sma_' ~ p['slow']) }}
