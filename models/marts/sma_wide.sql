-- Moving averages side by side per bar, the wide shape strategies read.
select
    symbol,
    timeframe,
    bar_ts,
    final,
    close,
    sma_5,
    sma_10,
    sma_20,
    sma_21,
    sma_50,
    sma_200,
    ema_12,
    ema_26
from {{ ref('indicator_history') }}
