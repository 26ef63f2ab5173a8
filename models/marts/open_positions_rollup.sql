-- Net position per (account_id, strategy_id, symbol); no row when flat.
-- avg_price is the cost basis of the open lots (FIFO) per unit; net_cost the
-- signed cost of the open lots (unrealized P&L = mark x net_qty - net_cost).
select
    account_id,
    strategy_id,
    symbol,
    min(side) as side,
    {{ quantity("sum(case when side = 'LONG' then qty_rem else -qty_rem end)") }} as net_qty,
    {{ price('sum(qty_rem * avg_price) / sum(qty_rem)') }} as avg_price,
    {{ money("sum(case when side = 'LONG' then qty_rem * avg_price else -qty_rem * avg_price end)") }} as net_cost,
    count(*) as open_lots,
    max(last_fill_ts) as last_updated
from {{ ref('open_positions_lots') }}
group by account_id, strategy_id, symbol
