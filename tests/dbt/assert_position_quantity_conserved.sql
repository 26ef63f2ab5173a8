-- Bought - sold = net_qty for every key (flat keys have no rollup row).
with fills as (
    select account_id, strategy_id, symbol, sum(signed_qty) as net_from_fills
    from {{ ref('stg_execs') }}
    group by account_id, strategy_id, symbol
)

select fills.*, rollup.net_qty
from fills
left join {{ ref('open_positions_rollup') }} as rollup
    on rollup.account_id = fills.account_id
    and rollup.strategy_id = fills.strategy_id
    and rollup.symbol = fills.symbol
where fills.net_from_fills <> coalesce(rollup.net_qty, 0)
