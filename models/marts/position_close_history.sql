-- Each time a key returns to flat (FLAT) or crosses through zero (FLIP).
select
    account_id,
    strategy_id,
    symbol,
    exec_ts as closed_at,
    order_id,
    fill_id,
    case when position_after = 0 then 'FLAT' else 'FLIP' end as event,
    case when position_before > 0 then 'LONG' else 'SHORT' end as closed_side,
    {{ quantity('abs(position_before)') }} as closed_qty,
    {{ quantity('position_after') }} as position_after
from {{ ref('int_fill_units') }}
where position_before <> 0
    and (position_after = 0 or (position_before > 0) <> (position_after > 0))
