-- Every unit of every fill is either matched or still open: matched + open = fill_qty.
with matched as (
    select order_id, fill_id, sum(matched_qty) as qty
    from (
        select buy_order_id as order_id, buy_fill_id as fill_id, matched_qty from {{ ref('trade_match_history') }}
        union all
        select sell_order_id, sell_fill_id, matched_qty from {{ ref('trade_match_history') }}
    ) as sides
    group by order_id, fill_id
),

open_lots as (
    select lot_id, qty_rem from {{ ref('open_positions_lots') }}
)

select fills.order_id, fills.fill_id, fills.fill_qty, matched.qty as matched_qty, open_lots.qty_rem
from {{ ref('stg_execs') }} as fills
left join matched on matched.order_id = fills.order_id and matched.fill_id = fills.fill_id
left join open_lots on open_lots.lot_id = fills.order_id || ':' || fills.fill_id
where coalesce(matched.qty, 0) + coalesce(open_lots.qty_rem, 0) <> fills.fill_qty
