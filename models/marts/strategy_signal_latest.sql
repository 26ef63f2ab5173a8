-- Latest signal per (strategy_id, symbol).
select distinct on (strategy_id, symbol)
    strategy_id,
    symbol,
    timeframe,
    signal_ts,
    action,
    size_hint,
    confidence,
    reason,
    strategy_version,
    params_hash,
    signal_id
from {{ ref('strategy_signal_history') }}
order by strategy_id, symbol, signal_ts desc
