-- Golden cross (SMA 50 over SMA 200) and death cross.
{% set p = strategy_cfg('ma_50_200')['params'] %}
{{ crossover_candidates('ma_50_200', 'sma_' ~ p['fast'], 'sma_' ~ p['slow']) }}
