-- Signals the gate refused, with the reason code and the inputs it saw.
select
    decision_id,
    signal_id,
    account_id,
    strategy_id,
    symbol,
    action,
    reject_code,
    signal_ts,
    decided_at as ts,
    inputs
from {{ source('raw', 'trade_decisions') }}
where outcome = 'REJECTED'
