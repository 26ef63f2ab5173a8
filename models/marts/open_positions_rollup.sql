-- Net position per (account_id, strategy_id, symbol); no row when flat.
-- avg_price is the cost basis of the open lots (FIFO).
with lots as (
    select * from {{ ref('open_positions_lots') }}
),

last_fill as (
    select account_id, strategy_id, symbol, max(exec_ts) as last_updated
    from {{ ref('stg_execs') }}
    group by account_id, strategy_id, symbol
),

rolled as (
    select
        account_id,
        strategy_id,
        symbol,
        min(side) as side,
        sum(case when side = 'LONG' then qty_rem else -qty_rem end) as net_qty,
        sum(qty_rem * avg_price) / sum(qty_rem) as avg_price,
        count(*) as open_lots
    from lots
    group by account_id, strategy_id, symbol
)

select
    rolled.account_id,
    rolled.strategy_id,
    rolled.symbol,
    rolled.side,
    rolled.net_qty,
    rolled.avg_price,
    rolled.open_lots,
    last_fill.last_updated
from rolled
inner join last_fill
    on last_fill.account_id = rolled.account_id
    and last_fill.strategy_id = rolled.strategy_id
    and last_fill.symbol = rolled.symbol
