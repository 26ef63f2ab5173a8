-- Remaining quantity of each open lot. A lot is the opening part of a fill;
-- on a long key the open units are the bought units beyond the last one sold
-- (and the other way round on a short key).
with units as (
    select * from {{ ref('int_fill_units') }}
),

totals as (
    select
        account_id, strategy_id, symbol,
        sum(case when side = 'BUY' then fill_qty else 0 end) as bought,
        sum(case when side = 'SELL' then fill_qty else 0 end) as sold,
        max(case when side = 'BUY' then fill_seq end) as last_buy_seq,
        max(case when side = 'SELL' then fill_seq end) as last_sell_seq
    from units
    group by account_id, strategy_id, symbol
),

last_fills as (
    select units.account_id, units.strategy_id, units.symbol, units.side, units.exec_ts
    from units
    inner join totals
        on totals.account_id = units.account_id
        and totals.strategy_id = units.strategy_id
        and totals.symbol = units.symbol
    where units.fill_seq = totals.last_buy_seq or units.fill_seq = totals.last_sell_seq
),

lots as (
    select
        units.account_id,
        units.strategy_id,
        units.symbol,
        units.order_id,
        units.fill_id,
        units.side,
        units.fill_price,
        units.fee / units.fill_qty as fee_per_unit,
        units.exec_ts,
        -- the opening part: units beyond what the other side had done by then
        units.unit_to - greatest(units.unit_from,
            case when units.side = 'BUY' then units.sold_after else units.bought_after end) as qty_open,
        units.unit_to - greatest(units.unit_from,
            case when units.side = 'BUY' then totals.sold else totals.bought end) as qty_rem,
        case when units.side = 'BUY' then 'SELL' else 'BUY' end as closing_side
    from units
    inner join totals
        on totals.account_id = units.account_id
        and totals.strategy_id = units.strategy_id
        and totals.symbol = units.symbol
)

select
    lots.account_id,
    lots.strategy_id,
    lots.symbol,
    lots.order_id || ':' || lots.fill_id as lot_id,
    case when lots.side = 'BUY' then 'LONG' else 'SHORT' end as side,
    lots.qty_open,
    lots.qty_rem,
    lots.fill_price as avg_price,
    -- fee share of the remaining units, realized when they close
    lots.qty_rem * lots.fee_per_unit as fee_rem,
    lots.exec_ts as ts_open,
    -- only the oldest open lot can be partly closed, and then by the latest closing fill
    case when lots.qty_rem < lots.qty_open then last_closing.exec_ts else lots.exec_ts end as ts_updated
from lots
left join last_fills as last_closing
    on last_closing.account_id = lots.account_id
    and last_closing.strategy_id = lots.strategy_id
    and last_closing.symbol = lots.symbol
    and last_closing.side = lots.closing_side
where lots.qty_rem > 0
