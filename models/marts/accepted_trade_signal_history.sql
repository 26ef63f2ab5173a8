-- Signals the gate accepted: routed to an account, sized, past pre-trade risk.
select
    decision_id,
    signal_id,
    account_id,
    strategy_id,
    symbol,
    action,
    qty,
    ref_price,
    client_order_id,
    signal_ts,
    decided_at as ts,
    'OK' as reason,
    inputs
from {{ source('raw', 'trade_decisions') }}
where outcome = 'ACCEPTED'
