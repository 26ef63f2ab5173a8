-- Net position per (account_id, strategy_id, symbol); no row when flat.
-- avg_price is the cost basis of the open lots (FIFO).
select
    account_id,
    strategy_id,
    symbol,
    min(side) as side,
    sum(case when side = 'LONG' then qty_rem else -qty_rem end) as net_qty,
    sum(qty_rem * avg_price) / sum(qty_rem) as avg_price,
    count(*) as open_lots,
    max(last_fill_ts) as last_updated
from {{ ref('open_positions_lots') }}
group by account_id, strategy_id, symbol
